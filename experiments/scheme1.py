"""current, compared at GRPO epochs 1, 2 and 3 (read the per-epoch table)."""

DESCRIPTION = "current, compared at GRPO epochs 1, 2 and 3 (read the per-epoch table)."
BASE = "current"
OVERRIDES = {}
