#!/usr/bin/env bash
# `make e2e`: chatrelay end to end through nginx (TLS + HTTP/2), on a real Docker engine.
#
#   1. Engine (E2E_ENGINE, default auto): a Docker that already answers (with Compose v2), else
#      the private dockerd of scripts/engine.sh (started here, and stopped again at the end
#      when this script started it), else - no root - the native stack of `make dev`.
#   2. Base images: public ones, or Debian stand-ins when no registry answers (base-images.sh).
#   3. `docker compose up --build --wait` as project chatrelay-e2e on 127.0.0.1:18443/18080.
#   4. pytest tests/e2e: three clients, streaming spread, scale-out, restart survival.
#   5. Always: logs to test-artifacts/e2e/ on failure, `down --volumes`, engine stopped
#      (which also removes its iptables chains and bridges) if this script started it.
#
# E2E_ENGINE=auto|system|private|native, E2E_IMAGES=auto|standins|public, E2E_HTTPS_PORT /
# E2E_HTTP_PORT (18443/18080), E2E_TOKEN_DELAY (0.05 s), E2E_EXTRA_COMPOSE, E2E_PYTEST_ARGS.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
ENGINE_MODE=${E2E_ENGINE:-auto}
PROJECT=${E2E_PROJECT:-chatrelay-e2e}
ARTIFACTS=$ROOT/test-artifacts/e2e
IMAGES_ENV=$ROOT/.run/images.env

# Hermetic: nothing from the caller's .env or shell reaches the stack (no real model key).
unset OPENAI_API_KEY OPENAI_BASE_URL OPENAI_MODEL TLS_CERT TLS_KEY TLS_DIR TLS_HOSTNAME \
    PYTHON_IMAGE REDIS_IMAGE NGINX_IMAGE COMPOSE_FILE COMPOSE_PROJECT_NAME COMPOSE_PROFILES \
    GATEWAY_MAX_MESSAGE_BYTES UPSTREAM_RECHECK_SECONDS
export HTTPS_PORT=${E2E_HTTPS_PORT:-18443}
export HTTP_PORT=${E2E_HTTP_PORT:-18080}
export BIND_ADDRESS=127.0.0.1
export GATEWAY_DEMO_TOKEN_DELAY=${E2E_TOKEN_DELAY:-0.05}
# Opens /metrics/gateway and /metrics/web at the compose edge; tests/e2e reads it back.
METRICS_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export METRICS_TOKEN

mode=""
started_engine=0
native_pid=""
COMPOSE=()

say() { printf '[e2e %4ss] %s\n' "$SECONDS" "$*" >&2; }

teardown() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ $mode == compose ]]; then
        if ((rc != 0)); then
            mkdir -p "$ARTIFACTS"
            { "${COMPOSE[@]}" ps --all; "${COMPOSE[@]}" logs --no-color --timestamps; } \
                >"$ARTIFACTS/compose.log" 2>&1
            say "failed: stack logs in ${ARTIFACTS#"$ROOT"/}/compose.log"
        fi
        say "teardown: compose down --volumes"
        "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 \
            || say "compose down failed"
    fi
    if [[ -n $native_pid ]]; then
        say "teardown: stopping the native stack (pid $native_pid)"
        kill -TERM "$native_pid" 2>/dev/null
        wait "$native_pid" 2>/dev/null
    fi
    if ((started_engine)); then
        say "teardown: stopping the engine this run started"
        scripts/engine.sh stop
    fi
    say "exit $rc"
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pick_engine() {
    case $ENGINE_MODE in
        auto)
            if docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
                mode=compose; say "engine: the Docker that answers (${DOCKER_HOST:-default socket})"
                return
            fi
            if [[ $(id -u) -ne 0 ]]; then
                mode=native; say "engine: none answers and not root: the native stack"
                return
            fi
            use_private ;;
        system) mode=compose ;;
        private) use_private ;;
        native) mode=native ;;
        *) say "E2E_ENGINE must be auto|system|private|native"; exit 2 ;;
    esac
}

use_private() {
    eval "$(scripts/engine.sh env)"
    export DOCKER_HOST DOCKER_CONFIG
    if scripts/engine.sh status 2>/dev/null; then
        say "engine: the private dockerd, already running"
    else
        say "engine: starting the private dockerd (scripts/engine.sh start)"
        started_engine=1
        scripts/engine.sh start
    fi
    mode=compose
}

run_compose_stack() {
    say "base images (infra/docker/base-images.sh ${E2E_IMAGES:-auto})"
    IMAGES_ENV=$IMAGES_ENV infra/docker/base-images.sh "${E2E_IMAGES:-auto}"
    COMPOSE=(docker compose -p "$PROJECT" --env-file "$IMAGES_ENV"
        -f infra/compose.yaml -f tests/e2e/compose.e2e.yaml)
    # E2E_EXTRA_COMPOSE: one more override file, e.g. a broken edge config to see a test fail.
    [[ -n ${E2E_EXTRA_COMPOSE:-} ]] && COMPOSE+=(-f "$E2E_EXTRA_COMPOSE")
    "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
    say "docker compose up --build --wait (project $PROJECT)"
    local start=$SECONDS
    mkdir -p "$ARTIFACTS"
    local up_rc
    set +e
    "${COMPOSE[@]}" up --build --wait 2>&1 | tee "$ARTIFACTS/up.log" \
        | grep -E --line-buffered ' (Built|Healthy|Error)|error|unhealthy' >&2
    up_rc=${PIPESTATUS[0]}
    set -e
    if ((up_rc != 0)); then
        say "docker compose up failed (exit $up_rc); full output in ${ARTIFACTS#"$ROOT"/}/up.log"
        exit 1
    fi
    say "stack healthy: up --build --wait took $((SECONDS - start)) s"
    printf -v E2E_COMPOSE '%q ' "${COMPOSE[@]}"
    export E2E_COMPOSE E2E_UP_SECONDS=$((SECONDS - start))
}

run_native_stack() {
    mkdir -p "$ARTIFACTS"
    say "native stack: python -m scripts.dev (log ${ARTIFACTS#"$ROOT"/}/native.log)"
    GATEWAY_PORT=18001 WEB_PORT=18002 REDIS_PORT=16379 DEV_RUN_DIR=$ROOT/.run/e2e-native \
        "$PY" -m scripts.dev >"$ARTIFACTS/native.log" 2>&1 &
    native_pid=$!
    local start=$SECONDS
    until curl -skf -o /dev/null "https://127.0.0.1:$HTTPS_PORT/login"; do
        kill -0 "$native_pid" 2>/dev/null || { tail -n 30 "$ARTIFACTS/native.log" >&2; exit 1; }
        ((SECONDS - start < 90)) || { say "native stack not up after 90 s"; exit 1; }
        sleep 0.5
    done
    say "native stack up in $((SECONDS - start)) s"
}

scripts/system-deps.sh curl:curl  # the SSE clients are `curl --http2`
pick_engine
if [[ $mode == compose ]]; then run_compose_stack; else run_native_stack; fi

export E2E_MODE=$mode
export E2E_BASE_URL="https://localhost:$HTTPS_PORT"
export E2E_HTTP_URL="http://localhost:$HTTP_PORT"
say "pytest tests/e2e against $E2E_BASE_URL ($mode)"
# E2E_PYTEST_ARGS: extra pytest arguments, e.g. "-k spread".
# shellcheck disable=SC2086 # word splitting wanted
"$PY" -m pytest tests/e2e -v -s -p no:cacheprovider --durations=0 ${E2E_PYTEST_ARGS:-}
