"""current with GRPO lr 5e-5."""

DESCRIPTION = "current with GRPO lr 5e-5."
BASE = "current"
OVERRIDES = {"grpo_lr": 5e-5}
