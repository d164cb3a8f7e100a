"""current with the separated reward mode."""

DESCRIPTION = "current with the separated reward mode."
BASE = "current"
OVERRIDES = {"reward_mode": "separated"}
