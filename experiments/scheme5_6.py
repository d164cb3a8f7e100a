"""scheme5 with GRPO lr 5e-5 (the main job)."""

DESCRIPTION = "scheme5 with GRPO lr 5e-5 (the main job)."
BASE = "scheme5"
OVERRIDES = {"grpo_lr": 5e-5}
