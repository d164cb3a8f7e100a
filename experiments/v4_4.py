"""V4-4: V4-3 + candidate self-attention encoder; the original's run: SFT warm start, RCE 5 epochs (τ 2→0.5), GRPO 50 epochs with top-3/top-5, no backbone freezing."""

DESCRIPTION = "V4-4: V4-3 + candidate self-attention encoder; the original's run: SFT warm start, RCE 5 epochs (τ 2→0.5), GRPO 50 epochs with top-3/top-5, no backbone freezing."
BASE = "scheme5"
OVERRIDES = {"selector": "v4_4", "rce_epochs": 5, "freeze_backbone": False}
