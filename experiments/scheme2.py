"""current with KL beta 0.15, 0.12 and 0.05 (a sweep, one program)."""

DESCRIPTION = "current with KL beta 0.15, 0.12 and 0.05 (a sweep, one program)."
BASE = "current"
OVERRIDES = {}
SWEEP = {"kl_beta": (0.15, 0.12, 0.05)}
