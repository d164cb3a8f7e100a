"""scheme5_6 with the reference defects fixed: post-RCE reference policy, no top-k collapse, no dropout in ratios."""

DESCRIPTION = "scheme5_6 with the reference defects fixed: post-RCE reference policy, no top-k collapse, no dropout in ratios."
BASE = "scheme5_6"
OVERRIDES = {"reference_policy": "post_rce", "grpo_top_k": False, "ratio_dropout": False}
