#!/usr/bin/env bash
# Makes a fresh machine ready to build and test: the Rust components the checks need, Chromium for
# the browser tests, a reachable Docker, and the PostgreSQL image (pulled, or built from Debian
# packages when no registry answers).
# Safe to run again: each step is skipped when its result is already there.
#
#   ops/prerequisites.sh --local-model   also the offline default language model (ops/local-model
#                                        prepare: llama-server and Gemma 3 270M, a few minutes once)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'prerequisites: %s\n' "$*" >&2; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

command -v cargo >/dev/null || { log "error: Rust is not installed; see https://rustup.rs"; exit 1; }
if command -v rustup >/dev/null; then
    for component in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
    done
fi

# The Python tools of the tests and the smoke run (the MCP Python SDK among them).
ops/python-venv.sh >/dev/null

# The browser tests drive a real headless Chromium through chromedriver (Debian's packages).
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
    log "installing chromium and chromium-driver for the browser tests"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

# The assistant's offline default model, for ops/run with no model server configured and for CI.
case "${1:-}" in
    "") ;;
    --local-model) ops/local-model prepare ;;
    *) log "error: unknown argument '$1' (the one option is --local-model)"; exit 2 ;;
esac

# The harness needs Docker unless the tests are pointed at an existing server.
if [[ -n "${DEMO_TEST_DATABASE_URL:-}" ]]; then
    log "tests use the PostgreSQL server in DEMO_TEST_DATABASE_URL"
    exit 0
fi
docker_answers_within() { # seconds
    local deadline=$((SECONDS + $1))
    until docker info >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}
# A machine just booted may still be starting its daemon; one whose daemon is down gets it started
# when we may (the service manager first, else dockerd itself, detached, logging to
# /var/log/dockerd.log) and is given a minute to answer; otherwise the error comes at once.
if ! docker_answers_within 5; then
    startup_grace=0
    if command -v dockerd >/dev/null && { [[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null; }; then
        log "Docker is not answering; starting the Docker daemon"
        as_root systemctl start docker >/dev/null 2>&1 \
            || as_root service docker start >/dev/null 2>&1 \
            || true
        if ! docker_answers_within 10; then
            pgrep -x dockerd >/dev/null \
                || as_root sh -c 'setsid nohup dockerd </dev/null >>/var/log/dockerd.log 2>&1 &'
        fi
        startup_grace=60
    fi
    if ! docker_answers_within "$startup_grace"; then
        log "error: Docker is not reachable. Start the Docker daemon (e.g. 'sudo systemctl start docker'),"
        log "       or set DEMO_TEST_DATABASE_URL to an existing PostgreSQL server."
        exit 1
    fi
fi
image="${DEMO_POSTGRES_IMAGE:-postgres:15-bookworm}"
if ! docker image inspect "$image" >/dev/null 2>&1; then
    log "pulling $image"
    if ! docker pull --quiet "$image" >/dev/null 2>&1; then
        log "no registry answered; building $image from Debian packages"
        as_root env DEMO_POSTGRES_IMAGE="$image" ops/postgres-image/build.sh
    fi
fi
