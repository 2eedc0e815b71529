#!/bin/sh
# All latency benchmarks in one command (about 9 minutes on the quiet 2-core reference machine):
#   benchmarks/latency/run.sh [--quick] [--wait-quiet SECONDS]
# Writes benchmarks/results/latency.json, latency.png, the latency keys of summary.json,
# and the results table in benchmarks/README.md. The models must be pulled first
# (`.venv/bin/idv models pull`, or with --mirror /work/shared/models --offline).
set -eu
cd "$(dirname "$0")/../.."
exec .venv/bin/python -W ignore::FutureWarning -m benchmarks.latency "$@"
