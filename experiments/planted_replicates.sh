#!/usr/bin/env bash
# Planted-lexicon replicates: for each planted seed, draw a fresh planted lexicon, tune SmolLM2-135M against
# it with GRPO, measure the held-out tuning gain, and audit the tuned model blind and against the lexicon.
#
#   bash experiments/planted_replicates.sh 1 2 3          # from the repository root, after scripts/setup.sh
#
# Writes runs/planted-replicates/seed<N>/{lexicon.tsv,tuned/,evaluation.json,audit/} (RECIPE_VERSION=1:
# recipe 1, under runs/planted-replicates-recipe1/; RECIPE_VERSION=0: the older seed-0 study's recipe, the
# tune section's defaults for 56 steps, under runs/planted-replicates-recipe0/, for the issue's "movie"
# check: RECIPE_VERSION=0 bash experiments/planted_replicates.sh 0; RECIPE_VERSION=3: recipe 3, unscaled
# advantages, under runs/planted-replicates-recipe3/: RECIPE_VERSION=3 bash experiments/planted_replicates.sh
# 4 5 6; RECIPE_VERSION=4: recipe 3 for 112 steps, under runs/planted-replicates-recipe4/). With
# CONTINUE_FROM=runs/planted-replicates-recipe3 a seed's tuning starts from the last training checkpoint of
# that seed there (the same planted lexicon is checked first): recipe 4 continued from recipe 3's 56 steps,
# the same as a 112-step run killed at step 56 and resumed, since the learning rate is constant and the
# checkpoint keeps the optimiser's state. Every
# step resumes or is skipped when its output exists, so a killed run is rerun with the same command.
#
# The recipe (TUNE_SETTINGS in experiments/recipe.sh: recipe 2, tuning against a target gain) is not chosen
# on seed 0, whose one dominant word ("movie") made it easy; recipe.sh says how it came after recipe 1. The
# evaluation and the audits use held-out IMDb test prompts. Results: docs/replicates.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/recipe.sh  # IRMSCOPE, DATA, TUNE_SETTINGS: shared with experiments/noise_null.sh
OUT=${OUT:-runs/planted-replicates}
case "${RECIPE_VERSION:-2}" in
  2) ;;
  1)  # recipe 1 (see recipe.sh): a fixed 40 steps, as the noise null
    TUNE_SETTINGS=("${NULL_SETTINGS[@]}")
    OUT=${OUT/%planted-replicates/planted-replicates-recipe1} ;;
  0)  # the seed-0 study's recipe (docs/findings.md): the tune section's defaults for 56 steps
    TUNE_SETTINGS=(--set steps=56)
    OUT=${OUT/%planted-replicates/planted-replicates-recipe0} ;;
  3)  # recipe 3 (see recipe.sh): unscaled GRPO advantages and a KL coefficient that keeps the optimum mild
    TUNE_SETTINGS=("${SPREAD_SETTINGS[@]}")
    OUT=${OUT/%planted-replicates/planted-replicates-recipe3} ;;
  4)  # recipe 4 (see recipe.sh): recipe 3 for 112 steps
    TUNE_SETTINGS=("${LONG_SPREAD_SETTINGS[@]}")
    OUT=${OUT/%planted-replicates/planted-replicates-recipe4} ;;
  *) echo "error: RECIPE_VERSION must be 0, 1, 2, 3 or 4, not ${RECIPE_VERSION}" >&2; exit 2 ;;
esac
replicate() {
  local seed=$1 dir=$2
  [ -f "$dir/lexicon.tsv" ] || "$IRMSCOPE" planted-lexicon --out "$dir/lexicon.tsv" --seed "$seed" --data "$DATA"
  [ -z "${CONTINUE_FROM:-}" ] || continue_from "$CONTINUE_FROM/seed$seed" "$dir" "${TUNE_SETTINGS[@]}"
  "$IRMSCOPE" tune --out "$dir/tuned" --reward "lexicon:$dir/lexicon.tsv" --data "$DATA" --seed "$seed" \
    "${TUNE_SETTINGS[@]}"
  [ -f "$dir/evaluation.json" ] || "$IRMSCOPE" evaluate --tuned "$dir/tuned/model" \
    --reward "lexicon:$dir/lexicon.tsv" --data "$DATA" --n 200 --seed "$seed" --out "$dir/evaluation.json"
  # The audit's word calls never read --reward (it only adds the comparison), so one audit serves both.
  [ -f "$dir/audit/audit.json" ] || "$IRMSCOPE" audit --tuned "$dir/tuned/model" --data "$DATA" \
    --reward "lexicon:$dir/lexicon.tsv" --seed "$seed" --out "$dir/audit"
}
for_each_seed replicate planted "$@"
