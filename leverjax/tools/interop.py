"""Interop with the PyTorch original: import its checkpoints, export leverjax selectors back.

The selector network (docs/reference.md §3) has the same parameters on both sides; only the names and
the layout of dense kernels differ (torch ``weight [out, in]`` is the transpose of a Flax
``kernel [in, out]``; the packed attention in-projection is stored as is):

=====================================================  ===============================================
torch key                                              leverjax parameter
=====================================================  ===============================================
``input_proj.weight [H, d]``                           ``input_proj/kernel [d, H]``
``cross_attn_layers.{i}.in_proj_weight [3H, H]``       ``cross_attn_layers_{i}/in_proj_weight [3H, H]``
``cross_attn_layers.{i}.in_proj_bias [3H]``            ``cross_attn_layers_{i}/in_proj_bias [3H]``
``cross_attn_layers.{i}.out_proj.weight [H, H]``       ``cross_attn_layers_{i}/out_proj/kernel [H, H]``
``cross_attn_layers.{i}.out_proj.bias [H]``            ``cross_attn_layers_{i}/out_proj/bias [H]``
``attn_norms.{i}.weight``, ``.bias [H]``               ``attn_norms_{i}/scale``, ``/bias [H]``
``query_proj.weight``, ``cand_proj.weight [H, H]``     ``query_proj/kernel``, ``cand_proj/kernel [H, H]``
``query_update_gate.weight [H, 2H]``, ``.bias [H]``    ``query_update_gate/kernel [2H, H]``, ``/bias [H]``
=====================================================  ===============================================

Conversions are exact (transposes and float32 copies), so export → import gives back the same bits.

**Import** (:func:`load_torch_checkpoint`, :func:`torch_state_dict_to_params`) reads

* a v3 ``.pt``: a dict with ``model_state_dict`` (and ``model_config``),
* a bare state dict,
* a Lightning v2 ``.ckpt``: ``state_dict`` with ``lever_lm.`` / ``pointer_selector.`` prefixes (keys
  outside the selector, such as the CLIP encoder of the adapter, are ignored and counted), and the
  old single-layer naming ``cross_attn.`` / ``attn_norm.``, which maps to layer 0.

The model config is inferred from the shapes: ``dim`` (d) from ``input_proj.weight``, ``hidden`` (H)
from ``query_proj.weight``, ``num_layers`` from the layer indices, ``gated`` from the presence of
``query_update_gate``. The original replaces a square input projection (d == H) with
``nn.Identity``, so a state dict without ``input_proj.weight`` means d = H and an identity kernel.
The number of attention heads cannot be seen in the shapes: it comes from the checkpoint's config
(``model_config`` of a v3 file, ``hyper_parameters`` of a Lightning file, searched for a
``num_heads`` entry), else from the caller (``num_heads=``, e.g. the run's config), else 1. The
softmax temperature likewise comes from the config when it has one, else 0.1 (the original's
constant). Any missing or unexpected key and any shape that disagrees with the rest is reported by
name in one :class:`~leverjax.errors.LeverjaxError`; nothing is ever initialised at random.

**Export** (:func:`export_pt`) writes the dict the original's v3 selector loads with
``load_state_dict(strict=True)``: ``{"model_state_dict", "model_config", "leverjax"}``, where
``model_config`` holds the v3 constructor arguments (``d_model``, ``K``, ``shot_num``,
``hidden_dim``, ``num_heads``, ``num_layers``, ``dropout``, ``attn_dropout``, ``label_smoothing``,
``enable_rce``, ``enable_grpo``, ``temperature``) and ``leverjax`` the selector config including
``gated``; the same record goes to a JSON file beside it (``selector.pt`` → ``selector.json``).
A gated export matches the reference head revision (v2 + V4-1 gate); a static one (``gated=False``)
matches the "v2 static" selector, which has no ``query_update_gate``.

:func:`load_selector_params` is what ``run.py --init_from`` uses: a leverjax parameter folder (one
run of its leading run axis) or a torch file, checked against the run's selector config.

Command line (absl flags; the first argument is the subcommand)::

    python -m leverjax.tools.interop export --checkpoint=checkpoints/scheme5_6/best --run=0 --out=selector.pt
    python -m leverjax.tools.interop import --checkpoint=sft.pt --out=checkpoints/imported/best
    python -m leverjax.tools.interop inspect --checkpoint=rce_epoch5.ckpt

torch is an optional dependency: importing this module never imports it, and every function that
needs it says how to install it when it is missing.

Safety: ``.pt``/``.ckpt`` files are Python pickles. A file is first read with
``torch.load(weights_only=True)``; only if that fails (a Lightning file whose hyper-parameters hold
objects of packages that are not installed, say) is it unpickled in full, with stand-ins for
classes that cannot be imported. Load only checkpoints you trust.
"""
from __future__ import annotations

import os
import pickle
import re
import types
from typing import Any, Mapping

import numpy as np

from leverjax.errors import ConfigError, LeverjaxError
from leverjax.fileio import atomic_path, write_json_atomic

TORCH_HINT = ("pip install torch (the CPU build is enough: "
              "pip install torch --index-url https://download.pytorch.org/whl/cpu)")
DEFAULT_TEMPERATURE = 0.1  # the original's fixed softmax temperature

_SELECTOR_FIELDS = ("hidden", "num_layers", "num_heads", "dropout", "attn_dropout", "temperature", "gated")
# The variant fields of a SelectorConfig; all but mmr_reduction, top_m and refine_outside (which the
# original keeps outside the state dict) are seen in the parameter names and shapes.
_VARIANT_FIELDS = ("update", "step_emb_rows", "scoring", "set_term", "mmr_reduction", "div_lambda_size",
                   "num_topics", "dpp_rank", "cand_encoder", "decoder", "top_m", "refine_type", "refine_outside",
                   "num_slot_layers", "slot_rows", "stop")
# Entries of the original's variant checkpoints (beside model_state_dict) that say what the names cannot.
_CHECKPOINT_EXTRAS = ("model_type", "top_m", "refine_type", "attention_type", "use_gru", "use_step_emb",
                      "mmr_reduction", "num_slot_layers", "use_slot_cand_attn", "num_topics", "dpp_rank")


def require_torch(what: str = "this command"):
    """Imports and returns torch, or raises a :class:`LeverjaxError` saying how to install it."""
    try:
        import torch
    except ImportError:
        raise LeverjaxError(f"{what} needs PyTorch, an optional dependency that is not installed: {TORCH_HINT}") \
            from None
    return torch


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------
# Module names (a ModuleList index stripped) whose class decides how a ``weight`` is stored.
_LINEAR = {"input_proj", "query_proj", "cand_proj", "query_update_gate", "out_proj", "linear1", "linear2",
           "attn_Wq", "attn_Wc", "attn_v", "query_topic_head", "dpp_proj", "refine_score", "refine_mlp"}
_LAYER_NORM = {"attn_norms", "norm1", "norm2", "slot_norms", "slot_cand_norm", "refine_norm"}
_EMBEDDING = {"step_emb", "slot_emb"}


def _flax_location(torch_key: str) -> tuple[tuple[str, ...], bool]:
    """The leverjax parameter path of a torch key and whether the array is transposed.

    A ModuleList/Sequential index joins its parent's name (``layers.0`` → ``layers_0``); a Linear's
    ``weight`` becomes the transposed ``kernel``, a LayerNorm's ``weight`` its ``scale``, an
    Embedding's ``weight`` its ``embedding``; every other name is kept.
    """
    parts: list[str] = []
    for p in torch_key.split("."):
        if p.isdigit() and parts:
            parts[-1] = f"{parts[-1]}_{p}"
        else:
            parts.append(p)
    if len(parts) == 1:
        return (parts[0],), False
    module, leaf = re.sub(r"_\d+$", "", parts[-2]), parts[-1]
    if leaf == "weight" and module in _LINEAR:
        return tuple(parts[:-1]) + ("kernel",), True
    if leaf == "weight" and module in _LAYER_NORM:
        return tuple(parts[:-1]) + ("scale",), False
    if leaf == "weight" and module in _EMBEDDING:
        return tuple(parts[:-1]) + ("embedding",), False
    return tuple(parts), False


def flax_name(torch_key: str) -> str:
    """``cross_attn_layers.0.out_proj.weight`` → ``cross_attn_layers_0/out_proj/kernel``."""
    return "/".join(_flax_location(torch_key)[0])


def torch_name(flax_path: str) -> str:
    """``cross_attn_layers_0/out_proj/kernel`` → ``cross_attn_layers.0.out_proj.weight``."""
    parts = []
    for p in flax_path.split("/"):
        m = re.fullmatch(r"(.+)_(\d+)", p)
        if m and re.sub(r"_\d+$", "", p) in _LIST_MODULES:
            parts += [m.group(1), m.group(2)]
        else:
            parts.append({"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(p, p))
    return ".".join(parts)


# Module names that are ModuleLists or Sequentials in the original (their index is a key segment).
_LIST_MODULES = {"cross_attn_layers", "attn_norms", "layers", "slot_self_attn_layers", "slot_norms", "refine_mlp"}


# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------
def infer_variant(state_dict: Mapping[str, Any], extras: Mapping[str, Any] | None = None) -> dict:
    """The variant axes seen in a normalised torch state dict's names and shapes (``extras``: the
    checkpoint's own entries such as ``top_m``/``refine_type``/``mmr_reduction``, used when present).

    Returns the :class:`leverjax.core.model.SelectorConfig` variant fields plus ``preset`` (the preset these
    axes equal, or ``custom``).
    """
    from leverjax.core.model import SelectorConfig

    extras = dict(extras or {})
    keys = set(state_dict)
    has = lambda prefix: any(k == prefix or k.startswith(prefix + ".") for k in keys)  # noqa: E731
    shape = lambda k: tuple(np.shape(state_dict[k])) if k in state_dict else None  # noqa: E731
    decoder = "slots" if has("slot_emb") else "refine" if (has("refine_attn") or has("refine_mlp")) else "pointer"
    stop = has("stop_token")
    if has("query_update_gate"):
        update = "gate"
    elif has("decoder_gru"):
        update = "gru"
    elif (decoder == "refine" or stop) and not extras.get("use_gru", False):
        update = "mix"  # V4-9 / V4-10 without their GRU blend the pick into the state
    else:
        update = "none"
    set_term = ("mmr" if has("div_lambda") else "coverage" if has("topic_prototypes") else
                "dpp" if has("dpp_proj") else "none")
    base = SelectorConfig()
    out = {
        "update": update,
        "step_emb_rows": shape("step_emb.weight")[0] if has("step_emb") else 0,
        "scoring": "additive" if has("attn_Wq") else "bilinear" if has("bilinear") else "dot",
        "set_term": set_term,
        "mmr_reduction": str(extras.get("mmr_reduction") or base.mmr_reduction),
        "div_lambda_size": shape("div_lambda")[0] if has("div_lambda") else base.div_lambda_size,
        "num_topics": shape("topic_prototypes")[0] if has("topic_prototypes") else base.num_topics,
        "dpp_rank": shape("dpp_proj.weight")[0] if has("dpp_proj") else base.dpp_rank,
        "cand_encoder": "self_attn" if has("cand_encoder") else "none",
        "decoder": decoder,
        "top_m": int(extras.get("top_m") or base.top_m),
        "refine_type": "mlp" if has("refine_mlp") else "attn",
        "refine_outside": base.refine_outside,
        "num_slot_layers": len(_layer_indices(keys, "slot_self_attn_layers")) if decoder == "slots"
        else base.num_slot_layers,
        "slot_rows": shape("slot_emb.weight")[0] if has("slot_emb") else base.slot_rows,
        "stop": stop,
    }
    out["preset"] = preset_name(out)
    return out


def preset_name(axes: Mapping[str, Any]) -> str:
    """The preset whose axes equal ``axes`` (any shot number), else ``custom``."""
    from leverjax.core.model import AXES, PRESETS, SelectorConfig

    for name, values in PRESETS.items():
        want = {a: getattr(SelectorConfig, a) for a in AXES}
        want.update(values)
        if want["step_emb_rows"] == "S":
            want["step_emb_rows"] = axes.get("step_emb_rows") or -1
        if all(axes.get(a) == want[a] for a in AXES):
            return name
    return "custom"


def _variant_config(dim: int, hidden: int, num_layers: int, num_heads: int, axes: Mapping[str, Any]):
    from leverjax.core.model import SelectorConfig

    values = {f: axes[f] for f in _VARIANT_FIELDS if f in axes}
    return SelectorConfig(hidden=hidden, num_layers=num_layers, num_heads=num_heads, **values)


def expected_torch_shapes(selector_config, dim: int, *, input_proj: bool = True) -> dict:
    """``{torch key: shape}`` of the original's module for ``selector_config`` on embeddings of width ``dim``
    (derived from leverjax's own parameters: a kernel's shape is transposed)."""
    import jax

    from leverjax.core.model import init_params

    tree = jax.eval_shape(lambda: init_params(selector_config, jax.random.PRNGKey(0), dim))
    shapes = {}
    for path, leaf in _flatten(tree).items():
        key = torch_name(path)
        transposed = _flax_location(key)[1]
        shapes[key] = tuple(reversed(leaf.shape)) if transposed else tuple(leaf.shape)
    if not input_proj:
        shapes.pop("input_proj.weight")
    return dict(sorted(shapes.items(), key=lambda kv: _key_rank(kv[0])))


_TOP_ORDER = ("input_proj", "cand_encoder", "cross_attn_layers", "attn_norms", "query_proj", "cand_proj",
              "query_update_gate", "stop_token", "slot_emb", "slot_self_attn_layers", "slot_norms", "slot_cand_attn",
              "slot_cand_norm", "refine_attn", "refine_norm", "refine_score", "refine_mlp", "decoder_gru",
              "step_emb", "attn_Wq", "attn_Wc", "attn_v", "bilinear", "div_lambda", "topic_prototypes",
              "query_topic_head", "cover_lambda", "dpp_proj", "dpp_lambda")
_LEAF_ORDER = ("in_proj_weight", "in_proj_bias", "out_proj", "self_attn", "linear1", "linear2", "norm1", "norm2",
               "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight", "bias")


def _key_rank(key: str):
    """Sort key giving the original's module registration order (which strict loading does not need)."""
    parts = key.split(".")
    top = _TOP_ORDER.index(parts[0]) if parts[0] in _TOP_ORDER else len(_TOP_ORDER)
    rest = tuple(int(p) if p.isdigit() else (_LEAF_ORDER.index(p) if p in _LEAF_ORDER else len(_LEAF_ORDER))
                 for p in parts[1:])
    return (top,) + rest


# ---------------------------------------------------------------------------------------------
# State dict → params
# ---------------------------------------------------------------------------------------------
def _to_numpy(value: Any, key: str) -> np.ndarray:
    """A float32 host copy of a torch tensor or array-like (exact for float16/bfloat16/float32)."""
    if hasattr(value, "detach"):  # a torch tensor; never import torch for this
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        value = value.numpy()
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise LeverjaxError(f"state dict entry {key} has dtype {arr.dtype}, not a float tensor")
    return np.array(arr, dtype=np.float32, order="C")  # (ascontiguousarray would make a scalar 1-d)


def normalize_keys(state_dict: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """The selector's entries of ``state_dict`` under the §3 names, and the keys left out.

    Strips ``module.`` (DataParallel) and ``lever_lm.`` (the Lightning module), keeps only the
    ``pointer_selector.`` sub-tree when there is one (the rest of the adapter, such as its CLIP
    encoder, is returned as left out), and maps the old single-layer names ``cross_attn.`` and
    ``attn_norm.`` to layer 0.
    """
    items = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise LeverjaxError(f"state dict has a non-string key {key!r}")
        k = key
        for prefix in ("module.", "lever_lm.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        items[key] = k
    left_out = []
    if any(k.startswith("pointer_selector.") for k in items.values()):
        left_out = [key for key, k in items.items() if not k.startswith("pointer_selector.")]
        items = {key: k[len("pointer_selector."):] for key, k in items.items() if k.startswith("pointer_selector.")}
    out: dict[str, Any] = {}
    for key, k in items.items():
        if k.startswith("cross_attn."):
            k = "cross_attn_layers.0." + k[len("cross_attn."):]
        elif k.startswith("attn_norm."):
            k = "attn_norms.0." + k[len("attn_norm."):]
        if k in out:
            raise LeverjaxError(f"state dict holds {k} twice (old single-layer and new naming both present; "
                                f"second one from key {key})")
        out[k] = state_dict[key]
    return out, left_out


def _layer_indices(keys, prefix: str) -> set[int]:
    found = set()
    for k in keys:
        m = re.match(re.escape(prefix) + r"\.(\d+)\.", k)
        if m:
            found.add(int(m.group(1)))
    return found


def _fmt_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def infer_config(state_dict: Mapping[str, Any]) -> dict:
    """``{dim, hidden, num_layers, gated}`` seen in the shapes of a normalised state dict."""
    for key in ("query_proj.weight", "cand_proj.weight"):
        if key in state_dict:
            shape = tuple(np.shape(state_dict[key]))
            if len(shape) != 2 or shape[0] != shape[1]:
                raise LeverjaxError(f"{key} has shape {shape} but must be square [H, H]")
            hidden = shape[0]
            break
    else:
        raise LeverjaxError("state dict has neither query_proj.weight nor cand_proj.weight: not a Lever-Plus "
                            f"pointer selector (its keys: {_fmt_keys(sorted(state_dict))})")
    if "input_proj.weight" in state_dict:
        shape = tuple(np.shape(state_dict["input_proj.weight"]))
        if len(shape) != 2 or shape[0] != hidden:
            raise LeverjaxError(f"input_proj.weight has shape {shape} but must be [H, d] with H = {hidden} "
                                f"(from query_proj.weight)")
        dim = shape[1]
    else:
        dim = hidden
    layers = _layer_indices(state_dict, "cross_attn_layers") | _layer_indices(state_dict, "attn_norms")
    num_layers = max(layers) + 1 if layers else 1
    gated = any(k.startswith("query_update_gate.") for k in state_dict)
    return {"dim": int(dim), "hidden": int(hidden), "num_layers": int(num_layers), "gated": bool(gated)}


def torch_state_dict_to_params(state_dict: Mapping[str, Any], *, num_heads: int | None = None,
                               source: str = "state dict", selector: str | None = None,
                               extras: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
    """Converts a Lever-Plus selector state dict (the v2/V4-1 selector or any variant V4-2 … V4-10) into
    leverjax parameters.

    ``state_dict`` maps torch keys (any of the layouts :func:`normalize_keys` accepts) to torch
    tensors or arrays. The variant is inferred from the parameter names (:func:`infer_variant`;
    ``extras`` are the checkpoint's own entries such as ``top_m``); ``selector`` (a preset name) makes
    the state dict be checked against that preset instead. Returns ``(params, config)``: ``params`` a
    nested dict of float32 numpy arrays in the layout of :func:`leverjax.core.model.init_params`,
    ``config`` the inferred ``{dim, hidden, num_layers, num_heads, gated, left_out, preset}`` and the
    variant fields. Raises a :class:`LeverjaxError` naming every missing, unexpected or mis-shaped key.
    """
    from leverjax.core.model import PRESETS, preset_config

    sd, left_out = normalize_keys(state_dict)
    cfg = infer_config(sd)
    heads = 1 if num_heads is None else int(num_heads)
    if heads < 1 or cfg["hidden"] % heads:
        raise LeverjaxError(f"{source}: num_heads={heads} does not divide hidden={cfg['hidden']}")
    axes = infer_variant(sd, extras)
    if selector is not None:
        if selector not in PRESETS:
            raise ConfigError(f"selector={selector!r} is not one of: {', '.join(PRESETS)}")
        shots = axes["div_lambda_size"] if axes["set_term"] == "mmr" else (axes["step_emb_rows"] or 2)
        sc = preset_config(selector, shots, hidden=cfg["hidden"], num_layers=cfg["num_layers"], num_heads=heads,
                           mmr_reduction=axes["mmr_reduction"], top_m=axes["top_m"])
        axes = {**{f: getattr(sc, f) for f in _VARIANT_FIELDS}, "preset": selector}
    sc = _variant_config(cfg["dim"], cfg["hidden"], cfg["num_layers"], heads, axes)
    try:
        sc.check()
    except ConfigError as e:
        raise LeverjaxError(f"{source}: its parameters make no selector variant leverjax knows ({e})") from None
    expected = expected_torch_shapes(sc, cfg["dim"], input_proj="input_proj.weight" in sd)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = []
    for k, shape in expected.items():
        if k in sd and tuple(np.shape(sd[k])) != shape:
            wrong.append(f"{k} has shape {tuple(np.shape(sd[k]))} but the selector needs {shape}")
    if missing or unexpected or wrong:
        seen = (f"d={cfg['dim']}, H={cfg['hidden']}, {cfg['num_layers']} layer(s), variant {axes['preset']} "
                f"(update={sc.state_update}, scoring={sc.scoring}, set_term={sc.set_term}, "
                f"decoder={sc.decoder}, stop={sc.stop})")
        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt_keys(unexpected)}")
        if wrong:
            parts.append("; ".join(wrong))
        how = "given by --selector" if selector is not None else "inferred from its names and shapes"
        raise LeverjaxError(f"{source} does not match the selector ({seen}, {how}): " + "; ".join(parts))
    params: dict = {}
    for k in expected:
        path, transpose = _flax_location(k)
        arr = _to_numpy(sd[k], k)
        node = params
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = np.array(arr.T, order="C") if transpose else arr
    if "input_proj.weight" not in sd:
        params["input_proj"] = {"kernel": np.eye(cfg["dim"], dtype=np.float32)}
    cfg["gated"] = sc.state_update == "gate" or (sc.update == "gate" and sc.gated)
    return params, {**cfg, "num_heads": heads, "left_out": left_out, **axes}


# ---------------------------------------------------------------------------------------------
# Params → state dict
# ---------------------------------------------------------------------------------------------
def params_config(params: Mapping[str, Any]) -> dict:
    """``{dim, hidden, num_layers, gated, preset}`` and the variant fields of one run's leverjax parameters."""
    try:
        dim, hidden = np.shape(params["input_proj"]["kernel"])
    except (KeyError, TypeError, ValueError):
        raise LeverjaxError("parameters lack input_proj/kernel [d, H] (a run axis left in, or not a selector?)") \
            from None
    layers = [int(m.group(1)) for k in params for m in [re.fullmatch(r"cross_attn_layers_(\d+)", k)] if m]
    names = {}
    for path, v in _flatten(params).items():
        key = torch_name(path)
        names[key] = np.empty(tuple(reversed(np.shape(v))) if _flax_location(key)[1] else np.shape(v), np.float32)
    return {"dim": int(dim), "hidden": int(hidden), "num_layers": max(layers) + 1 if layers else 0,
            "gated": "query_update_gate" in params, **infer_variant(names)}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, path))
        else:
            out[path] = v
    return out


def params_to_numpy_state_dict(params: Mapping[str, Any], *, square_input_proj: str = "auto") -> dict:
    """One run's leverjax parameters as ``{torch key: float32 numpy array}`` in module order.

    ``square_input_proj`` says what happens when d == H, where the original has ``nn.Identity``
    instead of a Linear: ``"auto"`` leaves ``input_proj.weight`` out when the kernel is exactly the
    identity and raises otherwise (the original could not hold the trained projection);
    ``"keep"`` always writes it (for a torch module that has the Linear).
    """
    if square_input_proj not in ("auto", "keep"):
        raise ConfigError(f"square_input_proj={square_input_proj!r} must be 'auto' or 'keep'")
    cfg = params_config(params)
    flat = {k: np.asarray(v) for k, v in _flatten(params).items()}
    keep_input = True
    if cfg["dim"] == cfg["hidden"] and square_input_proj == "auto":
        kernel = flat["input_proj/kernel"]
        if not np.array_equal(kernel, np.eye(cfg["dim"], dtype=kernel.dtype)):
            raise LeverjaxError(
                f"input_proj is square (d = H = {cfg['dim']}) but not the identity: the original replaces a "
                f"square input projection with nn.Identity and cannot hold this one; train with hidden != the "
                f"embedding width, or export with square_input_proj='keep' for a module that has the Linear")
        keep_input = False
    sc = _variant_config(cfg["dim"], cfg["hidden"], max(cfg["num_layers"], 1), 1, cfg)
    names = list(expected_torch_shapes(sc, cfg["dim"], input_proj=keep_input))
    wanted = {flax_name(k) for k in names} | {"input_proj/kernel"}
    extra = sorted(set(flat) - wanted)
    if extra:
        raise LeverjaxError(f"parameters hold entries the selector has not: {_fmt_keys(extra)}")
    out = {}
    for k in names:
        path, transpose = _flax_location(k)
        name = "/".join(path)
        if name not in flat:
            raise LeverjaxError(f"parameters lack {name} (torch {k})")
        arr = np.asarray(flat[name], np.float32)
        out[k] = np.array(arr.T if transpose else arr, order="C")
    return out


def params_to_torch_state_dict(params: Mapping[str, Any], *, square_input_proj: str = "auto") -> dict:
    """One run's leverjax parameters as a torch state dict (float32 CPU tensors); see
    :func:`params_to_numpy_state_dict` for ``square_input_proj``."""
    torch = require_torch("exporting to PyTorch")
    from collections import OrderedDict

    arrays = params_to_numpy_state_dict(params, square_input_proj=square_input_proj)
    return OrderedDict((k, torch.from_numpy(v.copy())) for k, v in arrays.items())


# ---------------------------------------------------------------------------------------------
# Torch files
# ---------------------------------------------------------------------------------------------
class _Stub(dict):
    """Stand-in for an object whose class cannot be imported while unpickling a checkpoint."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self._stub_args = args
        self._stub_kwargs = kwargs
        self._stub_state = None

    def __setstate__(self, state):
        self._stub_state = state

    def __call__(self, *args, **kwargs):
        return _Stub(*args, **kwargs)


class _StubUnpickler(pickle.Unpickler):
    """Unpickler that replaces classes of missing packages (lightning, omegaconf, ...) by stubs."""

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Stub,), {"__module__": f"stub:{module}"})


_PERMISSIVE_PICKLE = types.SimpleNamespace(__name__="pickle", Unpickler=_StubUnpickler,
                                           load=lambda f, **kw: _StubUnpickler(f, **kw).load())


def _torch_load(path: str):
    torch = require_torch(f"reading {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - torch raises many types for a file it refuses
        try:
            return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PERMISSIVE_PICKLE)
        except Exception:  # noqa: BLE001
            raise LeverjaxError(f"{path}: cannot be read by torch.load ({str(first).splitlines()[0]})") from None


def _plain(value: Any) -> Any:
    """Unwraps stand-ins of config nodes (omegaconf keeps a value in ``_val``)."""
    state = getattr(value, "_stub_state", None) if isinstance(value, _Stub) else None
    if isinstance(state, Mapping) and "_val" in state:
        return state["_val"]
    return value


def _config_candidates(obj: Any, seen: set, depth: int = 0):
    """Every mapping with a ``num_heads`` entry inside a checkpoint's config, depth first."""
    if depth > 12 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, _Stub):
        for part in (getattr(obj, "_stub_state", None), dict(obj), getattr(obj, "_stub_kwargs", None),
                     list(getattr(obj, "_stub_args", ()))):
            yield from _config_candidates(part, seen, depth + 1)
    elif isinstance(obj, Mapping):
        if "num_heads" in obj:
            yield {str(k): _plain(v) for k, v in obj.items()}
        for v in obj.values():
            yield from _config_candidates(v, seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _config_candidates(v, seen, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from _config_candidates(vars(obj), seen, depth + 1)


def _find_config(obj: Any) -> dict | None:
    """The selector's config inside a checkpoint's config: the first mapping with ``num_heads`` and
    ``hidden_dim`` or ``d_model``, else the first with ``num_heads``, else None."""
    found = list(_config_candidates(obj, set()))
    for cand in found:
        if "hidden_dim" in cand or "d_model" in cand:
            return cand
    return found[0] if found else None


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and (hasattr(v, "detach") or isinstance(v, np.ndarray)) for k, v in obj.items())


def load_torch_checkpoint(path: str) -> tuple[dict, dict]:
    """Reads a Lever-Plus ``.pt``/``.ckpt``: ``(state_dict, info)``.

    ``info`` has ``layout`` (``v3``, ``lightning`` or ``state_dict``) and ``config``: the
    checkpoint's model config (a v3 ``model_config``, a leverjax export's ``leverjax`` record, or
    the mapping with ``num_heads`` found in Lightning ``hyper_parameters``), empty if none.
    """
    if not os.path.isfile(path):
        raise LeverjaxError(f"no checkpoint file at {path}")
    obj = _torch_load(path)
    config: dict = {}
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        layout, sd = "v3", obj["model_state_dict"]
        if isinstance(obj.get("model_config"), Mapping):
            config.update({str(k): _plain(v) for k, v in obj["model_config"].items()})
        elif obj.get("model_config") is not None:
            config.update(_find_config(obj["model_config"]) or {})
    elif isinstance(obj, Mapping) and "state_dict" in obj:
        layout, sd = "lightning", obj["state_dict"]
        config.update(_find_config(obj.get("hyper_parameters")) or {})
    elif _is_tensor_dict(obj):
        layout, sd = "state_dict", obj
    else:
        kind = type(obj).__name__
        keys = f" with keys {_fmt_keys(sorted(map(str, obj)))}" if isinstance(obj, Mapping) else ""
        raise LeverjaxError(f"{path}: a {kind}{keys} is not a Lever-Plus checkpoint (expected a dict with "
                            f"model_state_dict, a Lightning checkpoint with state_dict, or a state dict)")
    if isinstance(obj, Mapping):  # the variant workflows' own entries (top_m, refine_type, model_type, ...)
        config.update({k: _plain(obj[k]) for k in _CHECKPOINT_EXTRAS if k in obj and k not in config})
    if isinstance(obj, Mapping) and isinstance(obj.get("leverjax"), Mapping):
        config.update(obj["leverjax"])
    if not _is_tensor_dict(sd):
        raise LeverjaxError(f"{path}: its {layout} state dict is not a mapping of names to tensors")
    return dict(sd), {"layout": layout, "config": config}


# ---------------------------------------------------------------------------------------------
# Any checkpoint → one run's parameters
# ---------------------------------------------------------------------------------------------
def _select_run(params: Mapping[str, Any], run_index: int, path: str, runs: list | None) -> dict:
    """One run of parameters stacked on a leading run axis (left alone when there is no run axis)."""
    kernel = np.asarray(params["input_proj"]["kernel"])
    if kernel.ndim == 2:
        if run_index != 0:
            raise ConfigError(f"--run={run_index}: {path} holds the parameters of a single run (use run 0)")
        return {k: np.asarray(v) for k, v in _flatten(params).items()}
    count = kernel.shape[0]
    if not 0 <= run_index < count:
        labels = ""
        if runs:
            labels = " (" + ", ".join(f"{i}: {r.get('label', r) if isinstance(r, Mapping) else r}"
                                      for i, r in enumerate(runs)) + ")"
        raise ConfigError(f"--run={run_index} is out of range: {path} holds {count} run(s), "
                          f"numbered 0..{count - 1}{labels}")
    return {k: np.asarray(v)[run_index] for k, v in _flatten(params).items()}


def _unflatten(flat: Mapping[str, Any]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        parts = path.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def load_checkpoint(path: str, *, run_index: int = 0, num_heads: int | None = None,
                    selector: str | None = None) -> tuple[dict, dict]:
    """One run's parameters (float32 numpy) and their selector config from any checkpoint.

    ``path``: a leverjax parameter folder (``checkpoints/<experiment>/best``; run ``run_index`` of
    its leading run axis) or a Lever-Plus / exported ``.pt``/``.ckpt`` file. The config dict has
    ``dim`` and every :class:`leverjax.core.model.SelectorConfig` field, plus ``source`` (``leverjax`` or
    ``torch``) and, for torch files, ``layout`` and ``num_heads_known`` (whether the file said how
    many heads; otherwise ``num_heads`` is the argument or 1). The variant (``preset`` and the variant
    fields) comes from a leverjax folder's config, or is inferred from a torch file's parameter names;
    ``selector`` (a preset name) checks a torch file against that preset instead.
    """
    if not os.path.exists(path):
        raise LeverjaxError(f"no checkpoint at {path} (expected a leverjax folder or a .pt/.ckpt file)")
    if os.path.isdir(path):
        from leverjax.run.checkpoint import load_params, resolve_params_folder

        path, run_index = resolve_params_folder(path, run_index)
        params, meta = load_params(path)
        cfg_in = dict(meta.get("config") or {})
        flat = _select_run(params, run_index, path, meta.get("runs"))
        params = _unflatten({k: np.asarray(v, np.float32) for k, v in flat.items()})
        shape_cfg = params_config(params)
        cfg = {**shape_cfg, "source": "leverjax"}
        for f in _SELECTOR_FIELDS:
            if f in cfg_in and f not in shape_cfg:
                cfg[f] = cfg_in[f]
        cfg.setdefault("num_heads", 1 if num_heads is None else num_heads)
        cfg.setdefault("temperature", DEFAULT_TEMPERATURE)
        if cfg_in.get("selector"):  # the run's own variant (names alone cannot tell every axis apart)
            from leverjax.core import config as config_lib

            known = {k: v for k, v in cfg_in.items() if k in config_lib.FIELDS}
            shots = shape_cfg["div_lambda_size"] if shape_cfg["set_term"] == "mmr" else max(
                shape_cfg["step_emb_rows"], 2)
            sc = config_lib.selector_config(config_lib.replace(config_lib.Config(), known), shots)
            cfg.update({f: getattr(sc, f) for f in _VARIANT_FIELDS}, preset=cfg_in["selector"])
        for f in ("hidden", "num_layers", "gated"):
            if f in cfg_in and cfg_in[f] != shape_cfg[f]:
                raise LeverjaxError(f"{path}: its config says {f}={cfg_in[f]!r} but its parameters have "
                                    f"{f}={shape_cfg[f]!r}")
        cfg["num_heads_known"] = "num_heads" in cfg_in
        return params, cfg
    sd, info = load_torch_checkpoint(path)
    if run_index != 0:
        raise ConfigError(f"--run={run_index}: {path} is a torch file holding one selector (use run 0)")
    ck = info["config"]
    heads_known = ck.get("num_heads") is not None
    heads = int(ck["num_heads"]) if heads_known else num_heads
    params, inferred = torch_state_dict_to_params(sd, num_heads=heads, source=path, selector=selector, extras=ck)
    for key, name in (("d_model", "dim"), ("hidden_dim", "hidden"), ("hidden", "hidden"),
                      ("num_layers", "num_layers"), ("dim", "dim"), ("gated", "gated")):
        if ck.get(key) is not None and _plain(ck[key]) != inferred[name]:
            raise LeverjaxError(f"{path}: its config says {key}={ck[key]!r} but its weights have "
                                f"{name}={inferred[name]!r}")
    cfg = {k: inferred[k] for k in ("dim", "hidden", "num_layers", "num_heads", "gated", "preset")
           + _VARIANT_FIELDS}
    cfg.update(source="torch", layout=info["layout"], num_heads_known=heads_known, left_out=len(inferred["left_out"]),
               temperature=float(ck.get("temperature") or DEFAULT_TEMPERATURE))
    for f in ("dropout", "attn_dropout"):
        if ck.get(f) is not None:
            cfg[f] = float(ck[f])
    return params, cfg


def selector_config_from(cfg: Mapping[str, Any], **overrides):
    """A :class:`leverjax.core.model.SelectorConfig` from a config dict (:func:`load_checkpoint`'s, or a
    :class:`leverjax.core.config.Config` as a dict); ``overrides`` that are not None win."""
    from leverjax.core.model import SelectorConfig

    base = SelectorConfig()
    fields = _SELECTOR_FIELDS + _VARIANT_FIELDS
    values = {f: cfg[f] for f in fields if f in cfg and cfg[f] is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    sc = SelectorConfig(**{f: values.get(f, getattr(base, f)) for f in fields}).check()
    if sc.hidden % sc.num_heads:
        raise ConfigError(f"num_heads={sc.num_heads} does not divide hidden={sc.hidden}")
    return sc


def check_params(params: Mapping[str, Any], selector_config, *, dim: int, where: str = "checkpoint") -> None:
    """Raises a :class:`LeverjaxError` naming every parameter whose presence or shape differs from
    what ``selector_config`` with embeddings of width ``dim`` needs."""
    import jax

    from leverjax.core.model import init_params

    expected = jax.eval_shape(lambda: init_params(selector_config, jax.random.PRNGKey(0), dim))
    want = {k: tuple(v.shape) for k, v in _flatten(expected).items()}
    have = {k: tuple(np.shape(v)) for k, v in _flatten(params).items()}
    problems = []
    for k in sorted(set(want) | set(have)):
        if k not in have:
            problems.append(f"{k} (torch {torch_name(k)}) is missing")
        elif k not in want:
            problems.append(f"{k} (torch {torch_name(k)}) is not a parameter of this run's selector")
        elif have[k] != want[k]:
            problems.append(f"{k} (torch {torch_name(k)}) has shape {have[k]} but the run needs {want[k]}")
    if problems:
        hint, seen = "", ""
        try:
            got = params_config(params)
        except LeverjaxError:
            got = None
        if got is not None:
            seen = (f"; the checkpoint has dim={got['dim']}, hidden={got['hidden']}, num_layers={got['num_layers']}, "
                    f"gated={got['gated']}")
            fix = [f"--{f}={str(got[f]).lower() if f == 'gated' else got[f]}" for f in ("hidden", "num_layers", "gated")
                   if got[f] != getattr(selector_config, f)]
            if got["dim"] != dim:
                hint = f" (its embeddings have width d={got['dim']}, the data's d={dim}: a different encoder?)"
            elif fix:
                hint = f" (to start from it, pass {' '.join(fix)})"
        run = (f"dim={dim}, hidden={selector_config.hidden}, num_layers={selector_config.num_layers}, "
               f"gated={selector_config.gated}")
        more = f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
        raise LeverjaxError(f"{where} does not fit the run's selector ({run}{seen}){hint}: "
                            + "; ".join(problems[:6]) + more)


def load_selector_params(path: str, selector_config, *, dim: int, run_index: int = 0):
    """Parameters from ``path`` to start a run of ``selector_config`` on embeddings of width ``dim``.

    ``path`` is a leverjax parameter folder (run ``run_index`` of its run axis) or a Lever-Plus
    ``.pt``/``.ckpt``. Shapes are checked against the run (an error names each key and both
    shapes); a checkpoint that states a different number of heads is refused too. Returns a pytree
    of float32 jax arrays without a run axis.
    """
    import jax.numpy as jnp

    params, cfg = load_checkpoint(path, run_index=run_index, num_heads=selector_config.num_heads)
    check_params(params, selector_config, dim=dim, where=path)
    if cfg.get("num_heads_known") and cfg["num_heads"] != selector_config.num_heads:
        raise LeverjaxError(f"{path} was trained with num_heads={cfg['num_heads']} but the run has "
                            f"num_heads={selector_config.num_heads}; pass --num_heads={cfg['num_heads']}")
    return _map_tree(params, jnp.asarray)


def _map_tree(tree: Mapping[str, Any], fn) -> dict:
    return {k: _map_tree(v, fn) if isinstance(v, Mapping) else fn(v) for k, v in tree.items()}


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------
def export_record(params: Mapping[str, Any], config: Any, *, pool_size: int = 64, shot_num: int = 2,
                  source: str | None = None) -> dict:
    """The ``model_config`` and ``leverjax`` records of an export (plain JSON-able values)."""
    if hasattr(config, "selector") and not isinstance(config, Mapping):  # a run config: resolve its preset
        from leverjax.core import config as config_lib

        config = config_lib.selector_config(config, shot_num)
    cfg = config if isinstance(config, Mapping) else {f: getattr(config, f) for f in _SELECTOR_FIELDS
                                                      + _VARIANT_FIELDS if hasattr(config, f)}
    shape = params_config(params)
    seen = {k: shape[k] for k in ("hidden", "num_layers", "gated")}
    if shape["preset"] not in ("v4_1", "v2"):  # the names decide the variant (the config may lack its axes)
        seen.update({f: shape[f] for f in _VARIANT_FIELDS if f not in ("mmr_reduction", "top_m", "refine_outside")})
        if shape["update"] == "mix" and cfg.get("update") == "none":
            seen["update"] = "none"
    sc = selector_config_from({**cfg, **seen})
    model_config = {
        "d_model": shape["dim"], "K": int(pool_size), "shot_num": int(shot_num), "label_smoothing": 0.0,
        "dropout": float(sc.dropout), "hidden_dim": sc.hidden, "num_heads": sc.num_heads,
        "attn_dropout": float(sc.attn_dropout), "num_layers": sc.num_layers, "enable_rce": False,
        "enable_grpo": False, "temperature": float(sc.temperature),
    }
    preset = preset_name({f: getattr(sc, f) for f in _VARIANT_FIELDS} | {"update": sc.state_update})
    record = {"dim": shape["dim"], **{f: getattr(sc, f) for f in _SELECTOR_FIELDS + _VARIANT_FIELDS},
              "preset": preset,
              "variant": ("v2 + V4-1 gate" if sc.gated else "v2 static") if preset in ("v4_1", "v2") else preset}
    if source:
        record["source"] = source
    out = {"model_config": model_config, "leverjax": record}
    if preset not in ("v4_1", "v2"):  # the entries the original's variant checkpoints carry
        out.update(model_type="v4_5" if preset.startswith("v4_5") else preset, top_m=sc.top_m,
                   refine_type=sc.refine_type, attention_type=sc.scoring, mmr_reduction=sc.mmr_reduction,
                   use_gru=sc.state_update == "gru", use_step_emb=sc.step_emb_rows > 0)
    return out


def json_path_for(path: str) -> str:
    """Where :func:`export_pt` writes the config beside ``path`` (``selector.pt`` → ``selector.json``)."""
    root, ext = os.path.splitext(path)
    return (root if ext else path) + ".json"


def export_pt(params: Mapping[str, Any], config: Any, path: str, *, pool_size: int = 64, shot_num: int = 2,
              square_input_proj: str = "auto", source: str | None = None) -> dict:
    """Writes one run's parameters as a v3 checkpoint dict to ``path`` and its config to a JSON beside it.

    ``config``: a :class:`leverjax.core.model.SelectorConfig`, a :class:`leverjax.core.config.Config` or a
    dict of their fields (heads, dropouts, temperature; shapes come from ``params``).
    ``pool_size`` (K) and ``shot_num`` go to ``model_config`` for the original's constructor, which
    reshapes candidates to K. Returns the record written (``model_config`` and ``leverjax``).
    """
    torch = require_torch("exporting to PyTorch")
    flat_ndim = np.ndim(params["input_proj"]["kernel"]) if "input_proj" in params else 0
    if flat_ndim != 2:
        raise LeverjaxError("export_pt takes one run's parameters; select a run of a vmapped checkpoint first "
                            "(load_checkpoint(path, run_index=...))")
    record = export_record(params, config, pool_size=pool_size, shot_num=shot_num, source=source)
    sd = params_to_torch_state_dict(params, square_input_proj=square_input_proj)
    with atomic_path(path) as tmp:
        torch.save({"model_state_dict": sd, "phase": "export", **record}, tmp)
    write_json_atomic(json_path_for(path), {**record, "state_dict_keys": list(sd)})
    return record


def import_to_folder(path: str, out: str, *, num_heads: int | None = None, selector: str | None = None) -> dict:
    """Converts a torch checkpoint into a leverjax parameter folder (one run on the run axis)."""
    from leverjax.core import config as config_lib
    from leverjax.run.checkpoint import save_params

    params, cfg = load_checkpoint(path, num_heads=num_heads, selector=selector)
    if num_heads is not None and cfg.get("num_heads_known") and cfg["num_heads"] != num_heads:
        raise ConfigError(f"--num_heads={num_heads} but {path} says num_heads={cfg['num_heads']}")
    sc = selector_config_from(cfg, num_heads=num_heads)
    full = config_lib.replace(config_lib.Config(), config_fields(sc, cfg.get("preset", "custom")))
    stacked = _map_tree(params, lambda v: np.asarray(v)[None])
    meta = {"experiment": "imported", "config": config_lib.to_dict(full),
            "runs": [{"label": "imported", "sweep": {}, "seed": 0}], "imported_from": os.path.abspath(path),
            "dim": cfg["dim"]}
    save_params(out, stacked, meta)
    known = cfg.get("num_heads_known") or num_heads is not None
    return {**cfg, **{f: getattr(sc, f) for f in _SELECTOR_FIELDS}, "num_heads_known": known}


def config_fields(sc, preset: str = "custom") -> dict:
    """The run-config fields (:class:`leverjax.core.config.Config`) that give ``sc``; raises if the config
    cannot express it (topic, DPP or slot sizes other than the presets')."""
    from leverjax.core.model import SelectorConfig

    base = SelectorConfig()
    for f in ("num_topics", "dpp_rank", "num_slot_layers", "slot_rows"):
        if getattr(sc, f) != getattr(base, f):
            raise LeverjaxError(f"{f}={getattr(sc, f)} cannot be set in a run config (the presets use "
                                f"{getattr(base, f)})")
    out = {f: getattr(sc, f) for f in _SELECTOR_FIELDS}
    out.update(selector=preset if preset not in ("custom",) else "v4_1", update=sc.update,
               step_emb_rows=sc.step_emb_rows, scoring=sc.scoring, set_term=sc.set_term,
               mmr_reduction=sc.mmr_reduction, cand_encoder=sc.cand_encoder, decoder=sc.decoder, top_m=sc.top_m,
               refine_type=sc.refine_type, refine_outside=sc.refine_outside, stop="on" if sc.stop else "off")
    return out


def describe(cfg: Mapping[str, Any]) -> str:
    """One line about a loaded checkpoint's selector."""
    heads = f"{cfg['num_heads']} head(s)" + ("" if cfg.get("num_heads_known", True) else " (assumed)")
    preset = cfg.get("preset", "v4_1" if cfg["gated"] else "v2")
    if preset in ("v4_1", "v2"):
        kind = "gated (v2 + V4-1 gate)" if cfg["gated"] else "static (v2)"
    else:
        kind = (f"variant {preset} (update={cfg.get('update')}, scoring={cfg.get('scoring')}, "
                f"set_term={cfg.get('set_term')}, decoder={cfg.get('decoder')}, stop={cfg.get('stop')})")
    return (f"d={cfg['dim']}, H={cfg['hidden']}, {cfg['num_layers']} layer(s), {heads}, {kind}, "
            f"temperature {cfg.get('temperature')}")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
COMMANDS = ("export", "import", "inspect")


def _cli() -> None:
    from absl import app, flags, logging

    from leverjax.errors import exit_on_error

    flags.DEFINE_string("checkpoint", None, "A leverjax parameter folder (checkpoints/<experiment>/best) or a "
                        "Lever-Plus .pt/.ckpt file.", required=True)
    flags.DEFINE_integer("run", 0, "Which run of a vmapped leverjax checkpoint (its leading run axis).")
    flags.DEFINE_string("out", None, "export: the .pt to write (a .json goes beside it); import: the leverjax "
                        "folder to write.")
    flags.DEFINE_integer("K", 64, "export: pool size written to model_config (the original reshapes candidates "
                         "to K).")
    flags.DEFINE_integer("shot_num", 2, "export: shot_num written to model_config.")
    flags.DEFINE_integer("num_heads", None, "Attention heads of a torch file whose config does not say (default 1).")
    flags.DEFINE_string("selector", None, "Check a torch file against this selector preset (v4_1, v2, v4_2, ...) "
                        "instead of inferring the variant from its parameter names.")
    FLAGS = flags.FLAGS

    @exit_on_error
    def main(argv: list[str]) -> None:
        logging.set_verbosity(logging.WARNING)
        if len(argv) != 2 or argv[1] not in COMMANDS:
            raise ConfigError(f"usage: python -m leverjax.tools.interop {{{'|'.join(COMMANDS)}}} --checkpoint=PATH "
                              f"[--run=0] [--out=PATH]; got {' '.join(argv[1:]) or 'no command'}")
        command = argv[1]
        if command in ("export", "import") and not FLAGS.out:
            raise ConfigError(f"{command} needs --out=PATH")
        if command == "import":
            cfg = import_to_folder(FLAGS.checkpoint, FLAGS.out, num_heads=FLAGS.num_heads, selector=FLAGS.selector)
            print(f"imported {FLAGS.checkpoint}: {describe(cfg)}")
            print(f"wrote {FLAGS.out} (use it with run.py --init_from={FLAGS.out} or leverjax.tools.score)")
            return
        params, cfg = load_checkpoint(FLAGS.checkpoint, run_index=FLAGS.run, num_heads=FLAGS.num_heads,
                                      selector=FLAGS.selector)
        if FLAGS.num_heads is not None:
            if cfg.get("num_heads_known") and cfg["num_heads"] != FLAGS.num_heads:
                raise ConfigError(f"--num_heads={FLAGS.num_heads} but {FLAGS.checkpoint} says "
                                  f"num_heads={cfg['num_heads']}")
            cfg["num_heads"], cfg["num_heads_known"] = FLAGS.num_heads, True
        if command == "inspect":
            print(f"{FLAGS.checkpoint}: {describe(cfg)}")
            for name, arr in params_to_numpy_state_dict(params, square_input_proj="keep").items():
                print(f"  {name:<40} {tuple(arr.shape)}")
            return
        source = f"{os.path.abspath(FLAGS.checkpoint)}" + (f" run {FLAGS.run}" if cfg["source"] == "leverjax" else "")
        export_pt(params, cfg, FLAGS.out, pool_size=FLAGS.K, shot_num=FLAGS.shot_num, source=source)
        print(f"exported {FLAGS.checkpoint}" + (f" (run {FLAGS.run})" if cfg["source"] == "leverjax" else "")
              + f": {describe(cfg)}")
        print(f"wrote {FLAGS.out} and {json_path_for(FLAGS.out)}; in PyTorch: "
              f"model.load_state_dict(torch.load({FLAGS.out!r})['model_state_dict'], strict=True)")

    app.run(main)


if __name__ == "__main__":
    _cli()
