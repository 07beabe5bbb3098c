#!/usr/bin/env bash
# Usage: scripts/system-deps.sh COMMAND[:DEBIAN_PACKAGE] ...
# Installs the Debian packages of the commands that are missing (as root, with apt-get);
# elsewhere stops at once, naming what to install.
set -euo pipefail

missing=()
for spec in "$@"; do
  command="${spec%%:*}"
  package="${spec#*:}"
  if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command" ]; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing system packages: ${missing[*]} — install them (e.g. sudo apt-get install ${missing[*]}) and retry" >&2
  exit 1
fi
