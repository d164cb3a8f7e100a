"""The data loop: rce_only, then a second round trained on data its selector generated (the original's v4 mix,
labelled by the simulator's one-answer score, merged with the round's data)."""

DESCRIPTION = "Data loop: rce_only, then a round on candidates its own selector generated and a scorer labelled."
BASE = "rce_only"
OVERRIDES = {"rounds": 2}
