"""``python -m leverjax.vlm_eval --results=DIR --scorer=oracle|oracle_realised|qwen``: VLM evaluation of a grid.

The work is :mod:`leverjax.tools.vlm_eval` (it may load torch and transformers); this module is only its
command at the package's top, where researchers look for it.
"""

if __name__ == "__main__":
    from leverjax.tools.vlm_eval import _cli

    _cli()
