#!/usr/bin/env bash
# Runs a command (make test's suite) with what the tests need on this machine:
#  1. the Debian packages of the real peers the tests talk to. As root they are
#     installed in one apt-get line; otherwise that line is printed and we stop.
#  2. PostgreSQL answering on 127.0.0.1:$CALLFLEET_TEST_PG_PORT (5432). When none
#     answers, a throw-away server from the Debian package is started in a temporary
#     directory for the run and stopped (and deleted) at the end, whatever happens.
# Usage: scripts/test-env.sh COMMAND [ARG...]
set -euo pipefail

port="${CALLFLEET_TEST_PG_PORT:-5432}"

# -- 1. Debian packages ----------------------------------------------------------------
# sip-tester, baresip-core, kamailio: real SIP peers; chromium: the dashboard's browser
# tests (Playwright drives Debian's build; no download); postgresql: the server the
# throw-away database comes from; espeak-ng: the many voices of the answering-machine
# and opt-out hearing tests (the simulated people speak with Piper, a pip dependency).
# GPL programs, run as separate processes only.
need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v baresip >/dev/null || need+=(baresip-core)
command -v kamailio >/dev/null || need+=(kamailio)
[ -x /usr/bin/chromium ] || need+=(chromium)
pg_bin() {  # the directory of the installed PostgreSQL server's programs
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then echo "$found"; return; fi
  command -v initdb >/dev/null && dirname "$(command -v initdb)"
}
command -v pg_isready >/dev/null && [ -n "$(pg_bin || true)" ] || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  line="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "make test needs these Debian packages; as root, run:" >&2
    echo "  $line" >&2
    exit 1
  fi
  echo "test-env: installing ${need[*]}"
  sh -c "$line"
fi

# -- 2. PostgreSQL ----------------------------------------------------------------------
if pg_isready -q -h 127.0.0.1 -p "$port"; then
  echo "test-env: using the PostgreSQL that answers on 127.0.0.1:$port"
  exec "$@"
fi

bin="$(pg_bin)"
tmp="$(mktemp -d -t callfleet-pg.XXXXXX)"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then  # initdb refuses to run as root
  chown postgres: "$tmp"
  as_pg=(runuser -u postgres --)
fi
stop_pg() {
  "${as_pg[@]}" "$bin/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
  echo "test-env: stopped the throw-away PostgreSQL and removed $tmp"
}
trap stop_pg EXIT
echo "test-env: no PostgreSQL answers on 127.0.0.1:$port; starting a throw-away one in $tmp"
"${as_pg[@]}" "$bin/initdb" -D "$tmp/data" -U postgres --auth=trust -E UTF8 >"$tmp/initdb.log"
"${as_pg[@]}" "$bin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -o \
  "-p $port -c listen_addresses=127.0.0.1 -k $tmp -c fsync=off" start \
  >/dev/null
# The test that restarts the shared server (pg_ctlcluster) cannot restart this one.
export CALLFLEET_TEST_THROWAWAY_PG=1
"$@"
