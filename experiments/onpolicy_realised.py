"""onpolicy scored as a VLM would score it: each sampled prompt gets one answer's VQA score (0, 1/3, 2/3, 1)."""

DESCRIPTION = "onpolicy with the simulator's one-answer VQA score as the scorer (what one VLM generation gives)."
BASE = "onpolicy"
OVERRIDES = {"rollout_scorer": "oracle_realised"}
