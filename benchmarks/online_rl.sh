#!/usr/bin/env bash
# GRPO / RLOO (issue 30 part 2), one step after another (run alone on the machine). From the repository root with
# the venv active:
#   bash benchmarks/online_rl.sh OUT [STEP...]     STEP: rm-minilm grpo-hh rloo-hh generation align-eval kbqa
# Every step writes under OUT and is skipped (or resumed) when its folder already holds the run. HH-RLHF prompts and
# the MiniLM judge use the same 20% held-out prompts as benchmarks/alignment.sh (dev_share 0.2, seed 1234), so RAFT,
# DPO and KTO from that script's OUT compare on the same prompts (pass it as ALIGN_OUT for align-eval).
set -euo pipefail
OUT=${1:?usage: online_rl.sh OUT [STEP...]}
shift
STEPS=${*:-rm-minilm grpo-hh rloo-hh generation align-eval}
source "$(dirname "$0")/common.sh"
mkdir -p "$OUT"
STEPS_RL=${RL_STEPS:-30}

for step in $STEPS; do
  case $step in
    rm-minilm)
      rm_minilm "$OUT" ;;
    grpo-hh | rloo-hh)
      # 2 prompts x 4 answers per step, 48 new tokens, the MiniLM judge as the reward; 100 held-out prompts x 2
      method=${step%-hh}
      [ -f "$OUT/$step/run_card.json" ] || timed $T align --method "$method" --reward "$OUT/rm-minilm" --data $HH \
        --num-generations 4 --batch-size 8 --max-steps "$STEPS_RL" --max-new-tokens 48 --eval-prompts 100 \
        --eval-samples 2 --logging-steps 1 --output "$OUT/$step" $(again "$OUT/$step") ;;
    generation)
      # TRL's two generation paths side by side: 6 GRPO steps each, the same seed, nothing else different
      for g in generate continuous; do
        [ -f "$OUT/gen-$g/run_card.json" ] || timed $T align --method grpo --reward length:shorter --data $HH \
          --num-generations 4 --batch-size 8 --max-steps 6 --max-new-tokens 48 --eval-prompts 2 --logging-steps 1 \
          --generation "$g" --output "$OUT/gen-$g"
      done ;;
    align-eval)
      # base, then every policy of this OUT and of ALIGN_OUT (benchmarks/alignment.sh) that exists
      P=base
      for q in "$OUT/grpo-hh" "$OUT/rloo-hh" "${ALIGN_OUT:-/nonexistent}/raft-hh/iter_3/adapter" \
               "${ALIGN_OUT:-/nonexistent}/dpo"; do
        [ -f "$q/adapter_config.json" ] && P="$P,$q"
      done
      timed $T align eval --policies "$P" --reward "$OUT/rm-minilm" --data "$OUT/rm-minilm/dev.jsonl" \
        --eval-prompts 200 --eval-samples 4 --max-new-tokens 48 --max-length 384 --output "$OUT/align-eval-$(date +%s)" ;;
    kbqa)
      # needs benchmarks/alignment.sh's kbqa step first (its SFT adapter and dev split): ALIGN_OUT=that OUT
      A=${ALIGN_OUT:?set ALIGN_OUT to the OUT of benchmarks/alignment.sh kbqa}
      K="--task nlpcc_kbqa --data-dir $A/kbqa-data"
      # the reward RAFT learned from (ROUGE-L against the gold entity; 1.0 = right), dense enough for group advantages
      [ -f "$OUT/grpo-kbqa/run_card.json" ] || timed $T align --method grpo $K --reward metric:rouge_l \
        --adapter "$A/kbqa-sft" --num-generations 4 --batch-size 8 --max-steps "${KBQA_RL_STEPS:-96}" \
        --temperature 0.7 --max-new-tokens 32 --eval-prompts 64 --output "$OUT/grpo-kbqa" $(again "$OUT/grpo-kbqa")
      [ -f "$OUT/grpo-kbqa-eval/results.json" ] || timed $T eval $K --split dev --limit 400 --mode generate \
        --model "hf:$OUT/grpo-kbqa" --output "$OUT/grpo-kbqa-eval"
      $T compare-results "$A/kbqa-sft-eval" "$OUT/grpo-kbqa-eval" | tee "$OUT/kbqa-grpo-vs-sft.txt"
      $T compare-results "$A/raft-kbqa-eval" "$OUT/grpo-kbqa-eval" | tee "$OUT/kbqa-grpo-vs-raft.txt" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
