#!/usr/bin/env bash
# The seed's comparison as one plan file (examples/plan.yaml: 3 models x zero-shot / kNN few-shot / CoT x SST-2,
# TruthfulQA MC1, SQuAD, with --limit), run with `taskfit grid`, killed with SIGKILL mid-run, resumed, and read by
# `taskfit report`. Run from the repository root with the venv active:
#   KILL_AFTER=900 bash benchmarks/grid_seed.sh          (writes benchmarks/results/grid_seed*)
set -uo pipefail
OUT=benchmarks/results/grid_seed
PLAN=examples/plan.yaml
GRID=runs/grid-seed
export TASKFIT_CACHE=${TASKFIT_CACHE:-runs/grid-seed-cache.sqlite}   # a cache of its own: costs are this run's
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$OUT.log"; }
: > "$OUT.log"
taskfit grid "$PLAN" --dry-run > "$OUT.dryrun.md"
log "dry run: $(tail -1 "$OUT.dryrun.md")"
start=$(date +%s)
timeout -s KILL "${KILL_AFTER:-900}" taskfit grid "$PLAN" > /dev/null 2>> "$OUT.stderr"
log "first run: exit $? after $(( $(date +%s) - start )) s (137 = SIGKILL)"
log "complete cells after the kill: $(find "$GRID" -name results.json | wc -l) of $(grep -c '^| eval' "$OUT.dryrun.md")"
for samples in $(find "$GRID" -name samples.jsonl); do
  folder=$(dirname "$samples")
  [ -f "$folder/results.json" ] || log "cut cell: ${folder#$GRID/} with $(wc -l < "$samples") whole rows on disk"
done
start=$(date +%s)
taskfit grid "$PLAN" > "$OUT.resume.txt" 2>> "$OUT.stderr"
log "resumed run: exit $? after $(( $(date +%s) - start )) s; $(tail -1 "$OUT.resume.txt" | cut -c1-60)"
start=$(date +%s.%N)
taskfit report "$GRID" --html "$OUT.report.html" --md "$OUT.report.md" > /dev/null 2>> "$OUT.stderr"
log "report: exit $? in $(echo "$(date +%s.%N) - $start" | bc) s, html $(stat -c %s "$OUT.report.html") bytes"
