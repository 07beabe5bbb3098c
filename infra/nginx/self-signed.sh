#!/bin/sh
# A self-signed certificate for the edge. THE one maker: the edge image's entrypoint runs it
# (into its `tls` volume) and so does everything native (scripts/render_nginx.py's
# ensure_cert: make dev, the bench, the browser, chaos and infra tests).
#
#   self-signed.sh DIR [HOSTNAME]     -> DIR/cert.pem and DIR/key.pem (the key 0600)
#
# A certificate there that stays valid for another day is kept; otherwise a new one is made
# for HOSTNAME (default localhost; localhost, 127.0.0.1 and ::1 are always in it), valid
# TLS_SELF_SIGNED_DAYS days (365), and moved into place whole. OPENSSL names the binary.
set -eu

dir=${1:?usage: self-signed.sh DIR [HOSTNAME]}
host=${2:-localhost}
openssl=${OPENSSL:-openssl}
days=${TLS_SELF_SIGNED_DAYS:-365}
cert=$dir/cert.pem
key=$dir/key.pem

case $host in
    '' | *[!A-Za-z0-9.-]*) echo "self-signed.sh: bad hostname '$host'" >&2; exit 2 ;;
esac
case $days in
    '' | 0* | *[!0-9]*) echo "self-signed.sh: bad TLS_SELF_SIGNED_DAYS='$days'" >&2; exit 2 ;;
esac

if [ -s "$cert" ] && [ -s "$key" ] \
    && "$openssl" x509 -checkend 86400 -noout -in "$cert" >/dev/null 2>&1; then
    exit 0
fi

san="DNS:localhost,IP:127.0.0.1,IP:::1"
[ "$host" = localhost ] || san="DNS:$host,$san"
mkdir -p "$dir"
umask 077
if ! made=$("$openssl" req -x509 -newkey rsa:2048 -nodes -days "$days" \
    -keyout "$key.tmp" -out "$cert.tmp" -subj "/CN=$host" -addext "subjectAltName=$san" 2>&1); then
    rm -f "$key.tmp" "$cert.tmp"
    echo "self-signed.sh: openssl failed: $made" >&2
    exit 1
fi
chmod 0644 "$cert.tmp"
mv "$key.tmp" "$key"
mv "$cert.tmp" "$cert"
echo "self-signed.sh: made a self-signed certificate for $host in $dir" >&2
