#!/usr/bin/env bash
# The round trip (as the inverse-RL papers close the loop): tune the base model against a reward elicited
# from a tuned model and against its control, with the original tune's recipe for as many steps as it took
# (RECIPE in experiments/recipe.sh), then score both retuned models with the ORIGINAL reward on the original
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
# The original reward is lexicon:DIR/lexicon.tsv (set REWARD=vader for a VADER run folder laid out alike).
# EVAL_BATCH sets the evaluation's sampling batch, which must be the original evaluation's for the two to
# share base completions: the replicates of docs/replicates.md were evaluated in batches of 16
# (EVAL_BATCH=16); unset, the default batch.
# Writes DIR/retune-KIND/ and DIR/retune-KIND.json; reruns resume or skip.
# experiments/summarize_replicates.py reports each retune's gain as a share of the original tuning's gain.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/recipe.sh  # IRMSCOPE, DATA, RECIPE: the original tune's recipe
[ $# -eq 1 ] || { echo "error: give one replicate folder, e.g. bash $0 runs/planted-replicates/seed1" >&2; exit 2; }
dir=$1
seed=${dir##*seed}
REWARD=${REWARD:-lexicon:$dir/lexicon.tsv}
case "${EXPORT:-audit}" in
  audit)
    kinds=(elicited shuffled)
    exports=("lexicon:$dir/audit/elicited.tsv" "lexicon:$dir/audit/elicited-shuffled.tsv")
    missing="run the audit first (it exports nothing when it calls no word)" ;;
  irl)
    stage=$(ls -d "$dir"/pipeline/stages/irl-reward-*/ 2>/dev/null | head -1 || true)
    kinds=(irl irl-shuffled)
    exports=("readout:${stage}reward" "readout:${stage}reward-shuffled")
    missing="run bash experiments/planted_pipeline.sh $seed first (its irl-reward stage saves the reward)" ;;
  *) echo "error: EXPORT must be audit or irl, not ${EXPORT}" >&2; exit 2 ;;
esac
steps=$(.venv/bin/python -c "import json, sys; print(json.load(open(sys.argv[1]))['steps_done'])" \
  "$dir/tuned/model/irmscope_manifest.json")
for i in 0 1; do
  kind=${kinds[$i]} export=${exports[$i]}
  [ -e "${export#*:}" ] || { echo "error: ${export#*:} is missing: $missing" >&2; exit 2; }
  echo "== retune against the $kind export of $dir ($(date -u +%H:%M:%S))"
  "$IRMSCOPE" tune --out "$dir/retune-$kind" --reward "$export" --data "$DATA" --seed "$seed" \
    "${RECIPE[@]}" --set steps="$steps"
  [ -f "$dir/retune-$kind.json" ] || "$IRMSCOPE" evaluate --tuned "$dir/retune-$kind/model" \
    --reward "$REWARD" --data "$DATA" --n 200 --seed "$seed" ${EVAL_BATCH:+--batch-size "$EVAL_BATCH"} \
    --out "$dir/retune-$kind.json"
done
