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
# SPREAD_SETTINGS (recipe 3) aims at installing the whole lexicon rather than a few of its words. Recipes 0-2
# (and seed 0's) left TRL's default GRPO advantages, each group's rewards divided by their spread. The
# hypothesis (not isolated: recipe 3 changes four settings at once): once a group's completions all repeat
# one rewarded word, tiny reward differences still get unit-sized advantages, and the policy keeps collapsing
# onto that word (KL 0.9 nats per token after 34 steps of recipe 0 on seed 1). With unscaled advantages
# (scale_rewards=none, as the Dr. GRPO paper recommends) the idealised objective, E[reward] - beta * KL over
# whole completions, has the optimum pi_base * exp(reward / beta), which multiplies every occurrence of a
# planted word by exp(value / (5 beta)): in proportion to its value, for all 200 words at once. TRL's
# per-token KL estimate and the group-mean baseline (which includes the sample itself, a factor 7/8) make
# that hold only approximately. beta 0.5 keeps that tilt mild (a +4 word of order 5x more likely, about 0.08
# nats per token at the optimum for the reward's sd of about 1.1 on base completions); learning rate 1e-3
# for 56 steps. The runs stay far from that optimum (gains of +0.2 against about +2.5 there); what they
# show is the audit's reading of the path taken, not the optimum.
# Chosen from that argument after seeing recipes 0-2 collapse on seeds 1-3 (and recipe 0 again on seed 1),
# before any seed was tuned with it; seeds 4-6 are its test.
# LONG_SPREAD_SETTINGS (recipe 4) is recipe 3 for 112 steps. Why more steps of the same objective: after 56
# steps of recipe 3 (seeds 4-9) the training batches' KL to the base model is about 0.02 nats per token
# (0.6 per completion) and still rising slowly, yet the gain (+0.2) is far below what that much KL buys at
# the optimum (about sqrt(2 * KL * Var[reward]), +1.2). The hypothesis: most of the movement so far is the
# noise of 32 completions per step, which the KL term holds in check, while the reward's signal adds up
# step by step. (On seeds 7-9 more steps raised tau, but the gain hardly moved while the KL rose: the
# gain side of the hypothesis was not borne out; docs/replicates.md.) Stated before any
# run of it (docs/replicates.md, "Recipe 4"); seeds 7-9 continued from their 56-step checkpoints are its
# first test (CONTINUE_FROM in planted_replicates.sh), fresh seeds its next.
# A retune (experiments/retune_export.sh) repeats the original tune's settings from its manifest
# (experiments/retune_plan.py) for as many steps as it took.
# NULL_SETTINGS tunes the noise null for recipe 2's cap in full: noise never reaches a target, and the full
# cap is at least as many steps as any planted run took, so the null drifts at least as far.
# Everything else is the tune section's defaults (src/irmscope/config.py, TuneSection).
IRMSCOPE=${IRMSCOPE:-.venv/bin/irmscope}
DATA=${DATA:-../shared/data/imdb}
export HF_HUB_OFFLINE=1
RECIPE=(--set learning_rate=1e-3 --set beta=0.02)
TUNE_SETTINGS=("${RECIPE[@]}" --set target_gain=1.0 --set max_steps=40 --set eval_every=4)
NULL_SETTINGS=("${RECIPE[@]}" --set steps=40)
SPREAD_SETTINGS=(--set scale_rewards=none --set beta=0.5 --set learning_rate=1e-3 --set steps=56)
LONG_SPREAD_SETTINGS=(--set scale_rewards=none --set beta=0.5 --set learning_rate=1e-3 --set steps=112)

# continue_from EARLIER DIR [--set KEY=VALUE ...]: give DIR's tuning EARLIER's last training checkpoint to
# resume from, once, and record which in DIR/continued_from (the tuned model's manifest names only the copy
# it resumed). A tuning of DIR's own (a model, or a checkpoint) is left alone; an empty checkpoints folder,
# which the trainer makes before its first step, is not one. Refused: a different planted lexicon (a noise
# null's reward is its seed, the same in both), and, where EARLIER's tuned model records its settings, any
# setting given other than steps that EARLIER was not tuned with (continuing recipe 2 as recipe 4, say),
# both read by irmscope's own config (TuneSection), as irmscope tune reads them.
continue_from() {
  local earlier=$1 dir=$2 last="" checkpoint step=-1 differs
  shift 2
  if [ -e "$dir/tuned/model" ] || compgen -G "$dir/tuned/checkpoints/checkpoint-*" >/dev/null; then
    echo "CONTINUE_FROM: $dir/tuned already holds its own tuning; resuming that, not $earlier"
    return 0
  fi
  [ ! -f "$earlier/lexicon.tsv" ] && [ ! -f "$dir/lexicon.tsv" ] || cmp -s "$earlier/lexicon.tsv" "$dir/lexicon.tsv" ||
    { echo "error: $earlier/lexicon.tsv is not $dir/lexicon.tsv; CONTINUE_FROM must hold the same seeds (the same lexicon)" >&2; exit 2; }
  if [ -f "$earlier/tuned/model/irmscope_manifest.json" ]; then
    differs=$(.venv/bin/python - "$earlier/tuned/model/irmscope_manifest.json" "$@" <<'PY'
import json, sys
from irmscope.config import TuneSection, load_config
done = TuneSection.model_validate(json.load(open(sys.argv[1]))["hyperparameters"])
given = [a for a in sys.argv[2:] if a != "--set"]
asked = load_config("demo", overrides=[f"tune.{s}" for s in given]).tune  # read as irmscope tune reads them
keys = [s.split("=", 1)[0] for s in given if not s.startswith("steps=")]
print(" ".join(f"{k}={getattr(asked, k)} (was {getattr(done, k)})" for k in keys if getattr(asked, k) != getattr(done, k)))
PY
) || { echo "error: cannot read $earlier/tuned/model/irmscope_manifest.json's settings" >&2; exit 2; }
    [ -z "$differs" ] ||
      { echo "error: $earlier was tuned with other settings than $differs; CONTINUE_FROM must hold the same recipe" >&2; exit 2; }
  fi
  for checkpoint in "$earlier"/tuned/checkpoints/checkpoint-*; do  # the newest by its step number
    [ -d "$checkpoint" ] && [ "${checkpoint##*-}" -gt "$step" ] && { step=${checkpoint##*-}; last=$checkpoint; }
  done
  [ -n "$last" ] || { echo "error: $earlier/tuned/checkpoints holds no checkpoint to continue from" >&2; exit 2; }
  rm -rf "$dir/tuned/checkpoints.partial"  # a copy a kill cut short
  mkdir -p "$dir/tuned/checkpoints.partial"
  cp -r "$last" "$dir/tuned/checkpoints.partial/"
  rm -rf "$dir/tuned/checkpoints"  # holds no checkpoint (above)
  mv "$dir/tuned/checkpoints.partial" "$dir/tuned/checkpoints"
  echo "$last" > "$dir/continued_from"
  echo "continuing from $last"
}
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
