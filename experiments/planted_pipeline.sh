#!/usr/bin/env bash
# The whole pipeline with experiments/planted.yaml's settings on each planted replicate's tuned model: the
# IRM regression and the policy shift on held-out planted words, Tables 5 and 6, probes and the leaderboard,
# per planted seed, beside the base model. Needs the replicate's lexicon and tuned model first.
#
#   bash experiments/planted_replicates.sh 1 2 3      # lexicons, tuned models, evaluations, audits
#   bash experiments/planted_pipeline.sh 1 2 3        # from the repository root, after scripts/setup.sh
#
# Writes runs/planted-replicates/seed<N>/pipeline/ (results.json, report.html, stages/); a killed run resumes
# with the same command. The pipeline's seed is the planted seed, so each seed also holds out other words.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/recipe.sh  # IRMSCOPE, DATA, for_each_seed
OUT=${OUT:-runs/planted-replicates}
study() {
  local seed=$1 dir=$2
  if [ ! -f "$dir/tuned/model/config.json" ] || [ ! -f "$dir/lexicon.tsv" ]; then
    echo "error: $dir has no tuned model or lexicon; run bash experiments/planted_replicates.sh $seed first" >&2
    exit 2
  fi
  "$IRMSCOPE" run --config experiments/planted.yaml --set seed="$seed" --set out_dir="$dir/pipeline" \
    --set model.tuned="$dir/tuned/model" --set reward.spec="lexicon:$dir/lexicon.tsv" \
    --set data.source="$DATA"
}
for_each_seed study planted "$@"
