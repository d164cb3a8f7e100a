"""leverjax against the original Lever-Plus trainer, side by side on identical data (prints a table).

    python bench/bench_vs_original.py --original=PATH [--data=DATA.npz] [--rce_epochs=2]
        [--grpo_epochs=3] [--batch_sizes=1,16] [--sft_epochs=2] [--caches=cold,warm]
        [--checkpoints=every_epoch,default] [--tiny]

``PATH`` is a local checkout of the public Lever-Plus repository (github.com/yunsoft2019/Lever-Plus);
its trainer ``lever_lm/workflows/grpo_post_train.py`` is run unchanged, in a subprocess. PyTorch is
needed for that (and for the checkpoint export); without it the script says so in one line and exits.

What it does:

1. **Data.** Takes a leverjax ``.npz`` (default: the built-in synthetic set,
   ``leverjax.data.synth.load_or_make_default()``), keeps its train and val queries and writes them
   with leverjax's exporter (``leverjax.data.leverplus.write_rl_files``) as the original's RL JSON
   (``--beam_data``) and ``torch.save``d embedding table (``--img_emb``). leverjax trains on the same
   two files read back by its importer (``convert_rl_data``), so both programs see the same queries,
   pools, trajectories, labels and train/val split (the original derives it from the ids).
2. **One SFT checkpoint.** leverjax trains SFT for ``--sft_epochs`` (0: the initialisation) and
   exports it with ``leverjax.tools.interop.export_pt`` in the original's v3 layout; the original loads it
   with ``--sft_ckpt`` (its log says the parameters match), leverjax with ``--init_from``. Neither
   program's timing includes SFT.
3. **The original**, once: ``python -m lever_lm.workflows.grpo_post_train --sft_ckpt --beam_data
   --img_emb --rce_epochs --grpo_epochs --batch_size 1 --device cpu`` plus the hyperparameters that it
   shares with the leverjax experiment (learning rates, β, τ, raw/normalised RCE rewards, adaptive β,
   frozen backbone, clip-only). With RL data the original always trains one query per step: it
   resets any ``--batch_size`` to 1 itself ("新格式数据要求 batch_size=1"), so there is no original
   run at batch 16. It writes its per-epoch checkpoints into the bench's work folder; the checkout
   is checked (file names, sizes, mtimes) to be unchanged afterwards.
4. **leverjax**, for each batch size (``--rce_batch_size = --grpo_batch_size = b``): ``run.py
   --experiment=E --data --init_from --sft_epochs=0 --rce_epochs --grpo_epochs`` in a subprocess,
   first with an empty compilation cache (``cold``, compile included) and then with the cache it
   left (``warm``). Both programs validate after every epoch and write a checkpoint after every
   epoch (the original's way; leverjax's default, ``--checkpoint_seconds=30``, writes fewer, so it is
   given ``--checkpoint_seconds=0`` here). ``--checkpoints=default`` (or ``every_epoch,default``) adds
   leverjax as a user runs it, with its own checkpoint interval; leverjax also evaluates the final
   parameters and writes its report.

**Timing.** Wall-clock, from the lines each subprocess prints, time-stamped as they arrive
(``PYTHONUNBUFFERED=1``): RCE runs from the phase's header (the original's "阶段2：RCE预热",
printed after its pass over the SFT model's log-probs; leverjax's "== rce:", printed after the same
pass in its ``begin_phase``) to its last epoch row; GRPO from the last RCE epoch row to the last GRPO
epoch row (so it includes the last RCE checkpoint's write and the GRPO set-up: optimizer, and in
leverjax a cold compile and the SFT/RCE prefix-cache write). ``total`` is the subprocess's whole
wall time, start-up (imports, data loading, the reference log-prob pass, leverjax's reference
selections and compile) and the end (leverjax's final evaluation and report) included. ``per epoch`` is the median gap between consecutive epoch rows
after the first (steady state). Ratios are original ÷ leverjax.

**Isolating the original's imports.** ``lever_lm.workflows.grpo_post_train`` imports
``lever_lm.models.v3``, whose package ``__init__`` (and that of ``lever_lm.models`` /
``lever_lm.models.v2``) pull in every model variant, the Lightning adapters and ``open_mmicl``'s VLM
interfaces, hence ``omegaconf``, ``loguru``, ``datasets``, ``transformers``, ``peft``, ``open_clip``,
``open_flamingo``, ``openicl``, ``qwen_vl_utils``, ``flash_attn``, ``triton_pre_mlir``, ``faiss``,
``more_itertools``, ``PIL``, ``requests``, ``huggingface_hub``. The trainer itself uses only torch,
tqdm and three of its own modules (``pointer_selector_v3``/``v2``, ``dataset_v3``, ``reward_utils``).
So the original runs with a temporary folder first on its ``PYTHONPATH`` that holds a stub package for
each of those names (``STUBBED_MODULES``; the same set whether or not they are installed, so the
original's start-up does not depend on what happens to be installed and is, if anything, shorter
than with the real packages). A stub's attributes are placeholder classes: importing, subclassing
and annotating with them works, *calling* one raises ``RuntimeError`` naming the stub, so a stub
that the trainer did use would stop the run instead of changing it. Nothing is written into the
checkout (``PYTHONDONTWRITEBYTECODE=1``, outputs go to the work folder).

**Load.** Figures from a loaded machine are noise: the script prints the load average first. With
other jobs on the cores, torch's OpenMP threads wait on each other at every one of the original's
many small operations and its epochs slow down many times over; ``--threads=1`` caps both programs
to one thread (torch: ``OMP_NUM_THREADS=1``; XLA: ``--xla_cpu_multi_thread_eigen=false``), the fair
setting on a busy machine. By default each library keeps its own thread count.

``--tiny`` is a smoke run (40 train + 10 val queries, RCE 1 + GRPO 1 epoch, SFT 0, batches 1 and
16, cold cache only). The defaults (800 queries, SFT 2, RCE 2, GRPO 3, batches 1 and 16, cold and
warm) should take 5-8 minutes on the 2-core CPU: with RCE 1 + GRPO 2 it took 4 minutes there under a load
of 7 with ``--threads=1`` (the original 44 s, each of the four leverjax runs 19-45 s, start-up included).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TRAINER = os.path.join("lever_lm", "workflows", "grpo_post_train.py")

# Imported by the package __init__s on the trainer's import path, never used by the trainer (see above).
STUBBED_MODULES = (
    "omegaconf", "loguru", "datasets", "transformers", "peft", "open_clip", "openicl", "qwen_vl_utils",
    "flash_attn", "triton_pre_mlir", "faiss", "more_itertools", "PIL", "requests", "huggingface_hub",
    "open_flamingo", "open_flamingo.src", "open_flamingo.src.factory", "open_flamingo.src.flamingo",
    "open_flamingo.src.flamingo_lm", "open_flamingo.src.utils",
)

_STUB_SOURCE = '''"""Stub written by leverjax's bench/bench_vs_original.py: the original's trainer imports this module
through its package __init__s but never uses it. Calling anything from it raises."""


class _StubMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__name__}.{name}")

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(f"{cls.__module__}.{cls.__name__} is a stub of bench/bench_vs_original.py, but the "
                           f"original's trainer called it: the stubbed module is used after all")


def _placeholder(name):
    return _StubMeta(name, (), {"__module__": __name__})


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _placeholder(name)
'''


def write_stubs(folder: str) -> None:
    """A stub package per name of :data:`STUBBED_MODULES` under ``folder`` (put it first on PYTHONPATH)."""
    for name in STUBBED_MODULES:
        path = os.path.join(folder, *name.split("."))
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "__init__.py"), "w") as f:
            f.write(_STUB_SOURCE)


def thread_env(threads: int, library: str) -> dict:
    """Environment that caps a program's CPU threads (``--threads``; 0 leaves each library's default)."""
    if threads <= 0:
        return {}
    if library == "torch":
        return {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if threads > 1:  # XLA has no flag for a thread count: only one thread or its default
        return {}
    return {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false".strip()}


def tree_snapshot(root: str) -> dict:
    """``{relative path: (size, mtime_ns)}`` of every file under ``root`` (to show it is left unchanged)."""
    snap = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".git"]
        for name in files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            snap[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return snap


# --------------------------------------------------------------------------------------------
# Subprocesses with time-stamped output lines
# --------------------------------------------------------------------------------------------


def run_timed(cmd: list[str], *, cwd: str, env: dict, log_path: str, echo: bool) -> tuple[list, float, int]:
    """Runs ``cmd``; returns ``[(seconds since start, line)]`` of its merged stdout/stderr, its wall time
    and exit code. The output also goes to ``log_path`` (and to the terminal with ``echo``)."""
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    buf = b""
    with open(log_path, "wb") as log:
        while True:
            chunk = proc.stdout.read(65536)  # unbuffered: whatever has arrived
            if not chunk:
                break
            now = time.perf_counter() - t0
            log.write(chunk)
            buf += chunk
            *done, buf = re.split(rb"\r?\n|\r", buf)
            for raw in done:
                text = raw.decode("utf-8", "replace")
                lines.append((now, text))
                if echo:
                    print(f"    | {text}", flush=True)
    rc = proc.wait()
    wall = time.perf_counter() - t0
    if buf:
        lines.append((wall, buf.decode("utf-8", "replace")))
    return lines, wall, rc


def _median_gap(times: list[float]) -> float | None:
    gaps = [b - a for a, b in zip(times, times[1:])]
    return statistics.median(gaps) if gaps else None


def phases_original(lines, wall: float) -> dict:
    """Phase times of the original's log (see the module docstring)."""
    rce_rows, grpo_rows, t_rce, section = [], [], None, None
    for t, text in lines:
        if "阶段2" in text:
            section, t_rce = "rce", t
        elif "阶段3" in text:
            section = "grpo"
        elif section == "rce" and re.match(r"^\s*\d+(\s+-?[\d.]+(e[-+]?\d+)?){3}\s*$", text):
            rce_rows.append(t)
        elif section == "grpo" and re.match(r"^\s*\d+(\s+(-?[\d.]+(e[-+]?\d+)?|nan|inf))+\s*$", text):
            grpo_rows.append(t)
    return _phase_record(t_rce, rce_rows, grpo_rows, wall)


def phases_leverjax(lines, wall: float) -> dict:
    rce_rows, grpo_rows, t_rce, section = [], [], None, None
    for t, text in lines:
        m = re.match(r"^== (\w+):", text)
        if m:
            section = m.group(1)
            if section == "rce":
                t_rce = t
        elif re.match(r"^\s*\d+/\d+\s+\[", text):
            (rce_rows if section == "rce" else grpo_rows if section == "grpo" else []).append(t)
    return _phase_record(t_rce, rce_rows, grpo_rows, wall)


def _phase_record(t_rce, rce_rows, grpo_rows, wall) -> dict:
    rce = rce_rows[-1] - t_rce if rce_rows and t_rce is not None else None
    grpo_start = rce_rows[-1] if rce_rows else None
    grpo = grpo_rows[-1] - grpo_start if grpo_rows and grpo_start is not None else None
    return {"rce": rce, "grpo": grpo, "rl": (rce + grpo) if rce is not None and grpo is not None else None,
            "total": wall, "rce_epoch": _median_gap(rce_rows), "grpo_epoch": _median_gap(grpo_rows),
            "rce_epochs_seen": len(rce_rows), "grpo_epochs_seen": len(grpo_rows)}


# --------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------


def prepare_data(args, work: str):
    """Exports the train/val queries to the original's files and reads them back for leverjax."""
    import numpy as np

    from leverjax.data import leverplus
    from leverjax.data.npz import load_npz, save_npz
    from leverjax.data.synth import load_or_make_default

    ds = load_npz(args.data) if args.data else load_or_make_default()
    train, val = ds.split_index("train"), ds.split_index("val")
    if args.tiny:  # the first ids of each split: the reference's split of the subset is the same
        train = train[np.argsort(ds.query_ids[train])][:40]
        val = val[np.argsort(ds.query_ids[val])][:10]
    ds = ds.subset(np.concatenate([train, val]))
    rl_json, emb = os.path.join(work, "rl_data.json"), os.path.join(work, "emb.pt")
    leverplus.write_rl_files(ds, rl_json, emb)
    back, counts = leverplus.convert_rl_data(leverplus.load_rl_json(rl_json), leverplus.load_embeddings(emb),
                                             source=rl_json)
    npz = os.path.join(work, "data.npz")
    save_npz(back, npz)
    print(f"data: {counts['queries_kept']} queries (train {counts['train']}, val {counts['val']}), "
          f"{counts['trajectories_kept']} trajectories, K = {back.pool_size}, S = {back.num_steps}, "
          f"d = {back.dim}, N = {back.num_examples}; written to {rl_json} + {emb}, read back into {npz}")
    return back, rl_json, emb, npz


def make_sft_checkpoint(args, cfg, ds, work: str) -> str:
    """leverjax SFT (``--sft_epochs``; 0 = the initialisation) exported in the original's layout."""
    import jax
    import numpy as np

    from leverjax.run import engine as runner
    from leverjax.tools import interop

    sft_cfg = dataclasses.replace(cfg, sft_epochs=max(args.sft_epochs, 1), rce_epochs=0, grpo_epochs=0)
    r = runner.Runner(sft_cfg, ds, runner.expand_runs({}, args.seed, 1), name="sft", out=lambda s: None)
    if args.sft_epochs > 0:
        state = r.run().state
    else:
        state = r.vp.init(r.data, r.hp, r.keys)
    params = jax.tree_util.tree_map(lambda x: np.asarray(x[0]), state["params"])
    path = os.path.join(work, "sft.pt")
    interop.export_pt(params, cfg, path, pool_size=64, shot_num=ds.num_steps, source="bench_vs_original SFT")
    print(f"SFT checkpoint: leverjax {'SFT ' + str(args.sft_epochs) + ' epochs' if args.sft_epochs else 'initialisation'}"
          f" (seed {args.seed}) exported to {path}")
    return path


def original_command(args, cfg, sft: str, rl_json: str, emb: str, out_dir: str) -> list[str]:
    """The original trainer's command line, with the hyperparameters it shares with ``cfg``."""
    cmd = [sys.executable, "-m", "lever_lm.workflows.grpo_post_train",
           "--sft_ckpt", sft, "--beam_data", rl_json, "--img_emb", emb, "--output_dir", out_dir,
           "--rce_epochs", str(args.rce_epochs), "--grpo_epochs", str(args.grpo_epochs), "--batch_size", "1",
           "--device", args.device, "--rce_lr", repr(cfg.rce_lr), "--grpo_lr", repr(cfg.grpo_lr),
           "--kl_beta", repr(cfg.kl_beta), "--clip_epsilon", repr(cfg.clip_eps),
           "--rce_temp_start", repr(cfg.rce_tau_start), "--rce_temp_end", repr(cfg.rce_tau_end),
           "--num_layers", str(cfg.num_layers), "--reward_mode", cfg.reward_mode]
    if cfg.rce_rewards == "raw":
        cmd.append("--rce_use_raw_reward")
    if not cfg.adaptive_beta:
        cmd.append("--disable_adaptive_kl")
    if cfg.freeze_backbone:
        cmd.append("--freeze_backbone_in_grpo")
    if cfg.clip_only:
        cmd.append("--use_ppo_clip_only")
    return cmd


def run_original(args, cfg, sft, rl_json, emb, work: str) -> dict:
    stubs = os.path.join(work, "original_stubs")
    write_stubs(stubs)
    out_dir = os.path.join(work, "original_out")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([stubs, args.original]), "PYTHONUNBUFFERED": "1",
           "PYTHONDONTWRITEBYTECODE": "1", **thread_env(args.threads, "torch")}
    env.pop("PYTHONSTARTUP", None)
    cmd = original_command(args, cfg, sft, rl_json, emb, out_dir)
    before = tree_snapshot(args.original)
    print(f"original: {' '.join(cmd[1:])}", flush=True)
    lines, wall, rc = run_timed(cmd, cwd=args.original, env=env, log_path=os.path.join(work, "original.log"),
                                echo=args.verbose)
    after = tree_snapshot(args.original)
    if rc != 0:
        tail = "\n".join(text for _, text in lines[-25:])
        raise SystemExit(f"the original's trainer failed (exit code {rc}); the end of its output:\n{tail}")
    if before != after:
        changed = sorted(set(before) ^ set(after) | {k for k in before if k in after and before[k] != after[k]})
        print(f"WARNING: the original's checkout changed during its run: {changed[:10]}")
    if not any("Checkpoint 参数完全匹配" in t or "SFT权重加载完成" in t for _, t in lines):
        print("WARNING: the original's log does not confirm that it loaded the SFT checkpoint")
    missing = [t for _, t in lines if "未匹配参数" in t]
    if missing:
        print(f"WARNING: the original did not find every parameter in the SFT checkpoint: {missing[0].strip()}")
    rec = phases_original(lines, wall)
    print(f"original: done in {wall:.1f}s (RCE {_fmt(rec['rce'])}, GRPO {_fmt(rec['grpo'])})", flush=True)
    return rec


def run_leverjax(args, batch: int, cache: str, sft: str, npz: str, work: str, label: str,
                 every_epoch: bool = True) -> dict:
    out = os.path.join(work, f"leverjax_{label}")
    env = {**os.environ, "LEVERJAX_CACHE_DIR": cache, "PYTHONUNBUFFERED": "1", **thread_env(args.threads, "jax"),
           "PYTHONPATH": os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    cmd = [sys.executable, "run.py", f"--experiment={args.experiment}", f"--data={npz}", f"--init_from={sft}",
           "--sft_epochs=0", f"--rce_epochs={args.rce_epochs}", f"--grpo_epochs={args.grpo_epochs}",
           f"--rce_batch_size={batch}", f"--grpo_batch_size={batch}", f"--seed={args.seed}", f"--workdir={out}"]
    if every_epoch:
        cmd.append("--checkpoint_seconds=0")  # a checkpoint after every epoch, as the original writes
    lines, wall, rc = run_timed(cmd, cwd=ROOT, env=env, log_path=os.path.join(work, f"leverjax_{label}.log"),
                                echo=args.verbose)
    if rc != 0:
        tail = "\n".join(text for _, text in lines[-25:])
        raise SystemExit(f"leverjax ({label}) failed (exit code {rc}); the end of its output:\n{tail}")
    rec = phases_leverjax(lines, wall)
    print(f"leverjax {label}: done in {wall:.1f}s (RCE {_fmt(rec['rce'])}, GRPO {_fmt(rec['grpo'])})", flush=True)
    return rec


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _fmt(x, unit="s") -> str:
    return "-" if x is None else f"{x:.2f}{unit}" if x < 10 else f"{x:.1f}{unit}"


def _ratio(a, b) -> str:
    return "-" if a is None or b is None or b <= 0 else f"{a / b:.1f}x"


COLUMNS = (("rce", "RCE"), ("grpo", "GRPO"), ("rl", "RCE+GRPO"), ("total", "total"),
           ("rce_epoch", "RCE/epoch"), ("grpo_epoch", "GRPO/epoch"))


def print_table(orig: dict, rows: list[tuple[str, dict]]) -> None:
    width = max(len(n) for n, _ in rows + [("original (batch 1)", {})]) + 2
    head = f"{'program':<{width}}" + "".join(f"{title:>12}" for _, title in COLUMNS)
    print("\n" + head + "\n" + "-" * len(head))
    print(f"{'original (batch 1)':<{width}}" + "".join(f"{_fmt(orig[k]):>12}" for k, _ in COLUMNS))
    for name, rec in rows:
        print(f"{name:<{width}}" + "".join(f"{_fmt(rec[k]):>12}" for k, _ in COLUMNS))
    print(f"\n{'speed-up (original / leverjax)':<{width}}" + "".join(f"{title:>12}" for _, title in COLUMNS)
          + "\n" + "-" * len(head))
    for name, rec in rows:
        print(f"{name:<{width}}" + "".join(f"{_ratio(orig[k], rec[k]):>12}" for k, _ in COLUMNS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", required=True, help="a local checkout of github.com/yunsoft2019/Lever-Plus")
    parser.add_argument("--data", default="", help="a leverjax .npz (default: the built-in synthetic set)")
    parser.add_argument("--experiment", default="scheme5_6", help="leverjax experiment whose config both run")
    parser.add_argument("--rce_epochs", type=int, default=2)
    parser.add_argument("--grpo_epochs", type=int, default=3)
    parser.add_argument("--sft_epochs", type=int, default=2, help="leverjax SFT epochs of the common checkpoint "
                        "(0: the initialisation)")
    parser.add_argument("--batch_sizes", default="1,16", help="leverjax batch sizes (queries per RCE/GRPO step)")
    parser.add_argument("--caches", default="cold,warm", help="leverjax runs per batch size: cold (empty "
                        "compilation cache), warm (the cache the cold run left), or both")
    parser.add_argument("--checkpoints", default="every_epoch", help="leverjax runs per batch size and cache: "
                        "every_epoch (a checkpoint after every epoch, as the original writes), default (leverjax's "
                        "own --checkpoint_seconds, as a user runs it), or both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="the original's --device")
    parser.add_argument("--threads", type=int, default=0, help="cap the original's CPU threads (torch: "
                        "OMP_NUM_THREADS); 1 also turns off XLA's multi-threaded Eigen; 0 = each library's default. On a loaded machine "
                        "use 1: torch's OpenMP threads wait on each other at every small op when the cores are "
                        "busy, which slows the original many times over")
    parser.add_argument("--workdir", default="", help="keep the files and logs here (default: a temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: 50 queries, RCE 1 + GRPO 1, no SFT, cold")
    parser.add_argument("--verbose", action="store_true", help="echo both programs' output")
    args = parser.parse_args()
    if args.tiny:
        args.rce_epochs, args.grpo_epochs, args.sft_epochs, args.caches = 1, 1, 0, "cold"

    if importlib.util.find_spec("torch") is None:
        raise SystemExit("bench_vs_original: PyTorch is not installed, and the original's trainer needs it "
                         "(pip install torch; the CPU build is enough)")
    args.original = os.path.abspath(args.original)
    if not os.path.isfile(os.path.join(args.original, TRAINER)):
        raise SystemExit(f"bench_vs_original: {args.original} is not a Lever-Plus checkout (no {TRAINER})")
    batches = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    caches = [c.strip() for c in args.caches.split(",") if c.strip()]
    if not set(caches) <= {"cold", "warm"} or not caches:
        raise SystemExit("bench_vs_original: --caches takes cold, warm or cold,warm")
    saves = [c.strip() for c in args.checkpoints.split(",") if c.strip()]
    if not set(saves) <= {"every_epoch", "default"} or not saves:
        raise SystemExit("bench_vs_original: --checkpoints takes every_epoch, default or every_epoch,default")

    import jax

    from leverjax.run import registry as experiments

    cfg = experiments.get(args.experiment).config
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; jax {jax.__version__} on "
          f"{jax.devices()[0].platform}; experiment {args.experiment}; RCE {args.rce_epochs} + GRPO "
          f"{args.grpo_epochs} epochs; threads {args.threads or 'library default'}", flush=True)
    work = args.workdir or tempfile.mkdtemp(prefix="bench_vs_original_")
    os.makedirs(work, exist_ok=True)
    try:
        ds, rl_json, emb, npz = prepare_data(args, work)
        sft = make_sft_checkpoint(args, cfg, ds, work)
        orig = run_original(args, cfg, sft, rl_json, emb, work)
        rows = []
        for b in batches:
            for save in saves:
                cache = os.path.join(work, f"xla_cache_b{b}_{save}")
                shutil.rmtree(cache, ignore_errors=True)
                what = "a checkpoint every epoch" if save == "every_epoch" else "default checkpoints"
                for c in ("cold", "warm"):
                    label = f"b{b}_{save}_{c}"
                    rec = run_leverjax(args, b, cache, sft, npz, work, label,  # warm needs the cold run first
                                       every_epoch=save == "every_epoch")
                    if c in caches:
                        rows.append((f"leverjax batch {b}, {what}, {c}", rec))
                    if "warm" not in caches:
                        break
        print_table(orig, rows)
        print("\nTimes are wall-clock from the programs' time-stamped output lines (module docstring); the "
              "original runs one query per step whatever --batch_size says.")
        with open(os.path.join(work, "bench_vs_original.json"), "w") as f:
            json.dump({"args": vars(args), "original": orig, "leverjax": dict(rows)}, f, indent=1)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
