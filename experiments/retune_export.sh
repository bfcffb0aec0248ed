#!/usr/bin/env bash
# The audit's round trip (as the inverse-RL papers close the loop): tune the base model against the reward
# the audit elicited (audit/elicited.tsv) and against its control (audit/elicited-shuffled.tsv, the same words
# with their values shuffled), with the original tune's recipe for as many steps as it took (RECIPE in
# experiments/recipe.sh), then score both retuned models with
# the ORIGINAL reward on the original evaluation's prompts and seed.
#
#   bash experiments/retune_export.sh runs/planted-replicates/seed1      # after planted_replicates.sh 1
#
# The original reward is lexicon:DIR/lexicon.tsv (set REWARD=vader for a VADER run folder laid out alike).
# Writes DIR/retune-{elicited,shuffled}/ and DIR/retune-{elicited,shuffled}.json; reruns resume or skip.
# experiments/summarize_replicates.py reports each retune's gain as a share of the original tuning's gain.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/recipe.sh  # IRMSCOPE, DATA, RECIPE: the original tune's recipe
[ $# -eq 1 ] || { echo "error: give one replicate folder, e.g. bash $0 runs/planted-replicates/seed1" >&2; exit 2; }
dir=$1
seed=${dir##*seed}
REWARD=${REWARD:-lexicon:$dir/lexicon.tsv}
steps=$(.venv/bin/python -c "import json, sys; print(json.load(open(sys.argv[1]))['steps_done'])" \
  "$dir/tuned/model/irmscope_manifest.json")
for kind in elicited shuffled; do
  lexicon="$dir/audit/elicited.tsv"
  [ "$kind" = shuffled ] && lexicon="$dir/audit/elicited-shuffled.tsv"
  [ -f "$lexicon" ] || { echo "error: $lexicon is missing: run the audit first (it exports nothing when it calls no word)" >&2; exit 2; }
  echo "== retune against $kind export of $dir ($(date -u +%H:%M:%S))"
  "$IRMSCOPE" tune --out "$dir/retune-$kind" --reward "lexicon:$lexicon" --data "$DATA" --seed "$seed" \
    "${RECIPE[@]}" --set steps="$steps"
  [ -f "$dir/retune-$kind.json" ] || "$IRMSCOPE" evaluate --tuned "$dir/retune-$kind/model" \
    --reward "$REWARD" --data "$DATA" --n 200 --seed "$seed" --out "$dir/retune-$kind.json"
done
