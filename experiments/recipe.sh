# What the planted replicates, the noise null and the retunes share (sourced by their scripts, from the
# repository root): the irmscope command, the data, offline Hugging Face, and the tuning recipes.
#
# TUNE_SETTINGS (recipe 2) tunes against a target: learning rate 1e-3 and KL coefficient 0.02 (stronger than
# the demo's 5e-4 and 0.1, because a planted lexicon of 200 neutral words installs slowly), a held-out check
# of the gain every 4 steps on 32 prompts, stopping once the gain's 95% interval clears +1.0 (about one more
# +4 word per completion), on a plateau, or at 40 steps. Recipe 1 was the same settings for a fixed 40 steps
# (--set steps=40 --set learning_rate=1e-3 --set beta=0.02); on planted seed 1, the first seed tuned with it,
# the policy collapsed onto repeating one planted word ("film film film ...", reward at its clip of 10), so
# recipe 2 stops at a target instead. That choice was made after seeing seed 1; seeds 2 and 3 are its test.
# A retune (experiments/retune_export.sh) takes RECIPE for as many steps as the original tune took.
# NULL_SETTINGS tunes the noise null for recipe 2's cap in full: noise never reaches a target, and the full
# cap is at least as many steps as any planted run took, so the null drifts at least as far.
# Everything else is the tune section's defaults (src/irmscope/config.py, TuneSection).
IRMSCOPE=${IRMSCOPE:-.venv/bin/irmscope}
DATA=${DATA:-../shared/data/imdb}
export HF_HUB_OFFLINE=1
RECIPE=(--set learning_rate=1e-3 --set beta=0.02)
TUNE_SETTINGS=("${RECIPE[@]}" --set target_gain=1.0 --set max_steps=40 --set eval_every=4)
NULL_SETTINGS=("${RECIPE[@]}" --set steps=40)

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
