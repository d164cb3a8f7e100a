"""The registry of named experiments: the modules of the project's ``experiments/`` folder, read by path.

One small module per name, each a few overrides of a base config. A module defines ``DESCRIPTION`` (one
line), ``BASE`` (the experiment it starts from, or ``None`` for the reference defaults of
:class:`leverjax.core.config.Config`), ``OVERRIDES`` (config fields) and optionally ``SWEEP`` (field -> values run together in one vmapped program, e.g. scheme2's β values).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from typing import Any

from leverjax.core import config as config_lib
from leverjax.errors import ConfigError

SCHEMES = (
    "rce_only", "current", "scheme1", "scheme2", "scheme3", "scheme4", "scheme5", "scheme6", "scheme5_6",
    "scheme7", "scheme7_1", "scheme7_2", "scheme8", "scheme5_8", "scheme9", "scheme10", "scheme5_6_fixed",
)
# The selector variants' own runs (their training settings), and all presets under one recipe.
VARIANTS = ("v4_2", "v4_3", "v4_4", "v4_5_additive", "v4_5_bilinear", "v4_6", "v4_7", "v4_8", "v4_9", "v4_10",
            "variants")
DATA_LOOP = ("rounds",)
ON_POLICY = ("onpolicy", "onpolicy_realised", "onpolicy_reward_model", "onpolicy_dapo", "onpolicy_estimators",
             "onpolicy_budget")
NAMES = SCHEMES + VARIANTS + DATA_LOOP + ON_POLICY
# Names that stand for several experiments on the command line (``--experiment=schemes``).
COLLECTIONS = {"all": NAMES, "schemes": SCHEMES, "onpolicy_all": ("rce_only",) + ON_POLICY}


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    config: config_lib.Config
    sweep: dict[str, tuple[Any, ...]]


# The folder beside the package (the project's fixed layout); not an installed package of its own.
FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "experiments")


def _module(name: str):
    if name not in NAMES:
        raise ConfigError(f"unknown experiment {name!r}; valid: {', '.join(NAMES)}")
    key = f"leverjax_experiments.{name}"
    if key not in sys.modules:
        path = os.path.join(FOLDER, f"{name}.py")
        if not os.path.isfile(path):
            raise ConfigError(f"experiment {name!r} is registered but {path} is missing")
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[key] = module
    return sys.modules[key]


def overrides(name: str) -> dict[str, Any]:
    """All overrides of ``name`` relative to the defaults, its bases' first."""
    mod = _module(name)
    base = overrides(mod.BASE) if mod.BASE else {}
    return {**base, **mod.OVERRIDES}


def get(name: str) -> Experiment:
    """The named experiment with its resolved config (no command-line overrides yet)."""
    mod = _module(name)
    cfg = config_lib.replace(config_lib.Config(), overrides(name))
    sweep = {k: tuple(v) for k, v in getattr(mod, "SWEEP", {}).items()}
    return Experiment(name, mod.DESCRIPTION, cfg, sweep)


def describe_all() -> list[tuple[str, str]]:
    return [(name, _module(name).DESCRIPTION) for name in NAMES]
