#!/usr/bin/env bash
# Past one machine, run as a user runs it (issue 33): a grid on a Ray cluster started with `ray start --head` and
# joined with --ray-address, against the same plan on the local process pool; then LoRA training in two processes
# under torchrun against one process with the global batch. Writes OUT/scale_out.md (commands, outputs, checks).
#
#   bash benchmarks/scale_out.sh [OUT]      # about 15 minutes on 2 cores; run it alone
set -euo pipefail
OUT=${1:-/tmp/scale-out}
DATA=${DATA:-../shared/data}
T="python -m taskfit.cli"
PORT=${RAY_PORT:-6379}
mkdir -p "$OUT"
REPORT="$OUT/scale_out.md"
source benchmarks/common.sh

# one command, shown and timed, its output kept (last lines in the report)
record() {
  local name=$1; shift
  local s e rc=0
  s=$(date +%s)
  "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  e=$(date +%s)
  printf '\n```console\n$ %s\n' "$*" >>"$REPORT"
  grep -v -E '^\s*$|it/s\]|s/it\]' "$OUT/$name.log" | tail -n "${TAIL:-12}" | cut -c1-200 >>"$REPORT"
  printf '```\nexit %s, %s s\n' "$rc" "$((e - s))" >>"$REPORT"
  log "$name: exit $rc"
  return "$rc"
}

cat >"$OUT/plan.yaml" <<EOF
# two eval cells on the base model and a LoRA tune job evaluated afterwards (its cell waits for the adapter)
output: $OUT/grid-ray
defaults: {data_dir: $DATA, limit: 200, sample: random, seed: 1234}
tasks: [sst2]
models: [smollm2-135m-instruct]
strategies:
  - zero_shot
  - {strategy: few_shot, strategy_args: {selector: knn, k: 4}}
resources: {eval: {num_cpus: 1}, tune: {num_cpus: 1}}   # one thread a cell, as --jobs 2 gives each on 2 cores
tune:
  - {name: lora-sst2, method: lora, task: sst2, data_dir: $DATA, limit: 400, batch_size: 8, max_steps: 30,
     seed: 1234, evaluate: [zero_shot]}
EOF
sed "s#$OUT/grid-ray#$OUT/grid-local#" "$OUT/plan.yaml" >"$OUT/plan-local.yaml"

{
  echo "# Past one machine: what ran ($(date -u +%Y-%m-%d), taskfit $(git rev-parse --short HEAD), $(nproc) cores)"
  echo
  echo "## A grid on a Ray cluster"
  echo
  echo "The plan (\`$OUT/plan.yaml\`): SST-2, 200 random dev rows, zero-shot and kNN 4-shot on the base model, and a"
  echo "30-step LoRA tune job evaluated zero-shot, every cell with one CPU (one torch thread). The cluster is started as"
  echo "on a head node (\`ray start --head\`) and the grid joins it with \`--ray-address\`; the same plan then runs on the"
  echo "local process pool (\`--jobs 2\`: one thread a cell on 2 cores), and the run folders are compared byte for byte."
} >"$REPORT"

ray stop --force >/dev/null 2>&1 || true
record ray-start ray start --head --node-ip-address 127.0.0.1 --port "$PORT" --num-cpus 2 --include-dashboard false \
  --disable-usage-stats
trap 'ray stop --force >/dev/null 2>&1 || true' EXIT
TAIL=20 record grid-ray $T grid "$OUT/plan.yaml" --executor ray --ray-address "127.0.0.1:$PORT"
cp "$OUT/grid-ray/grid.json" "$OUT/grid-ray-first.json"   # the rerun rewrites grid.json (every cell skipped)
TAIL=4 record grid-ray-again $T grid "$OUT/plan.yaml" --executor ray --ray-address "127.0.0.1:$PORT"
TAIL=1 record ray-stop ray stop
trap - EXIT
TAIL=20 record grid-local $T grid "$OUT/plan-local.yaml" --jobs 2

python - "$OUT" >>"$REPORT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
ray, local = (json.loads(p.read_text()) for p in (out / "grid-ray-first.json", out / "grid-local" / "grid.json"))
print("\n| cell | status (Ray) | node | seconds (Ray) | seconds (--jobs 2) | samples.jsonl byte-identical |")
print("|---|---|---|---|---|---|")
seconds = {c["name"]: c.get("seconds") for c in local["cells"]}
for c in ray["cells"]:
    same = "(tune cell)"
    if c["kind"] == "eval":
        a, b = (out / f"grid-{n}" / c["name"] / "samples.jsonl" for n in ("ray", "local"))
        same = str(a.read_bytes() == b.read_bytes())
    print(f"| {c['name']} | {c['status']} | {c.get('node')} | {c.get('seconds', 0):.0f} | "
          f"{seconds.get(c['name']) or 0:.0f} | {same} |")
print(f"\ngrid.json executor: {ray['executor']} (Ray), {local['executor']} (local)")
EOF

{
  echo
  echo "## LoRA in two processes (torchrun, DDP over gloo)"
  echo
  echo "SST-2, 400 training rows, 30 steps: two processes with batch 4 against one process with batch 8 (the same"
  echo "global batch and seed), then each adapter evaluated on 200 random dev rows."
} >>"$REPORT"
TUNE=(tune --task sst2 --data-dir "$DATA" --limit 400 --method lora --max-steps 30 --logging-steps 5 --seed 1234)
TAIL=6 record tune-two python -m torch.distributed.run --nproc_per_node 2 -m taskfit.cli "${TUNE[@]}" \
  --batch-size 4 --threads 1 --output "$OUT/lora-two"
TAIL=6 record tune-one $T "${TUNE[@]}" --batch-size 8 --threads 2 --output "$OUT/lora-one"
for n in two one; do
  TAIL=8 record "eval-$n" $T eval --task sst2 --data-dir "$DATA" --limit 200 --sample random --seed 1234 \
    --adapter "$OUT/lora-$n" --no-cache --output "$OUT/eval-$n"
done
python - "$OUT" >>"$REPORT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
cards = {n: json.loads((out / f"lora-{n}" / "run_card.json").read_text()) for n in ("two", "one")}
acc = {n: json.loads((out / f"eval-{n}" / "results.json").read_text())["metrics"]["accuracy"] for n in ("two", "one")}
print("\n| | world size | global batch | train s | loss at logged steps | dev accuracy (200 rows) |")
print("|---|---|---|---|---|---|")
for n, c in cards.items():
    losses = ", ".join(f"{h['loss']:.4f}" for h in c["loss_history"])
    a = acc[n]
    print(f"| {n} process{'es' if n == 'two' else ''} | {c['world_size']} | {c['global_batch']} | "
          f"{c['train_s']:.0f} | {losses} | "
          f"{a['value']:.4f} [{a['ci_low']:.4f}, {a['ci_high']:.4f}] |")
a, b = ([h["loss"] for h in cards[n]["loss_history"]] for n in ("two", "one"))
print(f"\nlargest loss difference: {max(abs(x - y) for x, y in zip(a, b)):.2e}; "
      f"accuracy difference: {abs(acc['two']['value'] - acc['one']['value']) * 200:.0f} rows of 200")
EOF
log "wrote $REPORT"
