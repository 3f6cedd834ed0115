#!/usr/bin/env bash
# The GPU check (issue 33 part 4): on a machine with a CUDA GPU, the paths that only a GPU exercises, each under a
# time limit, in about five minutes in all, written as one markdown table (OUT/gpu_check.md, and .json):
#   1. eval, hf backend on the GPU: SST-2 log-likelihood (400 dev rows) - accuracy, rows/s
#   2. generation on the GPU: zero-shot CoT on 64 SST-2 rows - generated tokens/s, accuracy
#   3. a 20-step LoRA tune on the GPU (bf16 / fp16 mixed precision), then its adapter evaluated as in 1
#   4. two DPO steps on HH-RLHF pairs (TRL on the GPU)
#   5. vLLM's GPU build, when a virtual environment with it is named by TASKFIT_VLLM_VENV: agreement with the hf
#      backend on 200 SST-2 rows (benchmarks/vllm_agreement.py, bf16); otherwise the row says it was skipped
# Nothing in CI depends on it.
#   bash benchmarks/gpu_check.sh [OUT]                    # on the GPU machine, after `make setup` with CUDA torch
#   DEVICE=cpu bash benchmarks/gpu_check.sh /tmp/gpu-check   # the same steps on the CPU: checks the script itself
# Environment: PY (python with taskfit; default .venv/bin/python), DATA_DIR (default ../shared/data), DEVICE (cuda),
# STEP_LIMIT (seconds a step may take, default 150), SCALE (rows and steps multiplied by it, default 1), RESUME=1 (keep
# the steps that finished in OUT and run the others).
set -uo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$HERE/.venv/bin/python}
D=$(cd "${DATA_DIR:-$HERE/../shared/data}" && pwd) || { echo "no data folder; set DATA_DIR"; exit 2; }
OUT=${1:-$HERE/runs/gpu-check}
DEVICE=${DEVICE:-cuda}
STEP_LIMIT=${STEP_LIMIT:-150}
SCALE=${SCALE:-1}
n() { $PY -c "import sys; print(max(1, int(float(sys.argv[1]) * float(sys.argv[2]))))" "$1" "$SCALE"; }

if [ "$DEVICE" = cuda ] && ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "torch sees no CUDA GPU (a CPU build of torch, or no driver); DEVICE=cpu runs the same steps on the CPU"
  exit 2
fi
mkdir -p "$OUT"
if [ "${RESUME:-0}" = 1 ] && [ -f "$OUT/steps.jsonl" ]; then
  grep '"status": "ok"' "$OUT/steps.jsonl" > "$OUT/steps.kept" || true
  mv "$OUT/steps.kept" "$OUT/steps.jsonl"
else
  : > "$OUT/steps.jsonl"
fi
export TASKFIT_HOME=${TASKFIT_HOME:-$OUT/home}
TASKFIT=(env "PYTHONPATH=$HERE/src" "$PY" -m taskfit.cli)

# step NAME COMMAND... : run under the time limit, log to OUT/NAME.log, record status and seconds
step() {
  local name=$1; shift
  local start end rc
  if grep -q "\"step\": \"$name\", \"status\": \"ok\"" "$OUT/steps.jsonl"; then
    echo "$name: done before (RESUME=1)"
    return
  fi
  start=$(date +%s.%N)
  timeout "$STEP_LIMIT" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  $PY - "$name" "$rc" "$start" "$end" "$*" >> "$OUT/steps.jsonl" <<'PY'
import json, sys
name, rc, start, end, command = sys.argv[1:]
status = {"0": "ok", "124": "timed out"}.get(rc, f"failed (exit {rc})")
print(json.dumps({"step": name, "status": status, "seconds": round(float(end) - float(start), 1), "command": command}))
PY
  echo "$name: exit $rc ($OUT/$name.log)"
}

ROWS=$(n 400); GEN_ROWS=$(n 64); STEPS=$(n 20); DPO_PAIRS=$(n 64)
step eval-ll "${TASKFIT[@]}" eval --task sst2 --data-dir "$D" --limit "$ROWS" --device "$DEVICE" --no-cache \
  --no-progress --output "$OUT/eval-ll"
step eval-gen "${TASKFIT[@]}" eval --task sst2 --data-dir "$D" --limit "$GEN_ROWS" --mode generate --strategy cot \
  --device "$DEVICE" --no-cache --no-progress --output "$OUT/eval-gen"
step tune-lora "${TASKFIT[@]}" tune --method lora --task sst2 --data-dir "$D" --limit "$(n 320)" \
  --max-steps "$STEPS" --batch-size 16 --device "$DEVICE" --no-progress --output "$OUT/tune-lora"
step eval-lora "${TASKFIT[@]}" eval --task sst2 --data-dir "$D" --limit "$ROWS" --adapter "$OUT/tune-lora" \
  --device "$DEVICE" --no-cache --no-progress --output "$OUT/eval-lora"
step align-dpo "${TASKFIT[@]}" align --method dpo --data "$D/hh_rlhf/train.jsonl" --limit "$DPO_PAIRS" --max-steps 2 \
  --batch-size 4 --dev-share 0 --device "$DEVICE" --no-progress --output "$OUT/align-dpo"
if [ -n "${TASKFIT_VLLM_VENV:-}" ] && "$TASKFIT_VLLM_VENV/bin/python" -c "import vllm" 2> /dev/null; then
  step vllm env "PYTHONPATH=$HERE/src" "$PY" "$HERE/benchmarks/vllm_agreement.py" --data-dir "$D" --limit "$(n 200)" \
    --dtype bfloat16 --out "$OUT/vllm.json"
else
  echo '{"step": "vllm", "status": "skipped: no vLLM build named by TASKFIT_VLLM_VENV", "seconds": 0, "command": ""}' \
    >> "$OUT/steps.jsonl"
fi

# one table: each step's status, seconds and what it measured
$PY - "$OUT" "$DEVICE" <<'PY'
import json, platform, sys
from pathlib import Path

out, device = Path(sys.argv[1]), sys.argv[2]
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


def results(name):
    path = out / name / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def number(value, spec):
    return "?" if value is None else format(value, spec)


def accuracy(r):
    a = r["metrics"]["accuracy"]
    return f"accuracy {a['value']:.4f} [{a['ci_low']:.4f}, {a['ci_high']:.4f}], n = {r['counts']['n']}"


def measured(name):
    if name in ("eval-ll", "eval-lora") and (r := results(name)):
        return f"{accuracy(r)}; {r['counts']['n'] / r['timings']['eval_s']:.1f} rows/s"
    if name == "eval-gen" and (r := results(name)):
        return f"{accuracy(r)}; {r['cost']['generated_tokens'] / r['timings']['eval_s']:.0f} generated tokens/s"
    card = out / name / "run_card.json"
    if name in ("tune-lora", "align-dpo") and card.is_file():
        c = json.loads(card.read_text())
        return (f"{c['steps']} steps in {c['train_s']} s, {c['tokens_per_s']} tokens/s, final loss "
                f"{number(c.get('final_loss'), '.3f')}, peak RSS {number(c.get('peak_rss_mib'), '.0f')} MiB")
    if name == "vllm" and (out / "vllm.json").is_file():
        v = json.loads((out / "vllm.json").read_text())
        return f"agreement {v['agree']}/{v['rows']}, max abs d log p {v['max_abs_dlogp']:.2g}"
    return ""


try:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    versions = f"torch {torch.__version__}, GPU: {gpu}"
except ImportError:
    versions = "torch missing"
lines = [f"# GPU check (device {device}; {versions}; {platform.node()})", "",
         "| step | status | seconds | measured |", "|---|---|---|---|"]
lines += [f"| {s['step']} | {s['status']} | {s['seconds']} | {measured(s['step'])} |" for s in steps]
lines += ["", f"total {sum(s['seconds'] for s in steps):.0f} s; commands and logs: {out}/steps.jsonl, {out}/<step>.log"]
(out / "gpu_check.md").write_text("\n".join(lines) + "\n")
(out / "gpu_check.json").write_text(json.dumps({"device": device, "versions": versions, "steps": steps,
                                                  "measured": {s["step"]: measured(s["step"]) for s in steps}},
                                                 indent=2) + "\n")
print("\n".join(lines))
PY
