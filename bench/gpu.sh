#!/usr/bin/env bash
# GPU benchmarks, prepared for an NVIDIA host: run from the repository root after
#   python3 -m venv .venv && .venv/bin/pip install -r requirements.txt -r requirements-gpu.txt
# It measures (1) the main job, cold and warm compile cache, (2) 1 vs 16 vs 64 vmapped runs of one group
# per epoch, (3) the whole registry × 5 seeds, and prints one table at the end. Nothing here asserts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-$(mktemp -d /tmp/leverjax-gpu-XXXX)}
export PYTHONUNBUFFERED=1
$PY -c 'import jax; d = jax.devices(); print("devices:", d); assert d[0].platform == "gpu", "no GPU visible to jax"'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== main job (cold, then warm compile cache)"
export LEVERJAX_CACHE_DIR="$OUT/xla"
t0=$(date +%s.%N); $PY run.py --experiment=scheme5_6 --workdir="$OUT/cold" > "$OUT/main_cold.log"; t1=$(date +%s.%N)
$PY run.py --experiment=scheme5_6 --workdir="$OUT/warm" > "$OUT/main_warm.log"; t2=$(date +%s.%N)
main_cold=$(echo "$t1 - $t0" | bc); main_warm=$(echo "$t2 - $t1" | bc)

echo "== 1 vs 16 vs 64 vmapped runs of one group (steady seconds per epoch)"
$PY bench/bench_grid.py --mode=vmap --experiment=scheme5_6 --runs=1,16,64 --epochs=3 --json="$OUT/vmap.json" | tee "$OUT/vmap.log"

echo "== the registry × 5 seeds"
t0=$(date +%s.%N); $PY bench/bench_grid.py --mode=grid --seeds=5 --out="$OUT/all" --json="$OUT/grid.json" | tee "$OUT/grid.log"; t1=$(date +%s.%N)
grid=$(echo "$t1 - $t0" | bc)

$PY - "$OUT" "$main_cold" "$main_warm" "$grid" <<'PYEOF'
import json, sys
out, cold, warm, grid = sys.argv[1], *map(float, sys.argv[2:])
vmap = json.load(open(f"{out}/vmap.json"))["results"]
print("\n| what | figure |\n|---|---|")
print(f"| main job (scheme5_6, 1 seed), cold compile cache | {cold:.0f} s |")
print(f"| main job, warm compile cache | {warm:.0f} s |")
for runs, r in vmap.items():
    steady = ", ".join(f"{p} {s:.3f} s" for p, s in r["steady_epoch_s"].items())
    print(f"| {runs} vmapped run(s), per epoch | {steady} (compile {r['compile_s']:.0f} s) |")
print(f"| registry × 5 seeds (`run.py --experiment=all --seeds=5`) | {grid / 60:.1f} min |")
PYEOF
