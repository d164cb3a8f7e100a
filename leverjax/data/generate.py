"""``python -m leverjax.data.generate --checkpoint=DIR --scorer=oracle --out=FILE.npz``: new RL data from a
trained selector.

The work is :mod:`leverjax.tools.generate` (it may load an original ``.pt`` or the VLM scorer, which need torch);
this module is only its command, filed beside the data it makes (nothing in the data layer imports it).
"""

if __name__ == "__main__":
    from leverjax.tools.generate import _cli

    _cli()
