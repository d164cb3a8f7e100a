"""Curriculum: 2 GRPO epochs on queries with a positive, then 2 on all."""

DESCRIPTION = "Curriculum: 2 GRPO epochs on queries with a positive, then 2 on all."
BASE = "current"
OVERRIDES = {"grpo_positive_only_epochs": 2, "grpo_epochs": 2}
