#!/bin/sh
# Renders the chatrelay edge config. THE one renderer: the edge image's entrypoint runs it
# (POSIX sh + awk: busybox on alpine, dash + mawk on Debian) and so does everything native
# (scripts/render_nginx.py: make dev, the bench, the browser, chaos and infra tests).
#
#   render.sh OUT_FILE        values come from the environment
#
# Every ${NAME} (UPPER_CASE) in chatrelay.conf.template, next to this script, is a placeholder.
# Its value is the environment's; unset or empty, the NAME=value line of limits.env (next to
# this script); neither: an error. The value is checked by the kind its name has (kind_of), so
# that it stays one nginx token and cannot break out of its directive. A new placeholder needs
# nothing here when a kind fits its name, else one line in kind_of.
# Exit status 2 and one line on stderr when a value does not fit; OUT_FILE is left untouched.
set -eu
set -f # values are split on commas and spaces below: never glob them

here=$(dirname "$0")
template=$here/chatrelay.conf.template
defaults=$here/limits.env
out=${1:?usage: render.sh OUT_FILE}

fail() {
    echo "render.sh: $*" >&2
    exit 2
}

kind_of() {
    case $1 in
        *_PORT) echo port ;;
        *_UPSTREAM) echo upstreams ;;
        TLS_CERT | TLS_KEY) echo path ;;
        EDGE_*) echo count ;;
        *) echo word ;;
    esac
}

# Each check prints the value as the config gets it, or fails naming the variable.
check_port() {
    case $2 in
        '' | 0* | *[!0-9]*) fail "bad $1='$2' (a port: 1..65535)" ;;
    esac
    [ "${#2}" -le 5 ] && [ "$2" -le 65535 ] || fail "bad $1='$2' (a port: 1..65535)"
    echo "$2"
}

# "a:1" or "a:1, b:2" (commas and/or spaces) -> "a:1;<newline>    server b:2": the template
# says `server ${WEB_UPSTREAM};`. Items: host:port, [v6]:port or unix:/path.
check_upstreams() {
    servers=""
    for item in $(echo "$2" | tr ',' ' '); do
        case $item in
            unix:/*)
                case $item in *[!A-Za-z0-9._/:@-]*) fail "bad $1 item '$item' (unix:/path)" ;; esac
                ;;
            \[*\]:*)
                host=${item%]:*}
                case ${host#\[} in '' | *[!0-9A-Fa-f:.]*) fail "bad $1 item '$item' ([v6]:port)" ;; esac
                (check_port "$1" "${item##*:}") >/dev/null 2>&1 || fail "bad $1 item '$item' (port 1..65535)"
                ;;
            *:*)
                host=${item%:*}
                case $host in '' | *[!A-Za-z0-9.-]*) fail "bad $1 item '$item' (host:port)" ;; esac
                (check_port "$1" "${item##*:}") >/dev/null 2>&1 || fail "bad $1 item '$item' (port 1..65535)"
                ;;
            *) fail "bad $1 item '$item' (host:port)" ;;
        esac
        servers="${servers:+$servers;
    server }$item"
    done
    [ -n "$servers" ] || fail "$1 is an empty list (host:port[,host:port...])"
    echo "$servers"
}

check_path() {
    case $2 in
        '' | *[!A-Za-z0-9._/@+=,:~-]*) fail "bad $1='$2' (a path without spaces, quotes, ';', '{}', '\$')" ;;
    esac
    echo "$2"
}

check_count() {
    case $2 in
        '' | 0* | *[!0-9]*) fail "bad $1='$2' (a whole number above 0)" ;;
    esac
    [ "${#2}" -le 9 ] || fail "bad $1='$2' (a whole number above 0, at most 9 digits)"
    echo "$2"
}

check_word() {
    case $2 in
        '' | *[!A-Za-z0-9._~+/=:@-]*) fail "bad $1='$2' (letters, digits and ._~+/=:@- only)" ;;
    esac
    echo "$2"
}

[ -r "$template" ] || fail "no template at $template"
# shellcheck disable=SC2016 # a literal ${NAME}, not an expansion
names=$(grep -o '[$][{][A-Z][A-Z0-9_]*[}]' "$template" | sort -u | tr -d '${}')
for name in $names; do
    eval "value=\${$name:-}" # safe: $name matched [A-Z][A-Z0-9_]* above
    if [ -z "$value" ] && [ -r "$defaults" ]; then
        value=$(sed -n "s/^$name=//p" "$defaults" | tail -n 1)
    fi
    [ -n "$value" ] || fail "no value for $name (set it in the environment)"
    kind=$(kind_of "$name")
    rendered=$("check_$kind" "$name" "$value") || exit 2
    export "CHATRELAY_RENDERED_$name=$rendered"
done

tmp=$out.tmp.$$
trap 'rm -f "$tmp"' EXIT
# Plain substring replacement (no regex or '&' meaning in the values); nginx's own lower-case
# ${variables} do not match.
awk '{
    rest = $0
    line = ""
    while (match(rest, /[$][{][A-Z][A-Z0-9_]*[}]/)) {
        name = substr(rest, RSTART + 2, RLENGTH - 3)
        line = line substr(rest, 1, RSTART - 1) ENVIRON["CHATRELAY_RENDERED_" name]
        rest = substr(rest, RSTART + RLENGTH)
    }
    print line rest
}' "$template" >"$tmp"
mv "$tmp" "$out"
trap - EXIT
