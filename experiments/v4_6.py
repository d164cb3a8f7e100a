"""V4-6: V4-2 + topic coverage gain (8 step embeddings); the original's run: SFT warm start, RCE 15 epochs (τ 2→0.5), GRPO 50 epochs with top-3/top-5, no backbone freezing."""

DESCRIPTION = "V4-6: V4-2 + topic coverage gain (8 step embeddings); the original's run: SFT warm start, RCE 15 epochs (τ 2→0.5), GRPO 50 epochs with top-3/top-5, no backbone freezing."
BASE = "scheme5"
OVERRIDES = {"selector": "v4_6", "rce_epochs": 15, "freeze_backbone": False}
