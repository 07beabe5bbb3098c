# Local stand-in for nginx:1.27-alpine: Debian 12's nginx 1.22 (ssl, http_v2) + openssl.
# Only for machines without a registry (see ../base-images.sh).
ARG BASE_IMAGE=chatrelay-local/debian:bookworm
FROM ${BASE_IMAGE}
# Versions come from the Debian suite (bookworm + security): that is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx openssl \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
    && rm -f /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80 443
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
