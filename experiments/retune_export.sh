#!/usr/bin/env bash
# The round trip (as the inverse-RL papers close the loop): tune the base model against a reward elicited
# from a tuned model and against its control, with the original tune's recipe and seed for as many steps as
# it took, then score both retuned models with the ORIGINAL reward on the original
# evaluation's prompts and seed. Two exports, chosen by EXPORT:
#
#   EXPORT=audit (default): the audit's word values, audit/elicited.tsv, and its control
#     audit/elicited-shuffled.tsv (the same words with their values shuffled); writes retune-elicited and
#     retune-shuffled;
#   EXPORT=irl: the inverse-RL reward the pipeline's irl-reward stage saved (pipeline/stages/irl-reward-KEY/
#     reward, a read-out of the tuned model's residual stream) and its control reward-shuffled (the weights
#     shuffled across the features); writes retune-irl and retune-irl-shuffled.
#
#   bash experiments/retune_export.sh runs/planted-replicates/seed1             # after planted_replicates.sh 1
#   EXPORT=irl bash experiments/retune_export.sh runs/planted-replicates/seed1  # after planted_pipeline.sh 1
#
# DIR is a planted replicate or a pipeline run folder (e.g. runs/vader, after experiments/vader_pipeline.sh):
#
#   bash experiments/retune_export.sh runs/vader                                 # the VADER round trip
#
# experiments/retune_plan.py reads what each layout holds: the original reward, base model and tune (every
# setting, from the tuned model's manifest), steps, seed, data and evaluation settings. EVAL_BATCH sets the
# evaluation's sampling batch, which must be the original evaluation's for the two to share base
# completions: a run folder's is read from its config; the replicates of docs/replicates.md were evaluated
# in batches of 16 (EVAL_BATCH=16). REWARD overrides the original reward.
# Writes DIR/retune-KIND/ and DIR/retune-KIND.json; reruns resume or skip.
# experiments/summarize_replicates.py reports each retune's gain as a share of the original tuning's gain.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/recipe.sh  # IRMSCOPE, DATA (the replicates' data)
[ $# -eq 1 ] || { echo "error: give one replicate or run folder, e.g. bash $0 runs/planted-replicates/seed1" >&2; exit 2; }
dir=$1 given_batch=${EVAL_BATCH:-} given_reward=${REWARD:-}
plan=$(.venv/bin/python experiments/retune_plan.py "$dir" "$DATA") || exit 2
eval "$plan"
EVAL_BATCH=${given_batch:-$EVAL_BATCH} REWARD=${given_reward:-$REWARD}
case "${EXPORT:-audit}" in
  audit)
    kinds=(elicited shuffled)
    exports=("lexicon:$AUDIT_DIR/elicited.tsv" "lexicon:$AUDIT_DIR/elicited-shuffled.tsv")
    [ -n "$AUDIT_DIR" ] || { echo "error: $dir has no audit yet; run $AUDIT_HINT first" >&2; exit 2; } ;;
  irl)
    kinds=(irl irl-shuffled)
    exports=("readout:$IRL_DIR/reward" "readout:$IRL_DIR/reward-shuffled")
    [ -n "$IRL_DIR" ] || { echo "error: $dir has no inverse-RL export yet; run $IRL_HINT first" >&2; exit 2; } ;;
  *) echo "error: EXPORT must be audit or irl, not ${EXPORT}" >&2; exit 2 ;;
esac
for i in 0 1; do
  kind=${kinds[$i]} export=${exports[$i]}
  [ -e "${export#*:}" ] || { echo "error: ${export#*:} is missing (the stage exports nothing when it calls no word)" >&2; exit 2; }
  echo "== retune against the $kind export of $dir ($(date -u +%H:%M:%S))"
  "$IRMSCOPE" tune --out "$dir/retune-$kind" --reward "$export" --data "$DATA" --seed "$TUNE_SEED" \
    --model "$BASE_MODEL" --algorithm "$ALGORITHM" "${TUNE_ARGS[@]}" --set steps="$STEPS"
  [ -f "$dir/retune-$kind.json" ] || "$IRMSCOPE" evaluate --tuned "$dir/retune-$kind/model" \
    --base "$BASE_MODEL" --reward "$REWARD" --data "$DATA" --n "$EVAL_N" --seed "$SEED" \
    --prefix-tokens "$PREFIX_TOKENS" --completion-tokens "$COMPLETION_TOKENS" \
    ${EVAL_BATCH:+--batch-size "$EVAL_BATCH"} --out "$dir/retune-$kind.json"
done
