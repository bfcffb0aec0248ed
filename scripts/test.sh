#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# worksteal: an idle worker takes tests queued for the other, so the few minute-long smoke runs do not end
# the suite on one worker while the other waits (3.8 min here against 4.1 with the default scheduling)
# --durations: every run (CI's too) ends with its 25 slowest tests, so where the suite's time goes is on
# record when it grows past its 4-minute budget (issue 19)
exec .venv/bin/python -m pytest -n "${IRMSCOPE_TEST_WORKERS:-2}" --dist worksteal --durations=25 "$@"
