#!/bin/sh
# Healthy = nginx answers over TLS on HTTPS_PORT and proxies the login page (always open) to
# web with a 200. (/healthz and /readyz are not routed at the edge: they answer 404 there.)
# No curl/wget needed: openssl is in the image anyway (it made the certificate).
printf 'GET /login HTTP/1.0\r\nHost: localhost\r\n\r\n' \
    | timeout 3 openssl s_client -quiet -connect "127.0.0.1:${HTTPS_PORT:-8443}" 2>/dev/null \
    | head -n 1 | grep -q ' 200 '
