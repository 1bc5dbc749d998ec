#!/usr/bin/env bash
# Makes the Python virtual environment of the tests and the smoke run (the packages in
# ops/python-requirements.txt) and prints its folder. Reused while the requirements are unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${DEMO_PYTHON_VENV:-$HOME/.cache/dual-mcp/venv}"
requirements=ops/python-requirements.txt
stamp="$venv/.requirements"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$requirements" "$stamp"; then
    command -v python3 >/dev/null || { echo "python-venv: error: python3 is needed (e.g. 'apt-get install python3 python3-venv')" >&2; exit 1; }
    echo "python-venv: installing $(grep -cv '^#' "$requirements") package(s) into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi
printf '%s\n' "$venv"
