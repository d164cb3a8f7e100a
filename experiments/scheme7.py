"""scheme5 with PPO clip only (no KL term), eps 0.2."""

DESCRIPTION = "scheme5 with PPO clip only (no KL term), eps 0.2."
BASE = "scheme5"
OVERRIDES = {"clip_only": True, "clip_eps": 0.2}
