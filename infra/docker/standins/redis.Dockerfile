# Local stand-in for redis:7-alpine: Debian 12's redis-server (7.0). Only for machines
# without a registry (see ../base-images.sh).
ARG BASE_IMAGE=chatrelay-local/debian:bookworm
FROM ${BASE_IMAGE}
# Versions come from the Debian suite (bookworm + security): that is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
# hadolint ignore=DL3066
USER redis
EXPOSE 6379
STOPSIGNAL SIGTERM
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data"]
