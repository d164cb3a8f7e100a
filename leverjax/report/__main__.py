"""``python -m leverjax.report DIR``: writes ``DIR/report.md`` and ``DIR/plots/``."""
import sys

from leverjax.report.markdown import main

sys.exit(main())
