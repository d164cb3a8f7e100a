"""The batch launcher on a tiny synthetic set: grid expansion and grouping, vmapped == sequential runs,
4 forced host devices == 1 device, resume after an interrupted launcher, a failing run isolated.

Compilation dominates the cost, so every trained grid here uses one static config (the engine tests'
tiny scheme5_6, so the persistent compilation cache shares programs with tests/test_train.py) with
1 or 2 runs per program."""
import csv
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import require_optional  # tests/: LEVERJAX_REQUIRE_OPTIONAL

from leverjax.core import config as config_lib
from leverjax.data import synth
from leverjax.errors import ConfigError
from leverjax.report.markdown import write_report
from leverjax.run import checkpoint, console
from leverjax.run import grid as grid_lib
from leverjax.run import launch
from leverjax.run import registry as experiments
from leverjax.run import results
from leverjax.run.engine import Runner, run_hyperparameters

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(hidden=16, sft_epochs=2, rce_epochs=2, grpo_epochs=2, sft_batch_size=16, rce_batch_size=8,
            grpo_batch_size=8, eval_chunk=64, eval_shots=3)
NO_GRPO = {"rce_only": {"grpo_epochs": 0}}
SYNTH = dict(seed=0, num_examples=300, num_queries=60, pool_size=8, max_trajectories=6, dim=16)


@pytest.fixture(scope="module")
def tiny():
    return synth.make_synthetic(**SYNTH)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def finals(rows):
    """(run, seed) -> metric -> value of the final test metrics."""
    out = {}
    for r in rows:
        if r["phase"] == "final":
            out.setdefault((r["variant"], int(r["seed"])), {})[r["metric"]] = float(r["value"])
    return out


def status(directory, name):
    with open(os.path.join(directory, "status", checkpoint.status_file_name(name))) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def grid_a(tiny, tmp_path_factory):
    """rce_only (1 run) and scheme5 + scheme5_6 (one program, 2 runs), trained once without interruption."""
    out = str(tmp_path_factory.mktemp("grid_a"))
    lines = []
    result = launch.run_grid(["rce_only", "scheme5", "scheme5_6"], TINY, seeds=1, out=out, dataset=tiny,
                             experiment_overrides=NO_GRPO, printer=lines.append, workers=1, report=write_report)
    return result, lines


# -- expansion and grouping (no training) ---------------------------------------------------------


def test_full_registry_groups_runs_that_differ_only_in_sweepable_fields():
    grid = grid_lib.expand_grid(experiments.SCHEMES, seeds=2)
    assert len(grid.runs) == 2 * (len(experiments.SCHEMES) + 2)  # scheme2 sweeps three β values
    groups = sorted(sorted(g.experiments) for g in grid.groups)
    assert groups == sorted([
        ["rce_only"], ["current", "scheme1", "scheme2", "scheme6"], ["scheme3"], ["scheme4"],
        ["scheme5", "scheme5_6"], ["scheme7"], ["scheme7_1", "scheme7_2"], ["scheme8"], ["scheme5_8"],
        ["scheme9"], ["scheme10"], ["scheme5_6_fixed"]])
    for group in grid.groups:
        assert len({config_lib.static_signature(r.config) for r in group.runs}) == 1
        specs = grid_lib.run_specs(group.runs[0].config, group.runs)
        hp = run_hyperparameters(group.runs[0].config, specs)
        for j, run in enumerate(group.runs):  # every run gets its own sweepable values in the shared program
            own = config_lib.hyperparameters(run.config)
            assert {k: float(v[j]) for k, v in hp.items()} == pytest.approx(own, rel=1e-6)
            assert specs[j].seed == run.seed
    scheme2 = [r for r in grid.runs if r.experiment == "scheme2"]
    assert sorted({r.variant for r in scheme2}) == ["scheme2[kl_beta=0.05]", "scheme2[kl_beta=0.12]",
                                                     "scheme2[kl_beta=0.15]"]
    assert {r.seed for r in scheme2} == {0, 1}


def test_sweeps_merge_and_bad_values_fail_only_their_runs():
    sweep = {"kl_beta": (0.2,), "adv_min_std": (0.3, -1.0)}
    grid = grid_lib.expand_grid(["scheme2", "scheme5"], {"grpo_lr": 1e-4}, sweep, seeds=3)
    variants = {r.variant for r in grid.runs}  # the command line's kl_beta replaces scheme2's own sweep
    assert variants == {f"{e}[kl_beta=0.2,adv_min_std={v}]" for e in ("scheme2", "scheme5") for v in ("0.3", "-1")}
    good = [r for r in grid.runs if r.config is not None]
    bad = [r for r in grid.runs if r.config is None]
    assert len(good) == len(bad) == 6 and all("adv_min_std=-1.0 must be positive" in r.error for r in bad)
    assert all(r.config.grpo_lr == 1e-4 and r.config.kl_beta == 0.2 and r.config.adv_min_std == 0.3 for r in good)
    assert {r.seed for r in good} == {0, 1, 2}
    assert len(grid.groups) == 2 and all(r in grid.groups[0].runs or r in grid.groups[1].runs for r in good)
    with pytest.raises(ConfigError, match="not a config field that can be swept"):
        grid_lib.expand_grid(["current"], sweep={"seed": (1, 2)})
    static = grid_lib.expand_grid(["current"], sweep={"hidden": (16, 32), "kl_beta": (0.1, 0.2)}, seeds=2)
    assert len(static.groups) == 2 and all(len(g.runs) == 4 for g in static.groups)
    assert {r.variant for r in static.runs} == {f"current[hidden={h},kl_beta={b}]" for h in (16, 32) for b in (0.1, 0.2)}
    with pytest.raises(ConfigError, match="unknown experiment"):
        grid_lib.expand_grid(["current", "scheme99"])
    bad_override = grid_lib.expand_grid(["rce_only", "current"], {"grpo_epochs": 2}, seeds=1)
    assert any("replaces rce_only's own grpo_epochs=0" in n for n in bad_override.notes)
    assert grid_lib.default_out(["a", "b"]) == os.path.join("results", "a+b")
    assert grid_lib.default_out(experiments.NAMES, {"seeds": 5}) == os.path.join("results", "all")
    assert grid_lib.default_out(experiments.SCHEMES[::-1]) == os.path.join("results", "schemes")
    assert grid_lib.default_out(["a"], {"grpo_lr": 1e-4}) != grid_lib.default_out(["a"], {"grpo_lr": 2e-4})


# -- training ---------------------------------------------------------------------------------------


def test_grid_writes_its_results_directory(grid_a):
    result, lines = grid_a
    d = result.directory
    assert [g["runs"] for g in result.groups] == [1, 2]
    rows = read_csv(os.path.join(d, "metrics.csv"))
    assert list(rows[0]) == list(results.CSV_COLUMNS)
    assert {(r["group"], r["variant"]) for r in rows} == {("g01", "rce_only"), ("g02", "scheme5"), ("g02", "scheme5_6")}
    epochs = {(r["variant"], r["phase"], r["epoch"]) for r in rows if r["metric"] == "val_expected_reward"}
    assert len([e for e in epochs if e[0] == "scheme5"]) == 6 and len([e for e in epochs if e[0] == "rce_only"]) == 4
    for name in ("rce_only/seed=0", "scheme5/seed=0", "scheme5_6/seed=0"):
        st = status(d, name)
        assert st["state"] == "done"
        assert os.path.isdir(os.path.join(d, st["directory"], "best"))
        assert not os.path.exists(os.path.join(d, st["directory"], "ckpt"))  # only needed to resume
    report = open(os.path.join(d, "report.md")).read()
    assert "baseline **rce_only**" in report and "scheme5_6" in report
    for section in ("## Summary", "## Runs", "*random selection*", "*oracle greedy (ceiling)*", "## Provenance",
                    "## What the metrics measure"):
        assert section in report, section
    assert "GRPO lr 5e-5" in report  # the legend says what scheme5_6 changes
    pngs = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", report)  # plots by default, one per figure type
    assert {"plots/forest.png", "plots/overview_val_oracle_acc_mean.png", "plots/curves_scheme5_6.png"} <= set(pngs)
    for rel in pngs:
        with open(os.path.join(d, rel), "rb") as f:
            head = f.read(24)
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and min(struct.unpack(">II", head[16:24])) >= 200
    # provenance in the results' JSON: the command, the code, versions, devices, the data, the date
    with open(os.path.join(d, "grid.json")) as f:
        prov = json.load(f)["provenance"]
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert prov["git"]["commit"] == head and isinstance(prov["git"]["dirty"], bool)
    assert prov["versions"]["jax"] and prov["versions"]["flax"] and prov["versions"]["orbax-checkpoint"]
    assert prov["devices"]["count"] >= 1 and prov["command"] and prov["date"]
    # the reference selections, computed from the data set once
    with open(os.path.join(d, "baselines.json")) as f:
        refs = json.load(f)["sets"]
    assert len(refs) == 1 and set(refs[0]["splits"]) == {"val", "test"}
    assert set(refs[0]["splits"]["test"]["oracle"]) == {"random", "random_all", "similarity", "best_labelled",
                                                               "oracle_greedy"}
    # TensorBoard: every run's per-epoch metrics, tagged by phase, equal to the CSV's
    from leverjax.run import tracking

    for run in ("rce_only", "scheme5", "scheme5_6"):
        events = tracking.read_scalars(os.path.join(d, "tb", run, "seed=0"))
        csv_vals = [(r["phase"], float(r["value"])) for r in rows  # the CSV lists epochs in training order
                    if r["variant"] == run and r["metric"] == "val_expected_reward"]
        tb_vals = sorted((step, tag.split("/")[0], v) for tag, pts in events.items()
                         if tag.endswith("/val_expected_reward") for step, v in pts)
        assert [s for s, _, _ in tb_vals] == list(range(1, len(csv_vals) + 1))  # step = epoch over all phases
        assert [p for _, p, _ in tb_vals] == [p for p, _ in csv_vals]
        assert [v for _, _, v in tb_vals] == pytest.approx([v for _, v in csv_vals], rel=1e-6)
        assert "final/test_loss" in events
    assert any("group g02" in line and "2 run(s) in one program" in line for line in lines)
    assert any(line.startswith("»» grid: group 2/2") and "runs done 1/3" in line for line in lines)
    assert not [f for _, _, fs in os.walk(d) for f in fs if f.endswith(".tmp")]


def test_vmapped_group_equals_sequential_runs(grid_a, tiny):
    result, _ = grid_a
    grouped = finals(read_csv(result.csv))
    for name in ("scheme5", "scheme5_6"):
        cfg = config_lib.replace(experiments.get(name).config, TINY)
        run = next(r for r in result.grid.runs if r.experiment == name)
        res = Runner(cfg, tiny, grid_lib.run_specs(cfg, [run]), out=lambda s: None).run()
        for k, v in res.final[0].items():
            if k.startswith(("test_", "best_test_")):
                np.testing.assert_allclose(grouped[(name, 0)][k], v, rtol=2e-5, atol=2e-6, err_msg=f"{name} {k}")
    assert grouped[("scheme5", 0)]["test_loss"] != grouped[("scheme5_6", 0)]["test_loss"]  # lr really differs


def test_four_devices_equal_one_device(grid_a, tmp_path):
    """The same runs with the run axis sharded over 4 forced host devices (3 runs, padded to 4)."""
    result, _ = grid_a
    script = textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {ROOT!r})
        import jax
        jax.config.update("jax_compilation_cache_dir", os.environ["LEVERJAX_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        assert jax.device_count() == 4, jax.devices()
        from leverjax.run import launch
        from leverjax.run import grid as grid_lib
        from leverjax.data import synth
        from leverjax.run.engine import Runner
        ds = synth.make_synthetic(**{SYNTH!r})
        res = launch.run_grid(["scheme5_6"], {TINY!r}, {{"grpo_lr": (5e-6, 5e-5, 1e-4)}}, seeds=1,
                              out={str(tmp_path)!r}, dataset=ds, tables=False, report=False, printer=lambda s: None)
        group = res.grid.groups[0]
        runner = Runner(group.runs[0].config, ds, grid_lib.run_specs(group.runs[0].config, group.runs),
                        devices=jax.devices(), out=lambda s: None)
        state = runner.vp.init(runner.data, runner.hp, runner.keys)
        state = runner.vp.begin[0](state, runner.data, runner.hp)
        state, _ = runner.vp.epoch[0](state, jax.numpy.int32(0), runner.data, runner.hp)
        leaf = jax.tree_util.tree_leaves(state["params"])[0]
        print(json.dumps({{"padded": runner.num_padded, "devices": len(leaf.sharding.device_set),
                          "shard_rows": leaf.addressable_shards[0].data.shape[0]}}))
    """)
    env = {**os.environ, "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"padded": 4, "devices": 4, "shard_rows": 1}
    sharded = finals(read_csv(tmp_path / "metrics.csv"))
    assert len(sharded) == 3 and all("test_loss" in v for v in sharded.values())
    single = finals(read_csv(result.csv))
    for lr, name in (("5e-06", "scheme5"), ("5e-05", "scheme5_6")):
        got, want = sharded[(f"scheme5_6[grpo_lr={lr}]", 0)], single[(name, 0)]
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=2e-6, err_msg=f"{name} {k}")


def test_resume_after_interrupting_the_launcher(grid_a, tiny, tmp_path, monkeypatch):
    reference, _ = grid_a
    out = str(tmp_path / "grid")
    calls = {"n": 0}
    original = console.Progress.epoch

    def interrupted(self, group_id, info):
        original(self, group_id, info)
        calls["n"] += 1
        if calls["n"] == 4 + 2:  # rce_only's 4 epochs; the scheme5 group starts at GRPO from the SFT/RCE
            # prefix rce_only left in the cache, and is killed in its second (last) GRPO epoch, after the
            # first one's checkpoint
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(console.Progress, "epoch", interrupted)
    every_epoch = {**TINY, "checkpoint_seconds": 0.0}  # the tiny epochs take milliseconds
    with pytest.raises(KeyboardInterrupt):
        launch.run_grid(["rce_only", "scheme5", "scheme5_6"], every_epoch, seeds=1, out=out, dataset=tiny,
                        experiment_overrides=NO_GRPO, printer=lambda s: None, workers=1)
    monkeypatch.setattr(console.Progress, "epoch", original)
    assert status(out, "rce_only/seed=0")["state"] == "done"
    assert status(out, "scheme5/seed=0")["state"] == "running"
    assert {r["variant"] for r in read_csv(os.path.join(out, "metrics.csv"))} == {"rce_only"}
    with open(os.path.join(out, "metrics.csv"), "a") as f:  # a torn CSV must not be trusted by the re-run
        f.write("g02,scheme5,scheme5,0,grpo,1,val_loss,0.12")
    lines = []
    result = launch.run_grid(["rce_only", "scheme5", "scheme5_6"], every_epoch, seeds=1, out=out, dataset=tiny,
                             experiment_overrides=NO_GRPO, printer=lines.append, workers=1)
    assert any("1 of 3 runs already finished" in line for line in lines)
    assert any(line.startswith("resuming g02") and line.endswith("after grpo epoch 1") for line in lines)
    assert [g["state"] for g in result.groups] == ["skipped", "done"]
    assert open(result.csv).read() == open(reference.csv).read()


def test_a_diverging_run_and_a_bad_config_are_isolated(grid_a, tiny, tmp_path):
    lines = []
    result = launch.run_grid(["scheme5_6"], TINY, {"grpo_lr": (5e-5, 1e30), "adv_min_std": (0.1, -1.0)}, seeds=1,
                             out=str(tmp_path), dataset=tiny, printer=lines.append, report=write_report)
    states = {s["run"]: (s["state"], s.get("kind")) for s in result.statuses.values()}
    assert states == {
        "scheme5_6[grpo_lr=5e-05,adv_min_std=0.1]/seed=0": ("done", None),
        "scheme5_6[grpo_lr=1e+30,adv_min_std=0.1]/seed=0": ("failed", "diverged"),
        "scheme5_6[grpo_lr=5e-05,adv_min_std=-1]/seed=0": ("failed", "config"),
        "scheme5_6[grpo_lr=1e+30,adv_min_std=-1]/seed=0": ("failed", "config"),
    }
    diverged = next(s for s in result.statuses.values() if s.get("kind") == "diverged")
    assert diverged["failure"]["phase"] == "grpo" and "is nan" in diverged["reason"]
    rows = read_csv(result.csv)
    good = finals(rows)[("scheme5_6[grpo_lr=5e-05,adv_min_std=0.1]", 0)]
    reference = finals(read_csv(grid_a[0].csv))[("scheme5_6", 0)]
    for k in reference:  # the healthy run is untouched by its diverging neighbour
        np.testing.assert_allclose(good[k], reference[k], rtol=2e-5, atol=2e-6, err_msg=k)
    bad_rows = [r for r in rows if r["variant"].startswith("scheme5_6[grpo_lr=1e+30")]
    assert bad_rows and not [r for r in bad_rows if r["phase"] == "final"]
    report = open(result.report).read()
    assert "## Failed runs" in report and "diverged" in report and "must be positive" in report
    # A re-run does not retry runs that would fail again, and trains nothing.
    again = launch.run_grid(["scheme5_6"], TINY, {"grpo_lr": (5e-5, 1e30), "adv_min_std": (0.1, -1.0)}, seeds=1,
                            out=str(tmp_path), dataset=tiny, printer=lines.append)
    assert [g["state"] for g in again.groups] == ["skipped"]


def test_command_line_runs_a_grid(tmp_path, tiny):
    from leverjax.data import save_npz

    data = tmp_path / "tiny.npz"
    save_npz(tiny, str(data))
    out = tmp_path / "cli"
    flags = [f"--{k}={v}" for k, v in TINY.items()]
    cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--experiment=scheme5,scheme5_6", f"--data={data}",
           "--seeds=1", f"--out={out}", "--baseline=scheme5", *flags]
    try:  # W&B in its offline mode when it is installed (an optional dependency)
        import wandb  # noqa: F401
        wandb_flags = ["--wandb_project=leverjax-test"]
    except ImportError:
        if require_optional.required():  # CI (LEVERJAX_REQUIRE_OPTIONAL): wandb must be there and tested
            raise
        wandb_flags = []
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(cmd + wandb_flags, env=env, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert "report.md)" in proc.stdout
    if wandb_flags:
        assert len([f for f in os.listdir(out / "wandb") if f.startswith("offline-run-")]) == 2
    prov = json.loads((out / "grid.json").read_text())["provenance"]
    assert "run.py --experiment=scheme5,scheme5_6" in prov["command"]
    assert prov["data"] == [{"path": str(data), "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}]
    assert "baseline **scheme5**" in (out / "report.md").read_text()
    assert {r["variant"] for r in read_csv(out / "metrics.csv")} == {"scheme5", "scheme5_6"}
    bad = subprocess.run([*cmd[:-len(flags)], "--baseline=nope"], env={**os.environ, "JAX_PLATFORMS": "cpu"},
                         capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert bad.returncode == 2 and "not a run of this grid" in bad.stderr


def test_static_sweep_is_one_group_per_value_with_the_numbers_of_each_value_alone(tiny, tmp_path):
    """--sweep=selector=v4_1,v2: two compiled groups in one results directory; the v2 run's final metrics equal
    a run of that selector alone (the v4_1 group is grid_a's program, whose numbers the tests above check)."""
    small = TINY  # scheme5 with TINY is grid_a's program: only the v2 group compiles when both tests run
    result = launch.run_grid(["scheme5"], small, {"selector": ("v4_1", "v2")}, seeds=1, out=str(tmp_path / "g"),
                             dataset=tiny, report=False, printer=lambda s: None)
    assert len(result.grid.groups) == 2
    assert {g.runs[0].variant for g in result.grid.groups} == {"scheme5[selector=v4_1]", "scheme5[selector=v2]"}
    rows = read_csv(result.csv)
    grouped = {r["variant"].split("/")[0]: float(r["value"]) for r in rows
               if r["phase"] == "final" and r["metric"] == "test_loss"}
    cfg = config_lib.replace(experiments.get("scheme5").config, {**small, "selector": "v2"})
    run = next(r for r in result.grid.runs if dict(r.sweep)["selector"] == "v2")
    res = Runner(cfg, tiny, grid_lib.run_specs(cfg, [run]), out=lambda s: None).run()
    np.testing.assert_allclose(grouped["scheme5[selector=v2]"], res.final[0]["test_loss"], rtol=2e-5)
    assert grouped["scheme5[selector=v4_1]"] != grouped["scheme5[selector=v2]"]


def test_the_grid_releases_each_groups_compiled_programs(tiny, tmp_path, monkeypatch):
    """Every XLA CPU executable keeps its code mapped and a process may hold only vm.max_map_count
    mappings: a 31-group grid died in its 20th group. After each group the launcher drops the group's
    programs, so the mappings fall back instead of piling up."""
    from leverjax.run import engine as runner_lib

    seen = []

    def spy():
        maps = lambda: len(open("/proc/self/maps").readlines()) if os.path.exists("/proc/self/maps") else 0  # noqa: E731
        before = maps()
        runner_lib.release_compiled()
        seen.append((before, maps(), len(runner_lib._COMPILED)))

    monkeypatch.setattr(launch, "release_compiled", spy)
    result = launch.run_grid(["scheme5", "scheme3"], TINY, seeds=1, out=str(tmp_path), dataset=tiny,
                             printer=lambda s: None, workers=1)
    assert [g["state"] for g in result.groups] == ["done", "done"]
    assert len(seen) == 2 and all(left == 0 for _, _, left in seen)
    if os.path.exists("/proc/self/maps"):
        assert all(after < before for before, after, _ in seen), seen


# -- several groups at once (--workers) ------------------------------------------------------------


def test_two_workers_train_each_group_as_one_process_does(grid_a, tiny, tmp_path):
    """With workers=2 the groups train in two processes: scheme5's group waits for rce_only's, whose SFT/RCE
    prefix it reuses, and then trains beside scheme3's; every run's metrics equal grid_a's (one process)."""
    reference, _ = grid_a
    lines = []
    result = launch.run_grid(["rce_only", "scheme5", "scheme5_6", "scheme3"], TINY, seeds=1, out=str(tmp_path / "g"),
                             dataset=tiny, experiment_overrides=NO_GRPO, printer=lines.append, workers=2,
                             prefix_cache=str(tmp_path / "prefixes"), report=False)
    assert [g["state"] for g in result.groups] == ["done", "done", "done"]
    assert any("training up to 2 groups at once" in line for line in lines)
    assert any(line.startswith("[g02] reusing the sft, rce phases") for line in lines)
    assert any(line.startswith("[g03] reusing the sft, rce phases") for line in lines)
    assert any("(+1 more at once)" in line for line in lines)  # g02 and g03 side by side
    first = {g: next(i for i, line in enumerate(lines) if f"»» group {g} " in line) for g in ("g02", "g03")}
    g01_done = next(i for i, line in enumerate(lines) if line.startswith("»» group g01 done"))
    assert first["g02"] > g01_done and first["g03"] > g01_done, lines
    mine = [r for r in read_csv(result.csv) if r["experiment"] != "scheme3"]
    assert mine == read_csv(reference.csv)
    assert {r["experiment"] for r in read_csv(result.csv)} == {"rce_only", "scheme5", "scheme5_6", "scheme3"}


def _toy_task(payload, emit, scale):
    """A worker function for test_worker_pool_*: dies on "die", else emits a message and returns."""
    if payload == "die":
        os._exit(3)
    emit(("seen", payload))
    return payload * scale


def test_worker_pool_runs_dependencies_first_and_survives_a_dead_worker():
    from leverjax.run import workers

    events = []
    workers.run_tasks({"a": 1, "b": "die", "c": 3, "d": 4}, workers=2, worker_fn=_toy_task, worker_args=(10,),
                      depends={"d": {"a"}}, cost={"c": 5.0},
                      on_start=lambda t: events.append(("start", t)),
                      on_message=lambda t, m: events.append(("message", t, m)),
                      on_done=lambda t, out: events.append(("done", t, out)),
                      on_lost=lambda t, code: events.append(("lost", t, code)))
    assert sorted(e for e in events if e[0] == "done") == [("done", "a", 10), ("done", "c", 30), ("done", "d", 40)]
    assert ("lost", "b", 3) in events
    assert ("message", "c", ("seen", 3)) in events
    assert events.index(("start", "d")) > events.index(("done", "a", 10))
    assert [e[1] for e in events if e[0] == "start"][:2] == ["a", "c"]  # a is waited for, then c is the costliest


def test_next_task_prefers_what_others_wait_for_then_the_costliest():
    from leverjax.run.workers import next_task

    depends = {"b": {"a"}, "c": {"a"}, "e": {"d"}}
    assert next_task(["a", "b", "c", "d", "e"], set(), depends, {"d": 9.0}) == "a"  # two wait for a
    assert next_task(["b", "c", "d", "e"], {"a"}, depends, {"b": 1.0, "c": 2.0}) == "d"  # e waits for d
    assert next_task(["b", "c"], {"a"}, depends, {"b": 1.0, "c": 2.0}) == "c"
    assert next_task(["b", "c"], {"a"}, depends, {}) == "b"  # ties: the grid's order
    assert next_task(["b", "c"], set(), depends, {}) is None  # a has not ended


def test_bad_worker_counts_fail_before_training(tiny, tmp_path):
    with pytest.raises(ConfigError, match="--workers=0 must be at least 1"):
        launch.run_grid(["scheme5", "scheme3"], TINY, seeds=1, out=str(tmp_path / "a"), dataset=tiny, workers=0)
    import jax

    with pytest.raises(ConfigError, match="give no devices, or workers=1"):
        launch.run_grid(["scheme5", "scheme3"], TINY, seeds=1, out=str(tmp_path / "b"), dataset=tiny, workers=2,
                        devices=jax.devices())
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_groups_wait_for_the_group_that_trains_their_prefix_and_count_only_what_they_train():
    grid = grid_lib.expand_grid(experiments.SCHEMES, seeds=2)
    pending = {g.id: g.runs for g in grid.groups}
    by_exp = {e: g for g in grid.groups for e in g.experiments}
    depends = launch._prefix_dependencies(grid.groups, pending, None, lambda cfg: "data")
    units = launch._expected_run_epochs(grid.groups, pending, None, lambda cfg: "data")
    first = by_exp["rce_only"].id
    for exp in ("current", "scheme3", "scheme5", "scheme7", "scheme7_1", "scheme9", "scheme10", "scheme5_6_fixed"):
        assert depends[by_exp[exp].id] == {first}, exp
    for exp in ("rce_only", "scheme4", "scheme8", "scheme5_8"):  # their reward mode changes the SFT targets
        assert depends[by_exp[exp].id] == set(), exp

    def grpo(runs):
        return sum(r.config.grpo_positive_only_epochs + r.config.grpo_epochs for r in runs)

    assert units[first] == sum(console.run_epochs(r.config) for r in by_exp["rce_only"].runs)
    for exp in ("current", "scheme5", "scheme7"):  # start at GRPO from rce_only's prefix
        assert units[by_exp[exp].id] == grpo(by_exp[exp].runs), exp
    fixed = by_exp["scheme5_6_fixed"].runs  # its RCE differs: starts at RCE from rce_only's SFT
    assert units[by_exp["scheme5_6_fixed"].id] == sum(r.config.rce_epochs for r in fixed) + grpo(fixed)
    own = by_exp["scheme4"].runs
    assert units[by_exp["scheme4"].id] == sum(console.run_epochs(r.config) for r in own)


def test_a_finished_run_is_trained_again_from_other_starting_parameters(grid_a, tiny, tmp_path):
    """``--init_from`` is part of what a finished run was: the same command from other parameters trains
    again instead of skipping (here it fails: no parameter reader), and from none it skips; a starting point
    that does not exist is one error before anything is written."""
    out = str(tmp_path / "copy")
    shutil.copytree(os.path.dirname(grid_a[0].csv), out)
    same = launch.run_grid(["rce_only"], TINY, seeds=1, out=out, dataset=tiny, experiment_overrides=NO_GRPO,
                           printer=lambda s: None, workers=1)
    assert [g["state"] for g in same.groups] == ["skipped"]
    lines = []
    start = tmp_path / "other.pt"
    start.write_bytes(b"parameters")
    other = launch.run_grid(["rce_only"], TINY, seeds=1, out=out, dataset=tiny, experiment_overrides=NO_GRPO,
                            printer=lines.append, workers=1, init_from=str(start))
    assert [g["state"] for g in other.groups] == ["failed"], lines
    assert "other.pt" in other.groups[0]["reason"]
    fresh = str(tmp_path / "fresh")
    with pytest.raises(ConfigError, match="nowhere.pt.*no such file"):
        launch.run_grid(["rce_only"], TINY, seeds=1, out=fresh, dataset=tiny, experiment_overrides=NO_GRPO,
                        printer=lines.append, workers=1, init_from=str(tmp_path / "nowhere.pt"))
    assert not os.path.exists(fresh)


def test_a_status_is_finished_only_from_the_same_starting_parameters(tmp_path):
    run = grid_lib.GridRun("rce_only", (), 0, experiments.get("rce_only").config)
    paths = results.Paths(str(tmp_path))
    (tmp_path / "runs" / "g01").mkdir(parents=True)
    (tmp_path / "runs" / "g01" / "results.json").write_text("{}")
    os.makedirs(paths.status, exist_ok=True)
    start = tmp_path / "start.pt"
    start.write_bytes(b"x")
    for init_from in (None, str(start)):
        status = results.write_status(paths, run, "done", init_from=init_from, directory=os.path.join("runs", "g01"))
        assert results.is_finished(status, run, str(tmp_path), init_from)
        other = None if init_from else str(start)
        assert not results.is_finished(status, run, str(tmp_path), other)
