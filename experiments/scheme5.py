"""z-score advantages (std floor 0.1), beta 0.1, GRPO lr 5e-6, 50 GRPO epochs."""

DESCRIPTION = "z-score advantages (std floor 0.1), beta 0.1, GRPO lr 5e-6, 50 GRPO epochs."
BASE = "current"
OVERRIDES = {"advantage": "zscore", "adv_min_std": 0.1, "kl_beta": 0.1, "grpo_lr": 5e-6, "grpo_epochs": 50}
