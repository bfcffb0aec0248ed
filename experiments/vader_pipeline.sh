#!/usr/bin/env bash
# The VADER findings from scratch: tune SmolLM2-135M-Instruct against VADER (GRPO, the tune section's
# defaults) and with DPO on IMDb, run every pipeline stage with experiments/vader.yaml, evaluate the DPO
# model, and make the reward edit. docs/findings.md cites the numbers this writes.
#
#   bash experiments/vader_pipeline.sh        # from the repository root, after scripts/setup.sh
#
# Writes runs/vader-tuned/, runs/dpo/, runs/dpo-evaluation.json, runs/vader/ (results.json, report.html,
# tables/) and runs/vader/edits/boring/. A killed chain resumes with the same command: a finished tune or
# evaluation is kept, and the run resumes at its first unfinished stage.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/recipe.sh  # IRMSCOPE, DATA, offline Hugging Face
step() { echo "== $1 ($(date -u +%H:%M:%S))"; }
if [ ! -f runs/vader-tuned/model/config.json ]; then
  step "tune against VADER (GRPO)"
  "$IRMSCOPE" tune --out runs/vader-tuned --data "$DATA"
fi
if [ ! -f runs/dpo/model/config.json ]; then
  step "tune with DPO"
  "$IRMSCOPE" tune --out runs/dpo --algorithm dpo --data "$DATA"
fi
if [ ! -f runs/dpo-evaluation.json ]; then
  step "evaluate the DPO model"
  "$IRMSCOPE" evaluate --tuned runs/dpo/model --n 200 --data "$DATA" --out runs/dpo-evaluation.json
fi
step "every stage on the VADER model"
"$IRMSCOPE" run --config experiments/vader.yaml --set data.source="$DATA"
if [ ! -f runs/vader/edits/boring/edit.json ]; then
  step "the reward edit"
  "$IRMSCOPE" edit runs/vader --word boring --gain 1.25
fi
step "done"
