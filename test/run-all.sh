#!/bin/bash
# make test: every suite, each in temporary instances.  Exits non-zero on any
# failure and prints the diffs.
source "$(dirname "$0")/env.sh"
cd "$work"

passed=0
failed=0
suite() {
    local name=$1 span=$2 run=as_pg; shift 2
    # --root: the suite runs as root (it installs a package).
    if [ "$1" = --root ]; then run=; shift; fi
    echo "=== $name"
    # span: about twice the suite's running time (seconds)
    "$top"/test/clear_of_midnight.sh "$span"
    if $run "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "=== $name FAILED"
        for f in regression.diffs output_iso/regression.diffs; do
            [ -s "$f" ] && cat "$f"
        done
        rm -f regression.diffs output_iso/regression.diffs
    fi
}

suite "packaging" 60 test/check-packaging.sh
suite "pg_regress" 300 make -s regresscheck
suite "isolation" 120 make -s isolationcheck
suite "pgTAP" 60 test/pgtap.sh
suite "TAP" 420 make -s tapcheck PROVE_FLAGS="--timer"
# Builds Citus once per machine from ../shared/vendor/ (root), or skips.
INGEST_SOURCE_DIR=$top suite "Citus" 180 --root test/citus.sh
# Last: it replaces the installed files with the .deb's for a while.
if [ "$(id -u)" -eq 0 ]; then
    suite "debian package" 120 --root test/check-deb.sh
else
    echo "=== debian package: skipped (dpkg -i needs root)"
fi

echo "test suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
