#!/usr/bin/env bash
# `taskfit report` on SST-2 dev runs (all 872 rows each): zero-shot, kNN few-shot, LoRA (adapter, merged, GGUF Q8_0
# on llama.cpp, torch int8), IA3, and the MiniLM head. Times the report (2,000 bootstrap resamples, all pairs) and
# checks its numbers against compare-results. The first run is the baseline. Usage, from the repository root with the venv active:
#   bash benchmarks/report_sst2.sh RUN_FOLDER...      (writes benchmarks/results/report_sst2.*)
set -euo pipefail
OUT=benchmarks/results/report_sst2
start=$(date +%s.%N)
taskfit report "$@" --baseline "$(basename "$1")" --html "$OUT.html" --md "$OUT.md" --volume 100000 --bootstrap-samples 2000 > "$OUT.stdout"
seconds=$(echo "$(date +%s.%N) - $start" | bc)
{
  echo "report over $# runs: ${seconds} s wall (one process, cold start included), html $(stat -c %s "$OUT.html") bytes"
  echo "compare-results of the first two runs (the report's Δ column for them must match):"
  taskfit compare-results "$1" "$2"
} > "$OUT.log"
cat "$OUT.log"
