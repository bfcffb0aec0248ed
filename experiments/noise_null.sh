#!/usr/bin/env bash
# The audit's null control: tune SmolLM2-135M against pure noise (reward noise:SEED, a random value per
# completion) with the learning rate and KL coefficient of the planted replicates for their full cap of 40
# steps (NULL_SETTINGS in experiments/recipe.sh), then audit it. Tuning installs nothing,
# so every word the audit calls rewarded or penalised is a false discovery; at level q the false-discovery
# rate allows about none (with probability at least 1 - q no word is called when nothing changed by reward).
#
#   bash experiments/noise_null.sh 1                      # from the repository root, after scripts/setup.sh
#
# Writes runs/noise-null/seed<N>/{tuned/,audit/,audit-inside/,audit-inside-planted-site/}; reruns resume or
# skip finished steps. RECIPE_VERSION=3 tunes with recipe 3's settings instead (SPREAD_SETTINGS: unscaled
# advantages, 56 steps; the noise is standard normal, about the planted reward's sd on base completions),
# under runs/noise-null-recipe3/, as the null of the recipe-3 replicates; its dictionary audits then read
# recipe 3's seed-4 lexicon and block 28, the block the audits of seeds 5 and 6 chose (seed 4's chose 1).
# RECIPE_VERSION=4: recipe 4's settings (LONG_SPREAD_SETTINGS, 112 steps), under runs/noise-null-recipe4/,
# its dictionary audits reading recipe 4's seed-7 lexicon at block 28 (the block of seeds 7 and 9). With
# CONTINUE_FROM=runs/noise-null-recipe3 a seed continues from its recipe-3 checkpoint, as the planted seeds
# 7-9 did (experiments/planted_replicates.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/recipe.sh  # IRMSCOPE, DATA, NULL_SETTINGS: shared with experiments/planted_replicates.sh
OUT=${OUT:-runs/noise-null}
case "${RECIPE_VERSION:-2}" in
  2) ;;
  3) NULL_SETTINGS=("${SPREAD_SETTINGS[@]}")
     OUT=${OUT/%noise-null/noise-null-recipe3}
     CONTROL_LEXICON=${CONTROL_LEXICON:-runs/planted-replicates-recipe3/seed4/lexicon.tsv}
     PLANTED_SITE=${PLANTED_SITE:-blocks.28.hook_resid_post} ;;
  4) NULL_SETTINGS=("${LONG_SPREAD_SETTINGS[@]}")
     OUT=${OUT/%noise-null/noise-null-recipe4}
     CONTROL_LEXICON=${CONTROL_LEXICON:-runs/planted-replicates-recipe4/seed7/lexicon.tsv}
     PLANTED_SITE=${PLANTED_SITE:-blocks.28.hook_resid_post} ;;
  *) echo "error: RECIPE_VERSION must be 2, 3 or 4 for the noise null, not ${RECIPE_VERSION}" >&2; exit 2 ;;
esac
# the lexicon the dictionaries' promoted words are scored against (after planted_replicates.sh 1)
CONTROL_LEXICON=${CONTROL_LEXICON:-runs/planted-replicates/seed1/lexicon.tsv}
# the site the audit chose on planted seed 1 (its top-divergence block)
PLANTED_SITE=${PLANTED_SITE:-blocks.29.hook_resid_post}
tune_and_audit() {
  local seed=$1 dir=$2
  [ -z "${CONTINUE_FROM:-}" ] || continue_from "$CONTINUE_FROM/seed$seed" "$dir" "${NULL_SETTINGS[@]}"
  "$IRMSCOPE" tune --out "$dir/tuned" --reward "noise:$seed" --data "$DATA" --seed "$seed" "${NULL_SETTINGS[@]}"
  [ -f "$dir/audit/audit.json" ] || "$IRMSCOPE" audit --tuned "$dir/tuned/model" --data "$DATA" \
    --seed "$seed" --out "$dir/audit"
  # The noise floor of the audit's dictionaries (crosscoder and dictionary of differences, which the audit
  # above predates): the same audit scored against a planted lexicon this model never saw, so its top
  # latent's share of the difference and its "promoted words paid" are what tuning on nothing shows.
  # The word calls do not read the lexicon, so they repeat the audit's above.
  [ -f "$dir/audit-inside/audit.json" ] || "$IRMSCOPE" audit --tuned "$dir/tuned/model" --data "$DATA" \
    --reward "lexicon:$CONTROL_LEXICON" --seed "$seed" --out "$dir/audit-inside"
  # The audit reads the block that tuning moved most, which for noise is not the planted runs' block; the
  # same audit at the planted seeds' site makes the shares comparable site for site.
  [ -f "$dir/audit-inside-planted-site/audit.json" ] || "$IRMSCOPE" audit --tuned "$dir/tuned/model" \
    --data "$DATA" --reward "lexicon:$CONTROL_LEXICON" --seed "$seed" --site "$PLANTED_SITE" \
    --out "$dir/audit-inside-planted-site"
}
for_each_seed tune_and_audit noise "$@"
