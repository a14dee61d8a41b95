#!/bin/bash
# make test-all: every suite on every major: 15 on this machine (what make
# test runs), then 17 and 18 in cached Debian root filesystems (run.sh).
# Runs them all, prints one line per major and exits non-zero if any failed.
#
# INGEST_TEST_MAJORS: the chroot majors (default "17 18").
# INGEST_TEST_HOST=no: run 15 in a Debian 12 root filesystem too, leaving
# this machine's PostgreSQL untouched (make test installs into it).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
source "$here/report.sh"
majors=${INGEST_TEST_MAJORS:-17 18}
logdir=${INGEST_VERSIONS_LOG:-$top/log/versions}
export INGEST_VERSIONS_LOG=$logdir
mkdir -p "$logdir"
status=0
host=

if [ "${INGEST_TEST_HOST:-yes}" = no ]; then
    majors="15 $majors"
else
    t0=$SECONDS
    echo "=== PostgreSQL 15 (this machine, log in $logdir/pg15.log)"
    rc=0
    "$top/test/run-all.sh" > "$logdir/pg15.log" 2>&1 || rc=$?
    line=$(report_line "$logdir/pg15.log")
    if [ $rc -ne 0 ]; then
        status=1
        report_failures "$logdir/pg15.log"
        tail -5 "$logdir/pg15.log" | sed 's/^/    /'
    fi
    host="PostgreSQL 15: ${line:-did not finish (exit $rc)} (total $((SECONDS - t0)) s)"
fi

# shellcheck disable=SC2086
"$here/run.sh" $majors 2>&1 | tee "$logdir/chroots.out"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "=== summary"
[ -z "$host" ] || echo "$host"
grep '^PostgreSQL [0-9]*:' "$logdir/chroots.out"
exit $status
