"""current with the backbone not frozen in GRPO."""

DESCRIPTION = "current with the backbone not frozen in GRPO."
BASE = "current"
OVERRIDES = {"freeze_backbone": False}
