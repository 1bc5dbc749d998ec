# Shared by ops/run, ops/smoke and ops/internal-token: names, defaults and the PostgreSQL container.
# Sourced, not run; the caller has already changed to the repository's root.

DEMO_STATE_DIR="${DEMO_STATE_DIR:-.demo}"
DEMO_CONTAINER="${DEMO_CONTAINER:-demo-monitoring-postgres}"
DEMO_VOLUME="${DEMO_VOLUME:-demo-monitoring-data}"
DEMO_POSTGRES_PORT="${DEMO_POSTGRES_PORT:-55432}"
DEMO_POSTGRES_IMAGE="${DEMO_POSTGRES_IMAGE:-postgres:15-bookworm}"
export DEMO_POSTGRES_IMAGE

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
fail() { log "error: $*"; exit 1; }

# Prints a secret of the state folder, making it first if it does not exist yet.
secret() {
    [[ -s "$DEMO_STATE_DIR/$1" ]] || (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$DEMO_STATE_DIR/$1")
    cat "$DEMO_STATE_DIR/$1"
}

# True when something accepts TCP connections at HOST:PORT.
port_answers() {
    local host="${1%:*}" port="${1##*:}"
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# Where cargo puts release builds.
release_dir() { printf '%s/release' "${CARGO_TARGET_DIR:-target}"; }

container_running() {
    [[ "$(docker inspect --format '{{.State.Running}}' "$DEMO_CONTAINER" 2>/dev/null)" == "true" ]]
}

# Starts the PostgreSQL container, reusing a running or stopped one.
start_postgres() {
    local password="$1"
    if container_running; then
        return 0
    fi
    if docker container inspect "$DEMO_CONTAINER" >/dev/null 2>&1; then
        log "starting the existing PostgreSQL container $DEMO_CONTAINER"
        docker start "$DEMO_CONTAINER" >/dev/null 2>"$DEMO_STATE_DIR/logs/docker-start.err" || {
            sed 's/^/    /' "$DEMO_STATE_DIR/logs/docker-start.err" >&2
            fail "the container $DEMO_CONTAINER would not start (above); if port $DEMO_POSTGRES_PORT is taken, free it or remove the container ('docker rm -f $DEMO_CONTAINER': the data stays in the volume $DEMO_VOLUME) and set DEMO_POSTGRES_PORT"
        }
        return 0
    fi
    if port_answers "127.0.0.1:$DEMO_POSTGRES_PORT"; then
        fail "port $DEMO_POSTGRES_PORT is already in use by another program; stop it, or choose another port with DEMO_POSTGRES_PORT"
    fi
    log "starting PostgreSQL ($DEMO_POSTGRES_IMAGE) on 127.0.0.1:$DEMO_POSTGRES_PORT"
    # The password reaches docker through its environment, never its command line.
    POSTGRES_PASSWORD="$password" docker run --detach --name "$DEMO_CONTAINER" \
        --env POSTGRES_PASSWORD --env POSTGRES_DB=monitoring \
        --publish "127.0.0.1:$DEMO_POSTGRES_PORT:5432" \
        --volume "$DEMO_VOLUME:/var/lib/postgresql/data" \
        "$DEMO_POSTGRES_IMAGE" >/dev/null
}

# psql inside the container, as the superuser, over TCP (the password through the environment).
psql_in_container() {
    local password="$1"
    shift
    PGPASSWORD="$password" docker exec -i --env PGPASSWORD "$DEMO_CONTAINER" \
        psql -h 127.0.0.1 -U postgres -d monitoring -v ON_ERROR_STOP=1 -qtA "$@"
}

# Waits for the real server. The image's first start runs a temporary server on the socket only
# (to create the database and run init scripts) and then restarts; only the final server listens
# on TCP, so a query over TCP is the readiness check that cannot be fooled by the temporary one.
wait_for_postgres() {
    local password="$1" seconds="${DEMO_START_TIMEOUT:-60}"
    for _ in $(seq 1 $((seconds * 2))); do
        if ! container_running; then
            docker logs --tail 30 "$DEMO_CONTAINER" 2>&1 | sed 's/^/    /' >&2
            fail "the PostgreSQL container $DEMO_CONTAINER stopped (its last log lines are above)"
        fi
        psql_in_container "$password" -c 'SELECT 1' >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    docker logs --tail 30 "$DEMO_CONTAINER" 2>&1 | sed 's/^/    /' >&2
    fail "PostgreSQL did not accept connections on TCP within ${seconds}s (its last log lines are above)"
}
