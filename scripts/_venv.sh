# Sourced by serve.sh and test.sh: create .venv at the repository root (Python >= 3.11)
# and install the project into it; fast when nothing changed.
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "idv needs Python 3.11 or newer as \$PYTHON (found: $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=".venv/.idv-installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)-${IDV_EXTRAS:-none}"
if [ ! -f "$stamp" ]; then
    if [ -n "${IDV_EXTRAS:-}" ]; then
        .venv/bin/python -m pip install --quiet -e ".[${IDV_EXTRAS}]"
    else
        .venv/bin/python -m pip install --quiet -e .
    fi
    touch "$stamp"
fi
