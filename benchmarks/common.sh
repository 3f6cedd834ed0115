# Shared by the benchmark scripts (sourced, not run): the HH-RLHF file, the taskfit command, timed logging, resuming.
HH=../shared/data/hh_rlhf/train.jsonl
T="python -m taskfit.cli"
log() { echo "[$(date +%H:%M:%S)] $*"; }
timed() { local s; s=$(date +%s); "$@"; log "took $(( $(date +%s) - s )) s: $*"; }
again() { [ -f "$1/settings.json" ] && echo --resume; true; }  # continue a folder that holds this run
# the MiniLM judge on HH-RLHF (20% of prompts held out, seed 1234), once per OUT
rm_minilm() { [ -f "$1/rm-minilm/reward.json" ] || timed $T reward train --method minilm --data $HH --output "$1/rm-minilm"; }
