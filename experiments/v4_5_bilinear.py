"""V4-5: V4-2 with the bilinear scoring head; the original's run: SFT warm start, RCE 15 epochs (τ 2→0.5), GRPO 50 epochs with top-3/top-5, no backbone freezing."""

DESCRIPTION = "V4-5: V4-2 with the bilinear scoring head; the original's run: SFT warm start, RCE 15 epochs (τ 2→0.5), GRPO 50 epochs with top-3/top-5, no backbone freezing."
BASE = "scheme5"
OVERRIDES = {"selector": "v4_5_bilinear", "rce_epochs": 15, "freeze_backbone": False}
