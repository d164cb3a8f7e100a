"""The whole run as one pure function: the training phases, validation after every epoch, the final test.

:func:`make_train` composes :class:`~leverjax.core.train.Pipeline` (training) and
:class:`~leverjax.core.evaluate.Evaluator` (evaluation) into ``train(hp, rng) -> (state, history, final)``:
epochs are a ``lax.scan``, so ``jax.jit(jax.vmap(train))`` trains many seeds and hyperparameters at
once. The driver (:mod:`leverjax.run.engine`) calls the same per-epoch functions under ``vmap`` instead, to
checkpoint between epochs.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from leverjax.core.config import Config
from leverjax.core.evaluate import Evaluator
from leverjax.core.train import Pipeline
from leverjax.data.device import DeviceData


def make_train(cfg: Config, dataset) -> tuple[Callable, Pipeline, DeviceData]:
    """``train(hp, rng) -> (state, history, final)``: the whole run as one pure, jittable function.

    ``history[phase_name]`` maps each metric to an array over the phase's epochs; ``final`` holds the
    test metrics of the final and the best parameters. Vmap it over ``hp`` (dicts of scalars, see
    :meth:`Pipeline.hyperparameters`) and ``rng`` to train many runs in one program.
    """
    pipe = Pipeline(cfg, dataset)
    evaluator = Evaluator(pipe)
    data = DeviceData.from_dataset(dataset)

    def train(hp, rng, data=data):
        state = pipe.init_state(data, hp, rng)
        history = {}
        for i, phase in enumerate(pipe.phases):
            state = pipe.begin_phase(i, state, data, hp)

            def body(s, epoch, i=i):
                s, train_metrics = pipe.train_epoch(i, s, epoch, data, hp)
                s, val_metrics = evaluator.validate_epoch(s, epoch, data, hp)
                return s, {**train_metrics, **val_metrics}

            state, history[phase.name] = jax.lax.scan(body, state, jnp.arange(phase.epochs))
        return state, history, evaluator.final_evaluation(state, data, hp)

    return train, pipe, data
