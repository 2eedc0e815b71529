#!/bin/sh
# First command of the README: set up .venv, pull the pinned models, start the node
# on 127.0.0.1:50051 with the embedded defaults. Extra arguments go to server.py
# (e.g. --port 50052). IDV_MODEL_MIRROR points the pull at a local mirror.
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
.venv/bin/idv models pull
exec .venv/bin/python server.py "$@"
