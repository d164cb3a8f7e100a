"""z-score advantages, GRPO lr 5e-5, reward hard_plus_gtprob_plus_rel with rel weight 0.2, 5 GRPO epochs."""

DESCRIPTION = "z-score advantages, GRPO lr 5e-5, reward hard_plus_gtprob_plus_rel with rel weight 0.2, 5 GRPO epochs."
BASE = "scheme5_6"
OVERRIDES = {"reward_mode": "hard_plus_gtprob_plus_rel", "w_rel": 0.2, "grpo_epochs": 5}
