"""Interop with the PyTorch original: import, export, --init_from and the scoring command.

The PyTorch side is :mod:`tests.torch_reference`, a transcription of docs/reference.md §3 with the
original's parameter names; torch is an optional dependency, so these tests skip without it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from leverjax.core.model import Selector, SelectorConfig, init_params  # noqa: E402
from leverjax.errors import ConfigError, LeverjaxError  # noqa: E402
from leverjax.run.checkpoint import save_params  # noqa: E402
from leverjax.tools import interop  # noqa: E402
from leverjax.tools import state_dict  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from original.torch_reference import TorchPointerSelector, randomize_  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable


def _module(d=24, h=16, layers=1, heads=1, gated=True, seed=0):
    return randomize_(TorchPointerSelector(d, h, layers, heads, gated=gated), seed=seed).eval()


def _inputs(d, b=3, k=7, m=4, s=3, seed=0):
    """Random queries, pools with padded slots and trajectories with padded rows."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, d)).astype(np.float32)
    c = rng.normal(size=(b, k, d)).astype(np.float32)
    mask = np.ones((b, k), bool)
    mask[1, k - 2:] = False
    mask[2, k - 1:] = False
    traj = np.stack([np.stack([rng.permutation(int(mask[i].sum()))[:s] for _ in range(m)]) for i in range(b)])
    traj = traj.astype(np.int32)
    traj[0, m - 1] = -1
    traj[2, m - 2:] = -1
    return q, c, mask, traj


def _torch_step_logp(module, q, c, mask, traj):
    """Per-step log-probs ``[B, M, S, K]`` of the valid trajectories (padded rows scored as zeros)."""
    b, m, s = traj.shape
    labels = torch.from_numpy(np.maximum(traj, 0).reshape(b * m, s)).long()
    with torch.no_grad():
        out = module(torch.from_numpy(q).repeat_interleave(m, 0), torch.from_numpy(c).repeat_interleave(m, 0),
                     labels, torch.from_numpy(mask).repeat_interleave(m, 0))
    return out.numpy().reshape(b, m, s, -1)


def _jax(params):
    return jax.tree_util.tree_map(jnp.asarray, params)


# -- names and the round trip ------------------------------------------------------------------
def test_import_does_not_import_torch():
    code = "import sys, leverjax.tools.interop, leverjax.tools.score; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([PY, "-c", code], cwd=REPO, check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("d, layers, gated", [(24, 2, True), (16, 1, False)])
def test_torch_names_are_the_reference_module_names(d, layers, gated):
    module = _module(d=d, h=16, layers=layers, gated=gated)
    sc = SelectorConfig(hidden=16, num_layers=layers, update="gate" if gated else "none")
    shapes = state_dict.expected_torch_shapes(sc, d, input_proj=d != 16)
    names = list(shapes)
    assert list(module.state_dict()) == names
    assert shapes == {k: tuple(v.shape) for k, v in module.state_dict().items()}
    for k in names:
        assert state_dict.torch_name(state_dict.flax_name(k)) == k


@pytest.mark.parametrize("d", [24, 16])
def test_torch_to_leverjax_to_torch_is_bit_exact(d):
    module = _module(d=d, h=16, layers=2, heads=2, gated=True)
    sd = module.state_dict()
    params, cfg = state_dict.torch_state_dict_to_params(sd, num_heads=2)
    assert {k: cfg[k] for k in ("dim", "hidden", "num_layers", "num_heads", "gated", "left_out", "preset")} == {
        "dim": d, "hidden": 16, "num_layers": 2, "num_heads": 2, "gated": True, "left_out": [], "preset": "v4_1"}
    ref = jax.eval_shape(lambda: init_params(SelectorConfig(hidden=16, num_layers=2, num_heads=2),
                                             jax.random.PRNGKey(0), d))
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(ref)
    back = state_dict.params_to_torch_state_dict(params)
    assert list(back) == list(sd)
    for k in sd:
        assert back[k].dtype == torch.float32 and torch.equal(back[k], sd[k]), k
    fresh = TorchPointerSelector(d, 16, 2, 2, gated=True)
    fresh.load_state_dict(back, strict=True)


def test_leverjax_export_import_is_bit_exact(tmp_path):
    sc = SelectorConfig(hidden=16, num_layers=2, num_heads=2, gated=True, temperature=0.2)
    params = init_params(sc, jax.random.PRNGKey(3), 24)
    params = jax.tree_util.tree_map(lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(1), x.shape), params)
    path = str(tmp_path / "sel.pt")
    interop.export_pt(params, sc, path)
    back, cfg = interop.load_checkpoint(path)
    assert cfg["num_heads"] == 2 and cfg["num_heads_known"] and cfg["temperature"] == 0.2 and cfg["gated"]
    for (ka, a), (kb, b) in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves_with_path(back)):
        assert ka == kb and np.array_equal(np.asarray(a), b), ka


# -- numerical equivalence with the PyTorch module --------------------------------------------
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("heads", [1, 2])
def test_log_probs_and_greedy_match_torch(layers, gated, heads):
    d = 16 if (layers, heads) == (2, 2) else 24  # one square case: input_proj is nn.Identity
    module = _module(d=d, h=16, layers=layers, heads=heads, gated=gated, seed=layers * 10 + heads)
    params, cfg = state_dict.torch_state_dict_to_params(module.state_dict(), num_heads=heads)
    selector = Selector(interop.selector_config_from(cfg))
    q, c, mask, traj = _inputs(d, seed=heads)
    valid = traj[..., 0] >= 0

    step = np.asarray(selector.step_log_probs(_jax(params), q, c, mask, traj))
    ref_step = _torch_step_logp(module, q, c, mask, traj)
    slots = valid[:, :, None, None] & mask[:, None, None, :]
    np.testing.assert_allclose(step[np.broadcast_to(slots, step.shape)],
                               ref_step[np.broadcast_to(slots, ref_step.shape)], rtol=1e-5, atol=1e-6)

    logp = np.asarray(selector.log_probs(_jax(params), q, c, mask, traj))
    ref = np.take_along_axis(ref_step, np.maximum(traj, 0)[..., None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(logp[valid], ref[valid], rtol=1e-5)
    assert np.all(logp[~valid] == 0.0)

    picks = np.asarray(selector.greedy(_jax(params), q, c, mask, 4))
    with torch.no_grad():
        ref_picks = module.greedy(torch.from_numpy(q), torch.from_numpy(c), 4, torch.from_numpy(mask)).numpy()
    np.testing.assert_array_equal(picks, ref_picks)


# -- checkpoint layouts and errors -------------------------------------------------------------
def test_lightning_checkpoint_with_prefixes_and_old_naming_imports(tmp_path):
    module = _module(d=24, h=16, layers=1, heads=2, gated=True, seed=5)
    sd = module.state_dict()
    old = {k.replace("cross_attn_layers.0.", "cross_attn.").replace("attn_norms.0.", "attn_norm."): v
           for k, v in sd.items()}
    lightning = {f"lever_lm.pointer_selector.{k}": v for k, v in old.items()}
    lightning["lever_lm.img_model.visual.weight"] = torch.zeros(3, 3)  # the adapter's encoder: not ours
    path = str(tmp_path / "epoch=3.ckpt")
    torch.save({"state_dict": lightning, "epoch": 3,
                "hyper_parameters": {"lr": 1e-4, "cfg": {"lever_lm": {"num_heads": 2, "hidden_dim": 16}}}}, path)
    params, cfg = interop.load_checkpoint(path)
    assert cfg["layout"] == "lightning" and cfg["num_heads"] == 2 and cfg["num_heads_known"] and cfg["left_out"] == 1
    expected, _ = state_dict.torch_state_dict_to_params(sd, num_heads=2)
    for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(params)):
        assert np.array_equal(a, b)
    # A bare state dict and a v3 dict read the same parameters.
    torch.save(sd, str(tmp_path / "bare.pt"))
    torch.save({"model_state_dict": sd, "model_config": {"d_model": 24, "hidden_dim": 16, "num_heads": 2}},
               str(tmp_path / "v3.pt"))
    for name, layout in (("bare.pt", "state_dict"), ("v3.pt", "v3")):
        p, c = interop.load_checkpoint(str(tmp_path / name))
        assert c["layout"] == layout
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(expected),
                                                          jax.tree_util.tree_leaves(p)))


class _Hparams:
    """A config object of a package that will be missing when the checkpoint is read."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_lightning_checkpoint_with_unimportable_hyper_parameters(tmp_path):
    import types

    mod = types.ModuleType("fake_lightning_pkg")
    cls = type("AttributeDict", (_Hparams,), {"__module__": "fake_lightning_pkg"})
    node = type("AnyNode", (_Hparams,), {"__module__": "fake_lightning_pkg"})  # omegaconf keeps values in _val
    mod.AttributeDict, mod.AnyNode = cls, node
    sys.modules["fake_lightning_pkg"] = mod
    try:
        module = _module(d=24, h=16, heads=2)
        path = str(tmp_path / "last.ckpt")
        model_cfg = cls(_content={"num_heads": node(_val=2), "hidden_dim": node(_val=16)}, _parent=None)
        torch.save({"state_dict": {f"lever_lm.pointer_selector.{k}": v for k, v in module.state_dict().items()},
                    "hyper_parameters": cls(vision={"num_heads": 8}, model=model_cfg)}, path)
    finally:
        del sys.modules["fake_lightning_pkg"]
    _, cfg = interop.load_checkpoint(path)
    assert cfg["num_heads"] == 2 and cfg["num_heads_known"]


def test_wrong_shape_missing_and_unexpected_keys_are_named():
    sd = dict(_module(d=24, h=16, layers=2).state_dict())
    bad = {**sd, "cand_proj.weight": torch.zeros(16, 17)}
    with pytest.raises(LeverjaxError, match=r"cand_proj\.weight has shape \(16, 17\) but the selector needs \(16, 16"):
        state_dict.torch_state_dict_to_params(bad)
    bad = {k: v for k, v in sd.items() if k != "attn_norms.1.bias"}
    with pytest.raises(LeverjaxError, match=r"missing keys: attn_norms\.1\.bias"):
        state_dict.torch_state_dict_to_params(bad)
    bad = {**sd, "decoder_gru.weight_ih": torch.zeros(3, 3)}
    with pytest.raises(LeverjaxError, match=r"unexpected keys: decoder_gru\.weight_ih"):
        state_dict.torch_state_dict_to_params(bad)
    bad = {**sd, "query_update_gate.weight": torch.zeros(16, 16)}
    with pytest.raises(LeverjaxError, match=r"query_update_gate\.weight has shape \(16, 16\)"):
        state_dict.torch_state_dict_to_params(bad)


def test_wrong_shape_in_a_file_is_named(tmp_path):
    sd = dict(_module().state_dict())
    sd["cross_attn_layers.0.in_proj_bias"] = torch.zeros(47)
    path = str(tmp_path / "bad.pt")
    torch.save({"model_state_dict": sd}, path)
    with pytest.raises(LeverjaxError, match=r"bad\.pt.*cross_attn_layers\.0\.in_proj_bias has shape \(47,\)"):
        interop.load_selector_params(path, SelectorConfig(hidden=16), dim=24)


# -- export --------------------------------------------------------------------------------------
def test_export_is_what_the_original_loads(tmp_path):
    module = _module(d=24, h=16, layers=2, heads=2, gated=True, seed=2)
    params, cfg = state_dict.torch_state_dict_to_params(module.state_dict(), num_heads=2)
    path = str(tmp_path / "out" / "selector.pt")
    interop.export_pt(params, {**cfg, "dropout": 0.5, "attn_dropout": 0.1}, path, pool_size=7, shot_num=2)
    ckpt = torch.load(path, weights_only=True)  # plain tensors and Python values only
    mc = ckpt["model_config"]
    assert mc == {"d_model": 24, "K": 7, "shot_num": 2, "label_smoothing": 0.0, "dropout": 0.5, "hidden_dim": 16,
                  "num_heads": 2, "attn_dropout": 0.1, "num_layers": 2, "enable_rce": False, "enable_grpo": False,
                  "temperature": 0.1}
    assert ckpt["leverjax"]["gated"] is True
    kwargs = {k: mc[k] for k in ("d_model", "hidden_dim", "num_layers", "num_heads", "dropout", "attn_dropout")}
    twin = TorchPointerSelector(**kwargs, gated=ckpt["leverjax"]["gated"])
    twin.load_state_dict(ckpt["model_state_dict"], strict=True)
    for k, v in module.state_dict().items():
        assert torch.equal(twin.state_dict()[k], v)
    with open(tmp_path / "out" / "selector.json") as f:
        assert json.load(f)["model_config"] == mc


def test_square_input_projection_export():
    sc = SelectorConfig(hidden=16)
    params = init_params(sc, jax.random.PRNGKey(0), 16)  # identity input_proj
    assert "input_proj.weight" not in state_dict.params_to_torch_state_dict(params)
    trained = {**params, "input_proj": {"kernel": params["input_proj"]["kernel"] * 1.01}}
    with pytest.raises(LeverjaxError, match="nn.Identity"):
        state_dict.params_to_torch_state_dict(trained)
    assert "input_proj.weight" in state_dict.params_to_torch_state_dict(trained, square_input_proj="keep")


def test_missing_torch_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(LeverjaxError, match="pip install torch"):
        state_dict.require_torch("exporting to PyTorch")
    params = init_params(SelectorConfig(hidden=16), jax.random.PRNGKey(0), 24)
    with pytest.raises(LeverjaxError, match="pip install torch"):
        interop.export_pt(params, SelectorConfig(hidden=16), "/nonexistent/x.pt")


# -- leverjax folders and --init_from ----------------------------------------------------------
def _grid_folder(tmp_path, runs=3, sc=SelectorConfig(hidden=16, num_layers=1, num_heads=2), dim=24):
    from leverjax.core import config as config_lib

    per_run = [init_params(sc, jax.random.PRNGKey(i), dim) for i in range(runs)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_run)
    cfg = config_lib.replace(config_lib.Config(), {"hidden": sc.hidden, "num_layers": sc.num_layers,
                                                   "num_heads": sc.num_heads, "gated": sc.gated})
    path = str(tmp_path / "exp" / "best")
    save_params(path, stacked, {"config": config_lib.to_dict(cfg),
                                "runs": [{"label": f"seed={i}", "sweep": {}, "seed": i} for i in range(runs)]})
    return path, per_run


def test_load_selector_params_from_a_vmapped_folder(tmp_path):
    sc = SelectorConfig(hidden=16, num_layers=1, num_heads=2)
    path, per_run = _grid_folder(tmp_path, sc=sc)
    got = interop.load_selector_params(path, sc, dim=24, run_index=1)
    for a, b in zip(jax.tree_util.tree_leaves(per_run[1]), jax.tree_util.tree_leaves(got)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(LeverjaxError, match=r"--run=3 is out of range: .* holds 3 run\(s\), numbered 0\.\.2"):
        interop.load_selector_params(path, sc, dim=24, run_index=3)
    with pytest.raises(LeverjaxError, match=r"input_proj/kernel \(torch input_proj\.weight\) has shape \(24, 16\) "
                                            r"but the run needs \(32, 16\)"):
        interop.load_selector_params(path, sc, dim=32)
    with pytest.raises(LeverjaxError, match=r"query_update_gate/kernel .* is not a parameter"):
        interop.load_selector_params(path, SelectorConfig(hidden=16, num_heads=2, gated=False), dim=24)
    with pytest.raises(LeverjaxError, match=r"num_heads=2 but the run has num_heads=1"):
        interop.load_selector_params(path, SelectorConfig(hidden=16, num_heads=1), dim=24)
    # Export one run of the grid, as the CLI does.
    params, cfg = interop.load_checkpoint(path, run_index=2)
    out = str(tmp_path / "run2.pt")
    interop.export_pt(params, cfg, out)
    sd = torch.load(out, weights_only=True)["model_state_dict"]
    np.testing.assert_array_equal(sd["query_proj.weight"].numpy(), np.asarray(per_run[2]["query_proj"]["kernel"]).T)


def test_runner_init_from_a_torch_checkpoint(tmp_path):
    from leverjax.core import config as config_lib
    from leverjax.data import make_synthetic
    from leverjax.run.engine import Runner, expand_runs

    ds = make_synthetic(num_examples=120, num_queries=20, num_test_queries=5, pool_size=8, max_trajectories=5,
                        min_trajectories=3, dim=24, latent_dim=4, num_clusters=3)
    cfg = config_lib.replace(config_lib.Config(), {"hidden": 16, "num_heads": 2, "sft_epochs": 1, "rce_epochs": 0,
                                                   "grpo_epochs": 0})
    module = _module(d=24, h=16, heads=2)
    path = str(tmp_path / "sft.pt")
    torch.save({"model_state_dict": module.state_dict(), "model_config": {"num_heads": 2}}, path)
    with pytest.raises(ConfigError, match="needs a parameter reader"):  # the engine reads no torch file itself
        Runner(cfg, ds, expand_runs({}, 0, 1)).init_from(path)
    runner = Runner(cfg, ds, expand_runs({}, 0, 2), load_init=interop.load_selector_params)
    runner.init_from(path)
    sd = state_dict.params_to_torch_state_dict(jax.device_get(runner._init_params))
    assert all(torch.equal(sd[k], v) for k, v in module.state_dict().items())
    wrong = config_lib.replace(cfg, {"num_layers": 2})
    with pytest.raises(LeverjaxError, match=r"cross_attn_layers_1/in_proj_weight .* is missing"):
        Runner(wrong, ds, expand_runs({}, 0, 1), load_init=interop.load_selector_params).init_from(path)


# -- scoring -----------------------------------------------------------------------------------
def _padded_data(tmp_path):
    from leverjax.data import dataset_from_arrays, dataset_to_arrays, make_synthetic, save_npz

    ds = make_synthetic(num_examples=150, num_queries=12, num_test_queries=3, pool_size=8, max_trajectories=5,
                        min_trajectories=3, dim=24, latent_dim=4, num_clusters=3)
    a = dataset_to_arrays(ds)
    a["pool_ids"][0, 5:] = -1  # query 0 has 5 candidates: greedy shots past 5 are -1
    a["traj"][0][(a["traj"][0] >= 5).any(-1)] = -1
    a["pool_ids"][1, 3:] = -1
    a["traj"][1][(a["traj"][1] >= 3).any(-1)] = -1
    a["traj"][2, -1] = -1
    if not (a["traj"][1, :, 0] >= 0).any():
        a["traj"][1, 0] = [0, 1]
    ds = dataset_from_arrays(a, source="test")
    path = str(tmp_path / "data.npz")
    save_npz(ds, path)
    return ds, path


def test_score_file_matches_torch(tmp_path):
    from leverjax.tools.score import score_file

    ds, data = _padded_data(tmp_path)
    module = _module(d=24, h=16, layers=1, heads=2, gated=True, seed=7)
    ckpt = str(tmp_path / "sel.pt")
    torch.save({"model_state_dict": module.state_dict(), "model_config": {"num_heads": 2}}, ckpt)
    out = str(tmp_path / "scores.npz")
    score_file(ckpt, data, out, shots=6, chunk=4)
    with np.load(out) as f:
        res = {k: f[k] for k in f.files}
    q, m = ds.traj.shape[:2]
    assert res["logp"].shape == (q, m) and res["greedy"].shape == (q, 6)
    assert np.array_equal(np.isnan(res["logp"]), ~ds.traj_mask)
    np.testing.assert_array_equal(res["query_ids"], ds.query_ids)
    assert json.loads(str(res["meta"]))["selector"]["num_heads"] == 2

    emb = ds.emb
    qe, ce, mask = emb[ds.query_ids], emb[np.maximum(ds.pool_ids, 0)], ds.pool_ids >= 0
    ref_step = _torch_step_logp(module, qe, ce, mask, ds.traj)
    ref = np.take_along_axis(ref_step, np.maximum(ds.traj, 0)[..., None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(res["logp"][ds.traj_mask], ref[ds.traj_mask], rtol=1e-5)
    with torch.no_grad():
        pos = module.greedy(torch.from_numpy(qe), torch.from_numpy(ce), 6, torch.from_numpy(mask)).numpy()
    valid = mask.sum(1)
    beyond = np.arange(6)[None] >= valid[:, None]
    np.testing.assert_array_equal(res["greedy_pos"], np.where(beyond, -1, pos))
    np.testing.assert_array_equal(res["greedy"], np.where(beyond, -1, np.take_along_axis(ds.pool_ids, pos, 1)))
    assert (res["greedy"][0, 5:] == -1).all() and (res["greedy"][0, :5] >= 0).all()

    # The same selector imported into a leverjax folder scores identically.
    folder = str(tmp_path / "imported" / "best")
    interop.import_to_folder(ckpt, folder)
    out2 = str(tmp_path / "scores2.npz")
    score_file(folder, data, out2, shots=6, chunk=16)
    with np.load(out2) as f:
        np.testing.assert_array_equal(f["greedy"], res["greedy"])
        np.testing.assert_allclose(f["logp"], res["logp"], rtol=1e-6)
    with pytest.raises(LeverjaxError, match="d=24 .* takes d=32"):
        torch.save({"model_state_dict": _module(d=32, h=16).state_dict()}, str(tmp_path / "d32.pt"))
        score_file(str(tmp_path / "d32.pt"), data, str(tmp_path / "x.npz"))


def test_command_lines(tmp_path):
    _, data = _padded_data(tmp_path)
    path, _ = _grid_folder(tmp_path, runs=2)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = str(tmp_path / "sel.pt")
    script = (
        f"python -m leverjax.tools.interop export --checkpoint={path} --run=1 --out={out} --K=8 && "
        f"python -m leverjax.tools.score --checkpoint={out} --data={data} --out={tmp_path}/s.npz --shots=4 && "
        f"python -m leverjax.tools.interop exprot --checkpoint={path} --out={out}; echo rc=$?")
    res = subprocess.run(["bash", "-c", script.replace("python ", f"{PY} ")], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert "exported" in res.stdout and "wrote" in res.stdout, res.stdout + res.stderr
    assert "scored 15 queries" in res.stdout, res.stdout + res.stderr
    assert "error: usage: python -m leverjax.tools.interop {export|import|inspect}" in res.stderr, res.stderr
    assert "rc=2" in res.stdout
    assert "Traceback" not in res.stderr
    with np.load(f"{tmp_path}/s.npz") as f:
        assert f["greedy"].shape == (15, 4)
