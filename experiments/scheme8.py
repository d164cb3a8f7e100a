"""current with reward hard_plus_gtprob_plus_rel, weights 1.0 / 0.5 / 0.3."""

DESCRIPTION = "current with reward hard_plus_gtprob_plus_rel, weights 1.0 / 0.5 / 0.3."
BASE = "current"
OVERRIDES = {"reward_mode": "hard_plus_gtprob_plus_rel", "w_hard": 1.0, "w_soft": 0.5, "w_rel": 0.3}
