"""The data set on the device: its arrays, minibatches of queries gathered from them, and the oracle.

:class:`DeviceData` holds what training and evaluation read (padding ids clipped to 0; the masks say
what is real). :func:`gather` takes a batch of query rows from it, :func:`padded_batches` cuts a query
index into whole batches. On synthetic data ``DeviceData.oracle`` carries the simulator's ground truth;
the evaluation hands it to the simulator's oracle (:func:`leverjax.data.synth.oracle_accuracy`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class DeviceData(NamedTuple):
    """The dataset's arrays on the device (padding ids clipped to 0; masks say what is real)."""

    emb: jax.Array  # [N, d]
    query_ids: jax.Array  # [Q]
    pool_ids: jax.Array  # [Q, K], -1 replaced by 0
    pool_mask: jax.Array  # [Q, K]
    traj: jax.Array  # [Q, M, S], -1 kept (the model and losses mask it)
    traj_mask: jax.Array  # [Q, M]
    correct: jax.Array  # [Q, M]
    acc: jax.Array
    gt_prob: jax.Array
    rel: jax.Array
    oracle: dict  # the simulator's ground truth (``oracle_*`` arrays without the prefix); empty on real data

    @classmethod
    def from_dataset(cls, ds) -> "DeviceData":
        return cls(
            emb=jnp.asarray(ds.emb, jnp.float32),
            query_ids=jnp.asarray(ds.query_ids, jnp.int32),
            pool_ids=jnp.asarray(np.maximum(ds.pool_ids, 0), jnp.int32),
            pool_mask=jnp.asarray(ds.pool_ids >= 0),
            traj=jnp.asarray(ds.traj, jnp.int32),
            traj_mask=jnp.asarray(ds.traj[..., 0] >= 0),
            correct=jnp.asarray(ds.correct, jnp.float32),
            acc=jnp.asarray(ds.acc, jnp.float32),
            gt_prob=jnp.asarray(ds.gt_prob, jnp.float32),
            rel=jnp.asarray(ds.rel, jnp.float32),
            oracle={k: jnp.asarray(v) for k, v in ds.oracle.items()},
        )


class Batch(NamedTuple):
    index: jax.Array  # [B] query rows (clipped), padded rows repeat row 0
    query_mask: jax.Array  # [B] False for padding
    query_emb: jax.Array  # [B, d]
    cand_emb: jax.Array  # [B, K, d]
    pool_mask: jax.Array  # [B, K]
    traj: jax.Array  # [B, M, S]
    traj_mask: jax.Array  # [B, M] (False for padded rows)


def gather(data: DeviceData, index: jax.Array, table: jax.Array | None = None) -> Batch:
    """The batch of queries ``index [B]`` (entries −1 are padding), embeddings taken from ``table``
    (default ``data.emb``; the GRPO phase passes the input-projected table when it is frozen)."""
    valid = index >= 0
    i = jnp.maximum(index, 0)
    table = data.emb if table is None else table
    return Batch(
        index=i,
        query_mask=valid,
        query_emb=table[data.query_ids[i]],
        cand_emb=table[data.pool_ids[i]],
        pool_mask=data.pool_mask[i],
        traj=data.traj[i],
        traj_mask=data.traj_mask[i] & valid[:, None],
    )


def padded_batches(index: jax.Array, batch_size: int) -> jax.Array:
    """``index [n]`` padded with −1 to a whole number of batches: ``[ceil(n / B), B]``."""
    n = index.shape[0]
    steps = max(1, math.ceil(n / batch_size))
    return jnp.concatenate([index, -jnp.ones(steps * batch_size - n, index.dtype)]).reshape(steps, batch_size)
