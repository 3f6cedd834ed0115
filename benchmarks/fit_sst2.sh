#!/usr/bin/env bash
# The autopilot on SST-2 with a one-hour budget: `taskfit fit sst2 --budget 60m`, timed from the outside, alone on
# the machine (a second torch process would slow both and make the budget mean nothing). Run from the repository
# root with the venv active:
#   bash benchmarks/fit_sst2.sh            (writes benchmarks/results/fit_sst2.{log,report.md,report.html})
# BUDGET=20m bash benchmarks/fit_sst2.sh runs the same with another budget.
set -uo pipefail
BUDGET=${BUDGET:-60m}
OUT=benchmarks/results/fit_sst2
RUN=${RUN:-runs/fit-sst2-bench}
DATA=${DATA:-../shared/data}
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$OUT.log"; }
: > "$OUT.log"
rm -rf "$RUN"
log "taskfit fit sst2 --data-dir $DATA --budget $BUDGET --output $RUN ($(nproc) cores, $(git rev-parse --short HEAD))"
start=$(date +%s)
taskfit fit sst2 --data-dir "$DATA" --budget "$BUDGET" --output "$RUN" > "$OUT.stdout" 2> "$OUT.stderr"
rc=$?
took=$(( $(date +%s) - start ))
budget_s=$(python -c "from taskfit.fit import parse_budget; print(int(parse_budget('$BUDGET')))")
log "exit $rc after $took s of a $budget_s s budget: $(python -c "print(f'{$took / $budget_s:.3f}')")x the budget"
cp "$RUN/report.md" "$OUT.report.md" && cp "$RUN/report.html" "$OUT.report.html"
log "report: $(stat -c %s "$OUT.report.html") bytes of HTML"
