#!/bin/bash
# Behaviour identity of a refactor: the same `taskfit eval` commands on an earlier commit (checked out in a second
# worktree) and on this tree, then predictions and samples.jsonl compared run by run.
#   bash benchmarks/behaviour_identity.sh 8456cd2 /tmp/identity
# Needs `make setup` and ../shared/data. Tuned artefacts (a LoRA adapter, a head) are made once with this tree.
set -euo pipefail
BASE_REV=${1:?give the commit to compare against}
OUT=${2:-/tmp/identity}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=$HERE/.venv/bin/python
D=$(cd "$HERE/../shared/data" && pwd)
BASE=$OUT/base-tree
mkdir -p "$OUT"
[ -d "$BASE" ] || git -C "$HERE" worktree add -q "$BASE" "$BASE_REV"
cd "$OUT"
[ -f lora/adapter_config.json ] || PYTHONPATH=$HERE/src $PY -m taskfit.cli tune --method lora --task sst2 --data-dir "$D" \
  --limit 64 --max-steps 8 --batch-size 8 --no-progress --output lora > lora.log 2>&1
[ -f head/head_config.json ] || PYTHONPATH=$HERE/src $PY -m taskfit.cli tune --method head --task sst2 --data-dir "$D" \
  --limit 256 --epochs 1 --no-progress --output head > head.log 2>&1
for side in base new; do
  if [ $side = base ]; then SRC=$BASE/src; else SRC=$HERE/src; fi
  ev() { name=$1; shift; [ -f $side-$name/results.json ] || PYTHONPATH=$SRC $PY -m taskfit.cli eval --task sst2 \
    --data-dir "$D" --no-cache --no-progress --bootstrap-samples 0 --output $side-$name "$@" > $side-$name.log 2>&1; }
  ev zero --limit 300
  ev knn --limit 100 --strategy few_shot --strategy-arg selector=knn --strategy-arg k=4
  ev cot --limit 20 --mode generate --strategy cot
  ev lora --limit 100 --adapter lora
  ev head --limit 300 --model head:head
  ev sc --limit 8 --mode generate --strategy self_consistency --strategy-arg n=3
  ev carp --limit 8 --mode generate --strategy carp --strategy-arg k=2
  ev carp-vote --limit 6 --mode generate --strategy carp --strategy-arg n=3
  ev ape --limit 20 --strategy ape --strategy-arg m=2 --strategy-arg score_n=10
  ev calibrate --limit 50 --strategy few_shot --strategy-arg k=2 --strategy-arg calibrate=true
  ev json-ll --limit 50 --strategy-arg answer_format=json
  ev json-gen --limit 20 --mode generate --strategy few_shot --strategy-arg k=2 --strategy-arg answer_format=json
  ev sc-answers --limit 10 --mode generate --strategy self_consistency --strategy-arg n=3 \
    --strategy-arg reasoning=false
done
for name in zero knn cot lora head sc carp carp-vote ape calibrate json-ll json-gen sc-answers; do
  $PY - "base-$name/samples.jsonl" "new-$name/samples.jsonl" "$name" <<'PY'
import json, sys
a = [json.loads(line) for line in open(sys.argv[1])]
b = [json.loads(line) for line in open(sys.argv[2])]
same = [x["prediction"] for x in a] == [y["prediction"] for y in b]
print(f"{sys.argv[3]}: rows {len(a)} / {len(b)}; predictions identical: {same}; "
      f"samples.jsonl byte-identical: {open(sys.argv[1]).read() == open(sys.argv[2]).read()}")
PY
done
