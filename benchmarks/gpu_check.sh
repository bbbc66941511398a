#!/usr/bin/env bash
# The GPU check (issue 7), for a machine with one CUDA GPU and fedlight installed
# (`pip install -e ".[dev]"`): the tests' smoke experiment with client actors on
# GPU shares and FedDefender scoring on the GPU, then the defender benchmark on
# CUDA. Figures go to benchmarks/results/ (or $OUT_DIR):
#   gpu_check.json              GPU, per-round times, accuracy, peak GPU memory
#   gpu_check-smoke.log         the run's console output
#   gpu_check-results.json      the run's results.json
#   defender-cuda.json          benchmarks/defender.py --quick --device cuda
#
#   bash benchmarks/gpu_check.sh          # about 5 minutes on an H100
#
# simulation.num_cpus=3 caps the client pool at three actors: Flower sizes its
# pool from the cluster's resources without counting the defender's share, so
# four clients at 0.25 would claim the whole GPU and one actor (a client or the
# defender) would never start. Three clients plus the defender fill 1.0 GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT_DIR:-benchmarks/results}
mkdir -p "$out"
export RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0
unset RAY_ADDRESS  # a private local Ray, never a cluster this machine may belong to

python -c "import fedlight, torch; assert torch.cuda.is_available(), 'no CUDA GPU'" \
  || { echo "gpu_check: needs fedlight installed and a CUDA GPU" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  > "$out/gpu_check-gpu.csv"

tmp=$(mktemp -d /tmp/flgpu-XXXXXX)
# Sample the GPU's used memory every 0.5 s during the run; stop only that sampler.
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 \
  > "$tmp/gpu-memory.csv" &
sampler=$!
cleanup() { kill "$sampler" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

start=$(date +%s)
python -m fedlight.run \
  num_clients=4 num_rounds=2 client.epochs=1 dataset.max_train_samples=400 \
  wandb.mode=disabled simulation.round_timeout_s=120 dataset.hub=false \
  simulation.num_cpus=3 simulation.client_resources.num_cpus=1 \
  simulation.client_resources.num_gpus=0.25 device=cuda defense.num_gpus=0.25 \
  "simulation.ray_temp_dir=$tmp/ray" "hydra.run.dir=$tmp/run" \
  2>&1 | tee "$out/gpu_check-smoke.log"
smoke_seconds=$(( $(date +%s) - start ))
kill "$sampler" 2>/dev/null || true
cp "$tmp/run/results.json" "$out/gpu_check-results.json"

python benchmarks/defender.py --quick --device cuda --out "$out/defender-cuda.json" \
  | tee -a "$out/gpu_check-smoke.log"

python - "$out" "$tmp/gpu-memory.csv" "$smoke_seconds" <<'EOF'
import json, sys
from pathlib import Path

out, memory_csv, seconds = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
results = json.loads((out / "gpu_check-results.json").read_text())
used = [float(v) for v in memory_csv.read_text().split() if v.strip()]
name, total, driver = (v.strip() for v in (out / "gpu_check-gpu.csv").read_text().split(","))
summary = {
    "gpu": name, "gpu_memory_total": total, "driver": driver,
    "overrides": "simulation.client_resources.num_gpus=0.25 device=cuda "
                 "defense.num_gpus=0.25 simulation.num_cpus=3",
    "wall_seconds": seconds,
    "gpu_memory_used_peak_mib": max(used, default=None),
    "final_accuracy": results["final"]["accuracy"],
    "rounds": [
        {k: r[k] for k in ("round", "accuracy", "asr", "seconds", "train_seconds",
                           "defense_seconds", "eval_seconds", "flagged")}
        for r in results["rounds"]
    ],
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
EOF
