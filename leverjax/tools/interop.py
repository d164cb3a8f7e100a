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
import types
from typing import Any, Mapping

import numpy as np

from leverjax.errors import ConfigError, LeverjaxError
from leverjax.fileio import atomic_path, write_json_atomic
from leverjax.tools.state_dict import (
    CHECKPOINT_EXTRAS, DEFAULT_TEMPERATURE, SELECTOR_FIELDS, VARIANT_FIELDS, flatten, fmt_keys, params_config,
    params_to_numpy_state_dict, params_to_torch_state_dict, preset_name, require_torch, torch_name,
    torch_state_dict_to_params,
)


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
        keys = f" with keys {fmt_keys(sorted(map(str, obj)))}" if isinstance(obj, Mapping) else ""
        raise LeverjaxError(f"{path}: a {kind}{keys} is not a Lever-Plus checkpoint (expected a dict with "
                            f"model_state_dict, a Lightning checkpoint with state_dict, or a state dict)")
    if isinstance(obj, Mapping):  # the variant workflows' own entries (top_m, refine_type, model_type, ...)
        config.update({k: _plain(obj[k]) for k in CHECKPOINT_EXTRAS if k in obj and k not in config})
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
        return {k: np.asarray(v) for k, v in flatten(params).items()}
    count = kernel.shape[0]
    if not 0 <= run_index < count:
        labels = ""
        if runs:
            labels = " (" + ", ".join(f"{i}: {r.get('label', r) if isinstance(r, Mapping) else r}"
                                      for i, r in enumerate(runs)) + ")"
        raise ConfigError(f"--run={run_index} is out of range: {path} holds {count} run(s), "
                          f"numbered 0..{count - 1}{labels}")
    return {k: np.asarray(v)[run_index] for k, v in flatten(params).items()}


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
                    selector: str | None = None, params: str = "best") -> tuple[dict, dict]:
    """One run's parameters (float32 numpy) and their selector config from any checkpoint.

    ``path``: a leverjax parameter folder (``checkpoints/<experiment>/best``; run ``run_index`` of
    its leading run axis) or a Lever-Plus / exported ``.pt``/``.ckpt`` file. The config dict has
    ``dim`` and every :class:`leverjax.core.model.SelectorConfig` field, plus ``source`` (``leverjax`` or
    ``torch``) and, for torch files, ``layout`` and ``num_heads_known`` (whether the file said how
    many heads; otherwise ``num_heads`` is the argument or 1). A results directory gives run ``run_index``'s
    ``params`` folder (``best`` or ``final``). The variant (``preset`` and the variant
    fields) comes from a leverjax folder's config, or is inferred from a torch file's parameter names;
    ``selector`` (a preset name) checks a torch file against that preset instead.
    """
    if not os.path.exists(path):
        raise LeverjaxError(f"no checkpoint at {path} (expected a leverjax folder or a .pt/.ckpt file)")
    if os.path.isdir(path):
        from leverjax.run.checkpoint import load_params, resolve_params_folder

        path, run_index = resolve_params_folder(path, run_index, params)
        params, meta = load_params(path)
        cfg_in = dict(meta.get("config") or {})
        flat = _select_run(params, run_index, path, meta.get("runs"))
        params = _unflatten({k: np.asarray(v, np.float32) for k, v in flat.items()})
        shape_cfg = params_config(params)
        cfg = {**shape_cfg, "source": "leverjax"}
        for f in SELECTOR_FIELDS:
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
            cfg.update({f: getattr(sc, f) for f in VARIANT_FIELDS}, preset=cfg_in["selector"])
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
           + VARIANT_FIELDS}
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
    fields = SELECTOR_FIELDS + VARIANT_FIELDS
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
    want = {k: tuple(v.shape) for k, v in flatten(expected).items()}
    have = {k: tuple(np.shape(v)) for k, v in flatten(params).items()}
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
    cfg = config if isinstance(config, Mapping) else {f: getattr(config, f) for f in SELECTOR_FIELDS
                                                      + VARIANT_FIELDS if hasattr(config, f)}
    shape = params_config(params)
    seen = {k: shape[k] for k in ("hidden", "num_layers", "gated")}
    if shape["preset"] not in ("v4_1", "v2"):  # the names decide the variant (the config may lack its axes)
        seen.update({f: shape[f] for f in VARIANT_FIELDS if f not in ("mmr_reduction", "top_m", "refine_outside")})
        if shape["update"] == "mix" and cfg.get("update") == "none":
            seen["update"] = "none"
    sc = selector_config_from({**cfg, **seen})
    model_config = {
        "d_model": shape["dim"], "K": int(pool_size), "shot_num": int(shot_num), "label_smoothing": 0.0,
        "dropout": float(sc.dropout), "hidden_dim": sc.hidden, "num_heads": sc.num_heads,
        "attn_dropout": float(sc.attn_dropout), "num_layers": sc.num_layers, "enable_rce": False,
        "enable_grpo": False, "temperature": float(sc.temperature),
    }
    preset = preset_name({f: getattr(sc, f) for f in VARIANT_FIELDS} | {"update": sc.state_update})
    record = {"dim": shape["dim"], **{f: getattr(sc, f) for f in SELECTOR_FIELDS + VARIANT_FIELDS},
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
    return {**cfg, **{f: getattr(sc, f) for f in SELECTOR_FIELDS}, "num_heads_known": known}


def config_fields(sc, preset: str = "custom") -> dict:
    """The run-config fields (:class:`leverjax.core.config.Config`) that give ``sc``; raises if the config
    cannot express it (topic, DPP or slot sizes other than the presets')."""
    from leverjax.core.model import SelectorConfig

    base = SelectorConfig()
    for f in ("num_topics", "dpp_rank", "num_slot_layers", "slot_rows"):
        if getattr(sc, f) != getattr(base, f):
            raise LeverjaxError(f"{f}={getattr(sc, f)} cannot be set in a run config (the presets use "
                                f"{getattr(base, f)})")
    out = {f: getattr(sc, f) for f in SELECTOR_FIELDS}
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
    from absl import flags

    from leverjax import command as command_lib

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

    def main(argv: list[str]) -> None:
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

    command_lib.run(main, command="python -m leverjax.tools.interop", positional=("command",),
                    about="export: a leverjax selector as the original's .pt; import: a .pt as a leverjax parameter "
                          "folder; inspect: what a checkpoint holds.")


if __name__ == "__main__":
    _cli()
