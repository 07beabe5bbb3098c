#!/bin/sh
# chatrelay edge entrypoint (POSIX sh: alpine's busybox and Debian's dash).
#  1. TLS: use TLS_CERT/TLS_KEY when given; otherwise make a self-signed certificate once
#     into /etc/chatrelay/tls (a volume, so it survives restarts).
#  2. Render /etc/chatrelay/chatrelay.conf.template (placeholders ${HTTPS_PORT} ${HTTP_PORT}
#     ${WEB_UPSTREAM} ${GATEWAY_UPSTREAM} ${TLS_CERT} ${TLS_KEY} and the EDGE_* limits, as
#     scripts/render_nginx.py; a limit that is unset or empty takes its default from
#     /etc/chatrelay/limits.env) into /etc/nginx/conf.d/chatrelay.conf; check it with `nginx -t`.
#  3. Scale-out: nginx 1.22 open source resolves `upstream { server web:8002; }` once, at
#     (re)load, into one server per address (the `resolve` server parameter is open source
#     only from 1.27.3). A watcher re-resolves the upstream names every
#     UPSTREAM_RECHECK_SECONDS (default 5) and runs `nginx -s reload` when the set of
#     addresses changes, so `docker compose up --scale web=3` spreads over every replica.
set -eu

log() { echo "chatrelay-edge: $*" >&2; }

TLS_DIR=/etc/chatrelay/tls
HTTPS_PORT=${HTTPS_PORT:-8443}
HTTP_PORT=${HTTP_PORT:-8080}
WEB_UPSTREAM=${WEB_UPSTREAM:-web:8002}
GATEWAY_UPSTREAM=${GATEWAY_UPSTREAM:-gateway:8001}

if [ -n "${TLS_CERT:-}" ] || [ -n "${TLS_KEY:-}" ]; then
    : "${TLS_CERT:?TLS_KEY is set: set TLS_CERT too}" "${TLS_KEY:?TLS_CERT is set: set TLS_KEY too}"
    [ -r "$TLS_CERT" ] || { log "TLS_CERT=$TLS_CERT is not readable in the container (mount it)"; exit 1; }
    [ -r "$TLS_KEY" ] || { log "TLS_KEY=$TLS_KEY is not readable in the container (mount it)"; exit 1; }
    log "using the supplied certificate $TLS_CERT"
else
    TLS_CERT=$TLS_DIR/cert.pem
    TLS_KEY=$TLS_DIR/key.pem
    if [ -s "$TLS_CERT" ] && [ -s "$TLS_KEY" ]; then
        log "using the certificate in $TLS_DIR"
    else
        log "no certificate given: making a self-signed one for ${TLS_HOSTNAME:-localhost} in $TLS_DIR"
        mkdir -p "$TLS_DIR"
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days "${TLS_SELF_SIGNED_DAYS:-365}" \
            -keyout "$TLS_DIR/key.pem.tmp" -out "$TLS_DIR/cert.pem.tmp" \
            -subj "/CN=${TLS_HOSTNAME:-localhost}" \
            -addext "subjectAltName=DNS:${TLS_HOSTNAME:-localhost},DNS:localhost,IP:127.0.0.1" \
            2>/dev/null
        umask 022
        chmod 0644 "$TLS_DIR/cert.pem.tmp"
        mv "$TLS_DIR/key.pem.tmp" "$TLS_KEY"
        mv "$TLS_DIR/cert.pem.tmp" "$TLS_CERT"
    fi
fi

# Values become single nginx tokens: refuse anything that could break out of a directive.
check() {  # name value pattern-description
    case $2 in
        *[!A-Za-z0-9._:/@,-]* | "") log "bad $1='$2' ($3)"; exit 1 ;;
    esac
}
check HTTPS_PORT "$HTTPS_PORT" "a port"
check HTTP_PORT "$HTTP_PORT" "a port"
check WEB_UPSTREAM "$WEB_UPSTREAM" "host:port[,host:port...]"
check GATEWAY_UPSTREAM "$GATEWAY_UPSTREAM" "host:port[,host:port...]"
check TLS_CERT "$TLS_CERT" "a path"
check TLS_KEY "$TLS_KEY" "a path"

# The abuse limits: whole numbers above 0; unset or empty -> the default in limits.env.
LIMITS=""
while IFS='=' read -r name value; do
    case $name in "" | \#*) continue ;; esac
    eval "given=\${$name:-}"
    # shellcheck disable=SC2154 # set by the eval above
    [ -n "$given" ] || given=$value
    case $given in
        0* | *[!0-9]*) log "bad $name='$given' (a whole number above 0)"; exit 1 ;;
    esac
    LIMITS="$LIMITS -e s|\\\${$name}|$given|g"
done </etc/chatrelay/limits.env

# "a:1,b:2" -> "a:1; server b:2" (the template says `server ${WEB_UPSTREAM};`).
servers() { echo "$1" | sed 's/,/; server /g'; }

# shellcheck disable=SC2086 # $LIMITS is a list of `-e EXPR` words, split on purpose
sed -e "s|\${HTTPS_PORT}|$HTTPS_PORT|g" \
    -e "s|\${HTTP_PORT}|$HTTP_PORT|g" \
    -e "s|\${WEB_UPSTREAM}|$(servers "$WEB_UPSTREAM")|g" \
    -e "s|\${GATEWAY_UPSTREAM}|$(servers "$GATEWAY_UPSTREAM")|g" \
    -e "s|\${TLS_CERT}|$TLS_CERT|g" \
    -e "s|\${TLS_KEY}|$TLS_KEY|g" \
    $LIMITS \
    /etc/chatrelay/chatrelay.conf.template >/etc/nginx/conf.d/chatrelay.conf
# shellcheck disable=SC2016 # a literal ${NAME}, not an expansion
if grep -n '\${[A-Z][A-Z0-9_]*}' /etc/nginx/conf.d/chatrelay.conf >&2; then
    log "the template uses a placeholder this entrypoint does not know"
    exit 1
fi
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
