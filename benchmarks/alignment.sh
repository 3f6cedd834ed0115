#!/usr/bin/env bash
# Issue 18's alignment benchmarks, one after another (run alone on the machine). Usage, from the repository root
# with the venv active:
#   bash benchmarks/alignment.sh OUT [STEP...]        STEP: rm-minilm raft-hh dpo kto align-eval kbqa rm-lora rm-top
# Every step writes a run folder under OUT and is skipped when its folder already holds a finished run (RAFT resumes
# at iteration boundaries). HH-RLHF pairs come from ../shared/data/hh_rlhf/train.jsonl; every command holds out the
# same 20% of prompts (dev_share 0.2, seed 1234), so the reward models, DPO, KTO and RAFT are all judged on prompts
# none of them trained on. KBQA: ../shared/data has only a train split, so the script splits it by id into
# OUT/kbqa-data/nlpcc2016_kbqa/{train,dev}.jsonl (ids ending in 0 are dev); nothing is copied into this repository.
set -euo pipefail
OUT=${1:?usage: alignment.sh OUT [STEP...]}
shift
STEPS=${*:-rm-minilm raft-hh dpo kto align-eval kbqa rm-lora}
source "$(dirname "$0")/common.sh"
mkdir -p "$OUT"

for step in $STEPS; do
  case $step in
    rm-minilm)
      rm_minilm "$OUT" ;;
    raft-hh)
      # 3 passes over each iteration's 64 kept answers (24 steps of 8; 1 pass = 8 steps barely moved the policy)
      timed $T align --method raft --reward "$OUT/rm-minilm" --data $HH --iterations 3 --prompts 64 --samples 4 \
        --max-new-tokens 48 --epochs 3 --eval-prompts 64 --eval-samples 4 --max-length 384 --output "$OUT/raft-hh" \
        $(again "$OUT/raft-hh") ;;
    dpo | kto)
      # DPO: 20 steps of 4 pairs at 192 tokens (at batch 8 / 256 tokens it ran ~40 s a step on this machine); KTO: 80
      # steps of 4 rated rows — twice DPO's 160 answers (at 40 steps its margin's CI still included 0)
      steps=20; [ "$step" = kto ] && steps=80
      [ -f "$OUT/$step/run_card.json" ] || timed $T align --method "$step" --data $HH --max-steps $steps --batch-size 4 \
        --lr 5e-4 --max-length 192 --output "$OUT/$step" ;;
    align-eval)
      # the policies of this OUT that exist (base first); 4 sampled answers per prompt, a prompt's reward their mean
      P=base
      for q in raft-hh/iter_3/adapter dpo kto; do [ -f "$OUT/$q/adapter_config.json" ] && P="$P,$OUT/$q"; done
      timed $T align eval --policies "$P" --reward "$OUT/rm-minilm" --data "$OUT/rm-minilm/dev.jsonl" \
        --eval-prompts 200 --eval-samples 4 --max-new-tokens 48 --max-length 384 --output "$OUT/align-eval" ;;
    kbqa)
      D="$OUT/kbqa-data/nlpcc2016_kbqa"
      if [ ! -f "$D/dev.jsonl" ]; then
        mkdir -p "$D"
        python - "$D" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [json.loads(line) for line in Path("../shared/data/nlpcc2016_kbqa/train.jsonl").read_text("utf-8").splitlines()]
for name, keep in (("train", lambda r: r["id"] % 10 != 0), ("dev", lambda r: r["id"] % 10 == 0)):
    (out / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows if keep(r)), "utf-8")
EOF
      fi
      K="--task nlpcc_kbqa --data-dir $OUT/kbqa-data"
      # KBQA_SFT_LIMIT rows of SFT (default 1000 ≈ 1 h here at ~30 s a step of 8; the recorded run used 400)
      [ -f "$OUT/kbqa-sft/adapter_config.json" ] || timed $T tune $K --method lora --limit "${KBQA_SFT_LIMIT:-1000}" \
        --output "$OUT/kbqa-sft"
      [ -f "$OUT/kbqa-sft-eval/results.json" ] || timed $T eval $K --split dev --limit 400 --mode generate \
        --adapter "$OUT/kbqa-sft" --output "$OUT/kbqa-sft-eval"
      # learn only from right answers (ROUGE-L 1.0 = the gold entity), sampled at temperature 0.7, 2 passes over them
      timed $T align --method raft $K --reward metric:rouge_l --min-reward 1.0 --temperature 0.7 --epochs 2 \
        --adapter "$OUT/kbqa-sft" --iterations 3 --prompts 64 --samples 4 --max-new-tokens 32 --eval-prompts 64 \
        --output "$OUT/raft-kbqa" $(again "$OUT/raft-kbqa")
      [ -f "$OUT/raft-kbqa-eval/results.json" ] || timed $T eval $K --split dev --limit 400 --mode generate \
        --adapter "$OUT/raft-kbqa/iter_3/adapter" --output "$OUT/raft-kbqa-eval"
      $T compare-results "$OUT/kbqa-sft-eval" "$OUT/raft-kbqa-eval" | tee "$OUT/kbqa-compare.txt" ;;
    rm-lora | rm-top)
      # the LM reward model: LoRA on every projection, or the top 2 decoder layers trained in full (issue 34)
      m=${step#rm-}
      [ -f "$OUT/$step/reward.json" ] || timed $T reward train --method "$m" --data $HH --max-length 256 \
        --output "$OUT/$step"
      # reward train already scores its held-out pairs (OUT/STEP/dev-eval); a separate eval only for older runs
      [ -f "$OUT/$step/dev-eval/results.json" ] || [ -f "$OUT/$step-eval/results.json" ] || timed $T reward eval \
        --reward "$OUT/$step" --data "$OUT/$step/dev.jsonl" --output "$OUT/$step-eval" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
