#!/usr/bin/env bash
# Planted-lexicon replicates: for each planted seed, draw a fresh planted lexicon, tune SmolLM2-135M against
# it with GRPO, measure the held-out tuning gain, and audit the tuned model blind and against the lexicon.
#
#   bash experiments/planted_replicates.sh 1 2 3          # from the repository root, after scripts/setup.sh
#
# Writes runs/planted-replicates/seed<N>/{lexicon.tsv,tuned/,evaluation.json,audit/}. Every
# step resumes or is skipped when its output exists, so a killed run is rerun with the same command.
#
# The recipe (TUNE_SETTINGS) was fixed before any of these seeds was tuned; it is not chosen on seed 0,
# whose one dominant word ("movie") made it easy. It is stronger than the demo's VADER recipe (learning rate
# 1e-3 instead of 5e-4, KL coefficient 0.02 instead of 0.1, 40 steps) because a planted lexicon of 200
# neutral words installs slowly. The evaluation and the audits use held-out IMDb test prompts.
set -euo pipefail
cd "$(dirname "$0")/.."
IRMSCOPE=${IRMSCOPE:-.venv/bin/irmscope}
DATA=${DATA:-../shared/data/imdb}
OUT=${OUT:-runs/planted-replicates}
TUNE_SETTINGS=(--set steps=40 --set learning_rate=1e-3 --set beta=0.02)
export HF_HUB_OFFLINE=1
[ $# -gt 0 ] || { echo "error: give one or more planted seeds, e.g. bash $0 1 2 3" >&2; exit 2; }
for seed in "$@"; do
  dir="$OUT/seed$seed"
  mkdir -p "$dir"
  echo "== planted seed $seed -> $dir ($(date -u +%H:%M:%S))"
  [ -f "$dir/lexicon.tsv" ] || "$IRMSCOPE" planted-lexicon --out "$dir/lexicon.tsv" --seed "$seed" --data "$DATA"
  "$IRMSCOPE" tune --out "$dir/tuned" --reward "lexicon:$dir/lexicon.tsv" --data "$DATA" --seed "$seed" \
    "${TUNE_SETTINGS[@]}"
  [ -f "$dir/evaluation.json" ] || "$IRMSCOPE" evaluate --tuned "$dir/tuned/model" \
    --reward "lexicon:$dir/lexicon.tsv" --data "$DATA" --n 200 --seed "$seed" --out "$dir/evaluation.json"
  # The audit's word calls never read --reward (it only adds the comparison), so one audit serves both.
  [ -f "$dir/audit/audit.json" ] || "$IRMSCOPE" audit --tuned "$dir/tuned/model" --data "$DATA" \
    --reward "lexicon:$dir/lexicon.tsv" --seed "$seed" --out "$dir/audit"
done
