"""RCE only, 10 epochs, tau 1.0 -> 0.1, RCE lr 5e-5."""

DESCRIPTION = "RCE only, 10 epochs, tau 1.0 -> 0.1, RCE lr 5e-5."
BASE = None
OVERRIDES = {"grpo_epochs": 0, "rce_epochs": 10, "rce_tau_start": 1.0, "rce_tau_end": 0.1, "rce_lr": 5e-5}
