#!/bin/bash
# make test: every suite, each in temporary instances.  Exits non-zero on any
# failure and prints the diffs.
source "$(dirname "$0")/env.sh"
cd "$work"

passed=0
failed=0
suite() {
    local name=$1 run=as_pg; shift
    # --root: the suite runs as root (it installs a package).
    if [ "$1" = --root ]; then run=; shift; fi
    echo "=== $name"
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

suite "packaging" test/check-packaging.sh
suite "pg_regress" make -s regresscheck
suite "isolation" make -s isolationcheck
suite "pgTAP" test/pgtap.sh
suite "TAP" make -s tapcheck PROVE_FLAGS="--timer"
# Builds Citus once per machine from ../shared/vendor/ (root), or skips.
INGEST_SOURCE_DIR=$top suite "Citus" --root test/citus.sh
# Last: it replaces the installed files with the .deb's for a while.
if [ "$(id -u)" -eq 0 ]; then
    suite "debian package" --root test/check-deb.sh
else
    echo "=== debian package: skipped (dpkg -i needs root)"
fi

echo "test suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
