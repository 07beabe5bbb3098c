#!/usr/bin/env bash
# THE one place that installs system packages (make test/chaos/bench/browser-deps, .ci/run,
# scripts/dev.py, scripts/engine.sh, scripts/e2e.sh all call it).
#
#   scripts/system-deps.sh COMMAND[:DEBIAN_PACKAGE] ...
#
# A command already there (on PATH or in /usr/sbin) installs nothing. Otherwise, as root with
# apt-get: one `apt-get update` and one `apt-get install` of every missing package. Elsewhere
# it stops at once (exit 1), naming what to install.
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
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing system packages: ${missing[*]} — install them (e.g. sudo apt-get install -y ${missing[*]}) and retry" >&2
  exit 1
fi
