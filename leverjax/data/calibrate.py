"""``python -m leverjax.data.calibrate --preset=okvqa``: the simulator's calibration check against the reports.

The check trains selectors through the grid launcher, so it lives above the driver, in
:mod:`leverjax.report.calibrate`; this module is only its command (nothing in the data layer imports it).
"""

if __name__ == "__main__":
    from leverjax.report.calibrate import _cli

    _cli()
