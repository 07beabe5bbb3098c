#!/usr/bin/env bash
# Base images for the chatrelay stack, with or without a container registry.
#
#   infra/docker/base-images.sh [auto|standins|public]     (default: auto)
#
# auto:     for each base (python, redis, nginx) try `docker pull` of the public image; when no
#           registry answers, build a local stand-in from Debian's packages instead
#           (debootstrap --variant=minbase bookworm -> docker import -> small Dockerfiles).
# standins: build the stand-ins without trying a registry (CI, air-gapped machines).
# public:   pull the public images only.
#
# Writes the chosen names to .run/images.env (PYTHON_IMAGE=, REDIS_IMAGE=, NGINX_IMAGE=),
# which `make up`/`make e2e` pass to compose. Talks to whatever DOCKER_HOST points at.
set -euo pipefail

MODE="${1:-auto}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/infra/docker"
OUT="${IMAGES_ENV:-$ROOT/.run/images.env}"
CACHE="${CHATRELAY_IMAGE_CACHE:-$("$ROOT/scripts/engine.sh" dir)/cache}"
SUITE=bookworm

declare -A PUBLIC=(
    [PYTHON_IMAGE]="${PUBLIC_PYTHON_IMAGE:-python:3.11-slim-bookworm}"
    [REDIS_IMAGE]="${PUBLIC_REDIS_IMAGE:-redis:7-alpine}"
    [NGINX_IMAGE]="${PUBLIC_NGINX_IMAGE:-nginx:1.27-alpine}"
)
declare -A STANDIN=(
    [PYTHON_IMAGE]=chatrelay-local/python:3.11-bookworm
    [REDIS_IMAGE]=chatrelay-local/redis:7-bookworm
    [NGINX_IMAGE]=chatrelay-local/nginx:1.22-bookworm
)
declare -A DOCKERFILE=([PYTHON_IMAGE]=python [REDIS_IMAGE]=redis [NGINX_IMAGE]=nginx)
BASE_IMAGE=chatrelay-local/debian:bookworm

say() { printf '[images] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The Debian mirror this machine uses (deb822 .sources first, then sources.list).
apt_uri() {  # $1: "main" or "security"
    local f uri
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
        [[ -r $f ]] || continue
        if [[ $f == *.sources ]]; then
            uri=$(awk '/^URIs:/ {print $2}' "$f")
        else
            uri=$(awk '$1 == "deb" {print ($2 ~ /^\[/ ? $3 : $2)}' "$f")
        fi
        if [[ $1 == security ]]; then
            uri=$(grep -m1 -- '-security' <<<"$uri" || true)
        else
            uri=$(grep -v -- '-security' <<<"$uri" | grep -m1 debian || true)
        fi
        [[ -n $uri ]] && { echo "$uri"; return; }
    done
    [[ $1 == security ]] && echo http://deb.debian.org/debian-security || echo http://deb.debian.org/debian
}

# debootstrap a minimal Debian, trust the host's CA bundle, slim it, `docker import` it.
build_base() {
    if have_image "$BASE_IMAGE"; then
        say "$BASE_IMAGE present"
        return
    fi
    command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
    local mirror security tarball="$CACHE/$SUITE-minbase.tar" dir
    mirror=$(apt_uri main)
    security=$(apt_uri security)
    mkdir -p "$CACHE"
    if [[ ! -s $tarball ]]; then
        dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        say "debootstrap --variant=minbase $SUITE from $mirror (~30-40 s)"
        local start=$SECONDS
        debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$dir" "$mirror" \
            >"$CACHE/debootstrap.log" 2>&1 || { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
        say "debootstrap done in $((SECONDS - start)) s"
        cat >"$dir/etc/apt/sources.list" <<SOURCES
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb $security $SUITE-security main
SOURCES
        # Keep later apt installs small, as Debian's own "slim" images do.
        cat >"$dir/etc/dpkg/dpkg.cfg.d/01-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
SLIM
        printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
            >"$dir/etc/apt/apt.conf.d/01-norecommends"
        # The host's bundle includes the CA of the intercepting proxy: pip/uv in builds trust it.
        cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
        if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
            cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
        fi
        find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin \
            "$dir"/var/lib/apt/lists/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
            "$dir"/usr/share/locale/* "$dir"/var/log/*.log "$dir"/tmp/* 2>/dev/null || true
        tar -C "$dir" --numeric-owner -cf "$tarball.part" .
        mv "$tarball.part" "$tarball"
        rm -rf "$dir"
    fi
    say "docker import $BASE_IMAGE ($(du -h "$tarball" | cut -f1))"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["bash"]' \
        "$tarball" "$BASE_IMAGE" >/dev/null
}

build_standin() {  # $1: PYTHON_IMAGE | REDIS_IMAGE | NGINX_IMAGE
    local name=${STANDIN[$1]} file="$HERE/standins/${DOCKERFILE[$1]}.Dockerfile" recipe
    # The image remembers the hash of its Dockerfile: an edited recipe rebuilds it.
    recipe=$(sha256sum "$file" | cut -c1-16)
    if [[ -z ${REBUILD:-} ]] && [[ $(docker image inspect -f '{{index .Config.Labels "chatrelay.recipe"}}' \
        "$name" 2>/dev/null) == "$recipe" ]]; then
        say "$name present"
        return
    fi
    build_base
    say "docker build $name"
    local start=$SECONDS
    # The classic builder: no buildx here, and the same command works with docker 20.10 to 28.
    mkdir -p "$CACHE"
    if ! DOCKER_BUILDKIT=0 docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --label "chatrelay.recipe=$recipe" -t "$name" -f "$file" "$HERE/standins" \
        >"$CACHE/build-${DOCKERFILE[$1]}.log" 2>&1; then
        tail -n 30 "$CACHE/build-${DOCKERFILE[$1]}.log" >&2
        die "building $name failed (log: $CACHE/build-${DOCKERFILE[$1]}.log)"
    fi
    say "$name built in $((SECONDS - start)) s"
}

try_pull() {
    say "docker pull $1"
    timeout "${PULL_TIMEOUT:-60}" docker pull --quiet "$1" >/dev/null 2>&1
}

docker info >/dev/null 2>&1 || die "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-default}); try scripts/engine.sh start"
mkdir -p "$(dirname "$OUT")"
: >"$OUT.part"
for var in PYTHON_IMAGE REDIS_IMAGE NGINX_IMAGE; do
    chosen=""
    case $MODE in
        public)
            try_pull "${PUBLIC[$var]}" || die "cannot pull ${PUBLIC[$var]}"
            chosen=${PUBLIC[$var]} ;;
        auto)
            if have_image "${PUBLIC[$var]}" || try_pull "${PUBLIC[$var]}"; then
                chosen=${PUBLIC[$var]}
            else
                say "no registry answers for ${PUBLIC[$var]}: using a Debian stand-in"
            fi ;;
        standins) ;;
        *) die "usage: $0 [auto|standins|public]" ;;
    esac
    if [[ -z $chosen ]]; then
        build_standin "$var"
        chosen=${STANDIN[$var]}
    fi
    echo "$var=$chosen" >>"$OUT.part"
done
mv "$OUT.part" "$OUT"
say "wrote $OUT:"
sed 's/^/    /' "$OUT" >&2
docker image ls --format '    {{.Repository}}:{{.Tag}}  {{.Size}}' | grep chatrelay-local >&2 || true
