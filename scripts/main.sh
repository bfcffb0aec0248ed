#!/usr/bin/env bash
# Set up (if needed) and run the main job: the pipeline on the default model (SmolLM2-135M-Instruct).
# Extra arguments go to `irmscope run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/irmscope run --preset demo "$@"
