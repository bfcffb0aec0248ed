# What the planted replicates and the noise null share (sourced by their scripts, from the repository root):
# the irmscope command, the data, offline Hugging Face, and the tuning recipe.
#
# The recipe was fixed before any of their seeds was tuned: stronger than the demo's VADER recipe (learning
# rate 1e-3 instead of 5e-4, KL coefficient 0.02 instead of 0.1, 40 steps instead of 28) because a planted
# lexicon of 200 neutral words installs slowly. Everything else is the tune section's defaults
# (src/irmscope/config.py, TuneSection).
IRMSCOPE=${IRMSCOPE:-.venv/bin/irmscope}
DATA=${DATA:-../shared/data/imdb}
export HF_HUB_OFFLINE=1
TUNE_SETTINGS=(--set steps=40 --set learning_rate=1e-3 --set beta=0.02)

# for_each_seed STEP KIND SEED...: run `STEP SEED DIR` for each seed given, DIR being $OUT/seed<SEED>
# (created); KIND names the seeds in messages. With no seed, says what to give and exits 2.
for_each_seed() {
  local step=$1 kind=$2 seed dir
  shift 2
  [ $# -gt 0 ] || { echo "error: give one or more $kind seeds, e.g. bash $0 1 2 3" >&2; exit 2; }
  for seed in "$@"; do
    dir="$OUT/seed$seed"
    mkdir -p "$dir"
    echo "== $kind seed $seed -> $dir ($(date -u +%H:%M:%S))"
    "$step" "$seed" "$dir"
  done
}
