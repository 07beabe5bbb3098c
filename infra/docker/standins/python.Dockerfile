# Local stand-in for python:3.11-slim: Debian 12's Python 3.11 on a debootstrapped base that
# trusts the host's CA bundle (see ../base-images.sh). Only for machines without a registry.
ARG BASE_IMAGE=chatrelay-local/debian:bookworm
FROM ${BASE_IMAGE}
# Versions come from the Debian suite (bookworm + security): that is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
    && ln -s /usr/bin/python3 /usr/local/bin/python
CMD ["python3"]
