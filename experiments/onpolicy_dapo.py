"""onpolicy_realised with DAPO's dynamic sampling (flat groups sampled again up to 4 times, then dropped), its
clip-higher (upper PPO ε 0.28) and a dual clip of 3."""

DESCRIPTION = "onpolicy_realised with DAPO dynamic sampling (4), clip-higher 0.28 and dual clip 3."
BASE = "onpolicy_realised"
OVERRIDES = {"dynamic_sampling": 4, "clip_eps_high": 0.28, "dual_clip": 3.0}
