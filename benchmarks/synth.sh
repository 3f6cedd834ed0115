#!/usr/bin/env bash
# Synthetic rows (issue 32 part 1), measured on dev rows no run trained on. From the repository root, venv active:
#   bash benchmarks/synth.sh OUT [TASK...]        TASK: sst2 ag_news (default both)
# Per task: `taskfit synth` writes M rows from N seed rows; then LoRA on the M synthetic rows, on the N seed rows
# alone (the same rows: tune --limit N draws them as synth does) and on M gold rows, each for the same epochs; each
# and the untuned model are evaluated on DEV_ROWS dev rows (a seeded sample: some files are sorted by label) and
# compared in pairs (compare-results).
# Every step is skipped when its output already exists.
set -euo pipefail
OUT=${1:?usage: synth.sh OUT [TASK...]}
shift
TASKS=${*:-sst2 ag_news}
source "$(dirname "$0")/common.sh"
N=${SEED_ROWS:-16}; M=${TARGET:-200}; EPOCHS=${EPOCHS:-3}; DEV_ROWS=${DEV_ROWS:-400}
mkdir -p "$OUT"
for t in $TASKS; do
  D="--task $t --data-dir ../shared/data"
  [ -f "$OUT/$t-synth.jsonl" ] || timed $T synth $D --seed-rows "$N" --target "$M" --output "$OUT/$t-synth.jsonl" \
    $( [ -f "$OUT/$t-synth.raw.jsonl" ] && echo --resume )
  for run in seed gold synth; do
    case $run in
      seed) data="--limit $N" ;;
      gold) data="--limit $M" ;;
      synth) data="--train-file $OUT/$t-synth.jsonl" ;;
    esac
    [ -f "$OUT/$t-lora-$run/adapter_config.json" ] || timed $T tune $D $data --method lora --epochs "$EPOCHS" \
      --output "$OUT/$t-lora-$run"
    [ -f "$OUT/$t-eval-$run/results.json" ] || timed $T eval $D --limit "$DEV_ROWS" --sample random --adapter "$OUT/$t-lora-$run" \
      --output "$OUT/$t-eval-$run"
  done
  [ -f "$OUT/$t-eval-zero/results.json" ] || timed $T eval $D --limit "$DEV_ROWS" --sample random --output "$OUT/$t-eval-zero"
  for other in seed gold zero; do
    $T compare-results "$OUT/$t-eval-$other" "$OUT/$t-eval-synth" | tee "$OUT/$t-synth-vs-$other.txt"
  done
done
