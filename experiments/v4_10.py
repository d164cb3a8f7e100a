"""V4-10: GRU decoder with a STOP token (adaptive shot count); the original's run: RCE 15 epochs at τ = 1, GRPO 50 epochs on all beams, no backbone freezing, and no warm start (its script loaded nothing from the SFT checkpoint; --sft_epochs=20 is the fix)."""

DESCRIPTION = "V4-10: GRU decoder with a STOP token (adaptive shot count); the original's run: RCE 15 epochs at τ = 1, GRPO 50 epochs on all beams, no backbone freezing, and no warm start (its script loaded nothing from the SFT checkpoint; --sft_epochs=20 is the fix)."
BASE = "scheme5"
OVERRIDES = {"selector": "v4_10", "rce_epochs": 15, "rce_tau_start": 1.0, "rce_tau_end": 1.0, "grpo_top_k": False,
             "freeze_backbone": False, "sft_epochs": 0}
