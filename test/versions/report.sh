# Sourced by run.sh and test-all.sh: read the log of one test/run-all.sh.

# report_line LOG: "N passed, M failed", or why there is no such line.
report_line() {
    local line
    line=$(grep -E '^test suites: ' "$1" | tail -1)
    echo "${line#test suites: }"
}

# report_failures LOG: each failed suite's output and diffs, indented.
report_failures() {
    awk '
        /^=== .* FAILED$/ { printf "%s", buf; print; buf = ""; failed = 1; next }
        /^=== / { buf = $0 "\n"; failed = 0; next }
        failed { print; next }
        { buf = buf $0 "\n" }
    ' "$1" | sed 's/^/    /'
}
