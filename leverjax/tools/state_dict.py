"""The original's parameter names and shapes against leverjax's: a PyTorch ``state_dict`` of any selector
variant to a leverjax parameter tree and back, the variant inferred from the names. Plain numpy; torch
only to hand tensors back (:func:`params_to_torch_state_dict`)."""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from leverjax.errors import ConfigError, LeverjaxError

TORCH_HINT = ("pip install torch (the CPU build is enough: "
              "pip install torch --index-url https://download.pytorch.org/whl/cpu)")


DEFAULT_TEMPERATURE = 0.1  # the original's fixed softmax temperature


SELECTOR_FIELDS = ("hidden", "num_layers", "num_heads", "dropout", "attn_dropout", "temperature", "gated")


# The variant fields of a SelectorConfig; all but mmr_reduction, top_m and refine_outside (which the
# original keeps outside the state dict) are seen in the parameter names and shapes.
VARIANT_FIELDS = ("update", "step_emb_rows", "scoring", "set_term", "mmr_reduction", "div_lambda_size",
                   "num_topics", "dpp_rank", "cand_encoder", "decoder", "top_m", "refine_type", "refine_outside",
                   "num_slot_layers", "slot_rows", "stop")


# Entries of the original's variant checkpoints (beside model_state_dict) that say what the names cannot.
CHECKPOINT_EXTRAS = ("model_type", "top_m", "refine_type", "attention_type", "use_gru", "use_step_emb",
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

    values = {f: axes[f] for f in VARIANT_FIELDS if f in axes}
    return SelectorConfig(hidden=hidden, num_layers=num_layers, num_heads=num_heads, **values)


def expected_torch_shapes(selector_config, dim: int, *, input_proj: bool = True) -> dict:
    """``{torch key: shape}`` of the original's module for ``selector_config`` on embeddings of width ``dim``
    (derived from leverjax's own parameters: a kernel's shape is transposed)."""
    import jax

    from leverjax.core.model import init_params

    tree = jax.eval_shape(lambda: init_params(selector_config, jax.random.PRNGKey(0), dim))
    shapes = {}
    for path, leaf in flatten(tree).items():
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


def fmt_keys(keys: list[str], limit: int = 8) -> str:
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
                            f"pointer selector (its keys: {fmt_keys(sorted(state_dict))})")
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
        axes = {**{f: getattr(sc, f) for f in VARIANT_FIELDS}, "preset": selector}
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
            parts.append(f"missing keys: {fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {fmt_keys(unexpected)}")
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
    for path, v in flatten(params).items():
        key = torch_name(path)
        names[key] = np.empty(tuple(reversed(np.shape(v))) if _flax_location(key)[1] else np.shape(v), np.float32)
    return {"dim": int(dim), "hidden": int(hidden), "num_layers": max(layers) + 1 if layers else 0,
            "gated": "query_update_gate" in params, **infer_variant(names)}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, path))
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
    flat = {k: np.asarray(v) for k, v in flatten(params).items()}
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
        raise LeverjaxError(f"parameters hold entries the selector has not: {fmt_keys(extra)}")
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
