#!/usr/bin/env bash
# The Python environment of the OAuth interoperability test: the official MCP SDK (`mcp` from PyPI,
# whose OAuthClientProvider is the client under test) and httpx, in a venv under
# ~/.cache/dual-mcp/ (or $DUAL_MCP_PYTHON_VENV). Idempotent: does nothing when the venv already
# has the SDK. Prints the venv's python on its last line.
set -euo pipefail

venv="${DUAL_MCP_PYTHON_VENV:-$HOME/.cache/dual-mcp/python-venv}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import mcp.client.auth, httpx' 2>/dev/null; then
    echo "$venv/bin/python"
    exit 0
fi

command -v "$python" >/dev/null || { echo "python3 is needed for the OAuth interoperability test" >&2; exit 1; }
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    # Debian splits venv/ensurepip into its own package.
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get install -y python3-venv >&2
    else
        echo "python3's venv module is missing (Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet 'mcp>=1.23' httpx >&2
"$venv/bin/python" -c 'import mcp.client.auth, httpx' >&2
echo "$venv/bin/python"
