#!/bin/sh
# chatrelay edge entrypoint (POSIX sh: alpine's busybox and Debian's dash).
#  1. TLS: use TLS_CERT/TLS_KEY when given; otherwise /etc/chatrelay/self-signed.sh (the
#     project's one certificate maker) makes a self-signed one into /etc/chatrelay/tls (a
#     volume, so it survives restarts) and renews it when it is about to expire.
#  2. /etc/chatrelay/render.sh (the project's one renderer, the same as `make dev` runs)
#     renders /etc/chatrelay/chatrelay.conf.template into /etc/nginx/conf.d/chatrelay.conf
#     from the environment, the EDGE_* limits defaulting to /etc/chatrelay/limits.env; then
#     `nginx -t` checks it. WEB_UPSTREAM/GATEWAY_UPSTREAM default to web:$WEB_PORT and
#     gateway:$GATEWAY_PORT (compose passes the ports: the services' settings defaults).
#  3. Scale-out: nginx 1.22 open source resolves `upstream { server web:PORT; }` once, at
#     (re)load, into one server per address (the `resolve` server parameter is open source
#     only from 1.27.3). A watcher re-resolves the upstream names every
#     UPSTREAM_RECHECK_SECONDS (default 5) and runs `nginx -s reload` when the set of
#     addresses changes, so `docker compose up --scale web=3` spreads over every replica.
set -eu

log() { echo "chatrelay-edge: $*" >&2; }

TLS_DIR=/etc/chatrelay/tls
: "${WEB_UPSTREAM:=web:${WEB_PORT:?set WEB_PORT (the web service port) or WEB_UPSTREAM}}"
: "${GATEWAY_UPSTREAM:=gateway:${GATEWAY_PORT:?set GATEWAY_PORT (the gateway port) or GATEWAY_UPSTREAM}}"

if [ -n "${TLS_CERT:-}" ] || [ -n "${TLS_KEY:-}" ]; then
    : "${TLS_CERT:?TLS_KEY is set: set TLS_CERT too}" "${TLS_KEY:?TLS_CERT is set: set TLS_KEY too}"
    [ -r "$TLS_CERT" ] || { log "TLS_CERT=$TLS_CERT is not readable in the container (mount it)"; exit 1; }
    [ -r "$TLS_KEY" ] || { log "TLS_KEY=$TLS_KEY is not readable in the container (mount it)"; exit 1; }
    log "using the supplied certificate $TLS_CERT"
else
    sh /etc/chatrelay/self-signed.sh "$TLS_DIR" "${TLS_HOSTNAME:-localhost}"
    TLS_CERT=$TLS_DIR/cert.pem
    TLS_KEY=$TLS_DIR/key.pem
    log "using the certificate in $TLS_DIR"
fi

export WEB_UPSTREAM GATEWAY_UPSTREAM TLS_CERT TLS_KEY
sh /etc/chatrelay/render.sh /etc/nginx/conf.d/chatrelay.conf

# Test knob (tests/e2e): ignore the apps' `X-Accel-Buffering: no`, so that only the config's
# own `proxy_buffering off` keeps the event stream unbuffered and the e2e timing check sees it.
if [ "${EDGE_IGNORE_ACCEL_BUFFERING:-0}" = 1 ]; then
    log "EDGE_IGNORE_ACCEL_BUFFERING=1: nginx ignores X-Accel-Buffering from upstreams"
    echo 'proxy_ignore_headers X-Accel-Buffering;' >/etc/nginx/conf.d/00-ignore-accel-buffering.conf
else
    rm -f /etc/nginx/conf.d/00-ignore-accel-buffering.conf
fi
nginx -t -q

# Every address the upstream host names resolve to, sorted, on one line.
addresses() {
    for item in $(echo "$WEB_UPSTREAM,$GATEWAY_UPSTREAM" | tr ',' ' '); do
        host=${item%:*}
        getent ahostsv4 "$host" 2>/dev/null | awk '{print $1}' \
            || nslookup "$host" 2>/dev/null | awk '/^Address/ && NR > 2 {print $NF}'
    done | sort -u | tr '\n' ' '
}

watch_upstreams() {
    last=$(addresses)
    log "upstream addresses: $last"
    while sleep "${UPSTREAM_RECHECK_SECONDS:-5}"; do
        now=$(addresses)
        if [ -n "$now" ] && [ "$now" != "$last" ]; then
            log "upstream addresses changed to: $now; reloading nginx"
            nginx -s reload || log "reload failed; keeping the running config"
            last=$now
        fi
    done
}

if [ "${UPSTREAM_RECHECK_SECONDS:-5}" != 0 ] && [ "${1:-}" = nginx ]; then
    watch_upstreams &
fi
exec "$@"
