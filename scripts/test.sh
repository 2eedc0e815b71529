#!/bin/sh
# Second command of the README: set up .venv with the test extras, pull the pinned
# models, run the whole test suite. Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."
IDV_EXTRAS="test,bench"
. scripts/_venv.sh
.venv/bin/idv models pull
exec .venv/bin/python -m pytest "$@"
