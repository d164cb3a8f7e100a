"""RCE warm-up for 5 epochs and no GRPO: the reports' baseline."""

DESCRIPTION = "RCE warm-up for 5 epochs and no GRPO: the reports' baseline."
BASE = None
OVERRIDES = {"grpo_epochs": 0}
