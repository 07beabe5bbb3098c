# Local stand-in for python:3.11-slim: Debian 12's Python 3.11 on a debootstrapped base that
# trusts the host's CA bundle (see ../base-images.sh). Only for machines without a registry.
# Squashed to one layer without what a Python service never runs (perl, apt, the libraries only
# apt uses and the programs that needed them, iconv modules, Python's test/GUI/2to3 parts): the service images stay under
# 150 MB. No package manager
# is left in it: build FROM chatrelay-local/debian:bookworm when you need apt.
ARG BASE_IMAGE=chatrelay-local/debian:bookworm
FROM ${BASE_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Versions come from the Debian suite (bookworm + security): that is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && apt-get clean \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt /var/cache/debconf/*-old /var/log/* \
        /usr/bin/apt* /usr/lib/apt /usr/lib/x86_64-linux-gnu/libapt-* /etc/apt \
        /usr/bin/perl* /usr/lib/x86_64-linux-gnu/perl-base /usr/share/perl5 \
        /usr/share/doc/* /usr/share/common-licenses /usr/share/bash-completion \
        /usr/lib/python3.11/test /usr/lib/python3.11/idlelib /usr/lib/python3.11/tkinter \
        /usr/lib/python3.11/turtledemo /usr/lib/python3.11/lib2to3 \
        /usr/lib/python3.11/pydoc_data \
    && find /usr/lib/x86_64-linux-gnu/gconv -mindepth 1 -maxdepth 1 \
        ! -name 'gconv-modules*' ! -name 'UTF-*' ! -name 'UNICODE.so' ! -name 'ISO8859-1.so' \
        -exec rm -rf {} + \
    && for lib in gnutls unistring gcrypt p11-kit hogweed nettle tasn1 systemd lz4 ext2fs e2p \
            mount blkid smartcols idn2; do \
        rm -f /usr/lib/x86_64-linux-gnu/lib"$lib".so.*; \
    done \
    && rm -rf /var/lib/dpkg/info/*.md5sums /var/lib/dpkg/info/*.list \
        /usr/lib/python3.11/distutils /usr/lib/python3.11/lib-dynload/_test*.so \
        /usr/lib/python3.11/lib-dynload/_ctypes_test*.so /usr/lib/python3.11/lib-dynload/xx*.so \
    && for f in /usr/bin/* /usr/sbin/*; do \
        if ldd "$f" 2>/dev/null | grep -q 'not found'; then rm -f "$f"; fi; \
    done \
    && ! ldd /usr/bin/python3.11 /usr/lib/python3.11/lib-dynload/*.so /usr/sbin/useradd \
        /usr/sbin/groupadd /bin/dash /bin/bash /usr/bin/ls | grep 'not found'

FROM scratch
# One layer: the files removed above are really gone from the image.
# hadolint ignore=DL3067
COPY --from=build / /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
