"""The pre-scheme-5 setting: rank advantages, GRPO lr 5e-6, adaptive beta 0.15, 3 GRPO epochs, frozen backbone, top-k 3->5."""

DESCRIPTION = "The pre-scheme-5 setting: rank advantages, GRPO lr 5e-6, adaptive beta 0.15, 3 GRPO epochs, frozen backbone, top-k 3->5."
BASE = None
OVERRIDES = {}
