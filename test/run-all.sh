#!/bin/bash
# make test: every suite, each in temporary instances.  Exits non-zero on any
# failure and prints the diffs.
source "$(dirname "$0")/env.sh"
cd "$work"

passed=0
failed=0
suite() {
    local name=$1; shift
    echo "=== $name"
    if as_pg "$@"; then
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

echo "test suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
