"""onpolicy scored by a reward model fit on the data's labelled trajectories (what real data allows without a
VLM in the loop); the oracle only measures the drift between the two."""

DESCRIPTION = "onpolicy scored by a reward model fit on the labelled trajectories (no scorer calls while training)."
BASE = "onpolicy"
OVERRIDES = {"rollout_scorer": "reward_model"}
