"""``python -m leverjax.report DIR``: writes ``DIR/report.md`` and ``DIR/plots/``."""
from leverjax.report.markdown import cli

cli()
