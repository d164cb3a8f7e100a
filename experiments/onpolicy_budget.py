"""onpolicy at about the scorer budget of one data-loop round: 4 samples per query for 4 epochs (10,240 calls per
seed on the default data, against 7,961 for the second round of `rounds`)."""

DESCRIPTION = "onpolicy at about one data round's scorer budget: 4 samples per query, 4 epochs."
BASE = "onpolicy"
OVERRIDES = {"rollouts": 4, "grpo_epochs": 4}
