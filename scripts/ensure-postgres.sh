#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries (initdb, pg_ctl) are on this machine, for the throwaway clusters that
# `make test` and `make demo` start. With DATABASE_URL set, nothing is needed. On Debian/Ubuntu as root, installs the
# postgresql package without creating or starting its default cluster.
set -euo pipefail

if [ -n "${DATABASE_URL:-}" ]; then
  exit 0
fi
for dir in ${PG_BIN:-} /usr/lib/postgresql/*/bin; do
  if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    exit 0
  fi
done
if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server binaries not found. Install them (Debian/Ubuntu: sudo apt-get install postgresql)," >&2
  echo "set PG_BIN to their directory, or set DATABASE_URL to a server the tests may create schemas in." >&2
  exit 1
fi

echo "installing PostgreSQL server binaries with apt-get" >&2
# No default cluster, and no service start during the install: the tests start their own throwaway cluster.
mkdir -p /etc/postgresql-common
if ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
  echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
fi
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
ls -d /usr/lib/postgresql/*/bin >&2
