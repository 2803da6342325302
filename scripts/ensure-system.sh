#!/usr/bin/env bash
# Make sure what the tests talk to is there: PostgreSQL and Redis running on 127.0.0.1,
# and the Debian packages of scripts/system-packages.txt installed. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
while read -r package probe; do
  case "$package" in ''|'#'*) continue ;; esac
  [ -e "$probe" ] || command -v "$probe" >/dev/null 2>&1 || missing+=("$package")
done < scripts/system-packages.txt

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "error: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "Installing Debian packages: ${missing[*]}"
  # The tests run their own nginx and Prometheus on free ports: keep apt from starting the
  # packages' system services (on :80 and :9090) while installing.
  added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    added_policy=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$added_policy" ] && $sudo rm -f /usr/sbin/policy-rc.d
fi

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! pg_up; then
  echo "Starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  for _ in $(seq 50); do pg_up && break; sleep 0.2; done
  pg_up || { echo "error: PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
if ! redis_up; then
  echo "Starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis_up && break; sleep 0.2; done
  redis_up || { echo "error: Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
fi
