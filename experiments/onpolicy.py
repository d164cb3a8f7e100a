"""On-policy GRPO from rce_only's state: every step samples 8 selections per query from the current policy and
the simulator's exact oracle scores them (z-score advantages, the post-RCE policy as reference, backbone trained).

It runs its own baseline beside it: the same seeds with no GRPO epoch, which is rce_only's state (the SFT and RCE
phases are shared), so the report compares the two paired by seed."""

DESCRIPTION = "On-policy GRPO from rce_only's state, 8 samples per query scored by the exact oracle."
BASE = "rce_only"
OVERRIDES = {"grpo_mode": "on_policy", "rollouts": 8, "rollout_scorer": "oracle", "advantage": "zscore",
             "grpo_epochs": 30, "grpo_lr": 3e-4, "freeze_backbone": False, "reference_policy": "post_rce",
             "kl_beta": 0.01, "adaptive_beta": False}
SWEEP = {"grpo_epochs": (0, 30)}
