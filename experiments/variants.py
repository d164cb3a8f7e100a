"""Every selector preset under one recipe (scheme 5 with SFT warm start, RCE 5 epochs, no backbone
freezing), one compiled group per preset, for a ranking with confidence intervals."""

from leverjax.core.model import PRESETS

DESCRIPTION = "Every selector preset under one recipe (scheme 5, SFT warm start, RCE 5 epochs, no frozen backbone)."
BASE = "scheme5"
OVERRIDES = {"freeze_backbone": False, "rce_epochs": 5}
SWEEP = {"selector": tuple(PRESETS)}
