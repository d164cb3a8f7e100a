"""onpolicy with each advantage estimator: z-score (GRPO), mean-centred (Dr. GRPO), leave-one-out (RLOO) and the
greedy selection's score as baseline (ReMax)."""

DESCRIPTION = "onpolicy with z-score (GRPO), mean-centred (Dr. GRPO), RLOO and ReMax advantages."
BASE = "onpolicy"
OVERRIDES = {}
SWEEP = {"advantage": ("zscore", "mean", "rloo", "remax")}
