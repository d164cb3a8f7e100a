"""scheme7 with KL beta 0.05 actually applied."""

DESCRIPTION = "scheme7 with KL beta 0.05 actually applied."
BASE = "scheme7"
OVERRIDES = {"kl_beta": 0.05, "clip_only_ignores_beta": False}
