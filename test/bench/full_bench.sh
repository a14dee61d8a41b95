#!/bin/bash
# Every speed target of the loader in one run: runs the benchmarks that
# measure them one after another on this machine (each in its own throwaway
# cluster, nothing else running), then checks each target against the
# figures they wrote (test/bench/out/*.vars) and prints one table.
#
#   test/bench/full_bench.sh          # the targets' sizes: about an hour on 2 cores
#   QUICK=1 test/bench/full_bench.sh  # small sizes, to try the script (minutes)
#   REPORT_ONLY=1 test/bench/full_bench.sh  # the table again from the last run's figures
#
# The parts and their sizes (QUICK=1 in parentheses):
#   load_bench.sh      live-order data, 1M rows per method, growth to 50M in
#                      5M windows (200k, growth 1M in 200k windows)
#   load_billing.sh    billing-shaped data, 2M rows (200k)
#   rollup_bench.sh    ingest.usage on 10M billing-shaped events, 20 queries
#                      (500k, 5 queries)
#   concurrency_bench.sh  1, 2 and 4 sessions, disjoint and 10%-overlapping
#                      keys, 3 rounds (50k rows a session, 1 round)
#   soak_bench.sh      4 loaders, 10% shared keys in the same order, 600 s (30 s)
#
# Prints markdown; writes it to test/bench/out/full_bench.md too, followed
# by each part's own report.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/out
mkdir -p "$out"
[ -n "${REPORT_ONLY:-}" ] || rm -f "$out"/*.vars

if [ -n "${QUICK:-}" ]; then
    sizes=(ROWS=200000 GROWTH=1000000 WINDOW=200000 BILL=200000 EVENTS=500000 QUERIES=5
           ROWS_EACH=50000 REPEAT=1 SOAK=30)
else
    sizes=(ROWS=1000000 GROWTH=50000000 WINDOW=5000000 BILL=2000000 EVENTS=10000000 QUERIES=20
           ROWS_EACH=200000 REPEAT=3 SOAK=600)
fi
declare -A S
for kv in "${sizes[@]}"; do S[${kv%%=*}]=${kv#*=}; done

started=$(date -u +'%F %H:%M')
t0=$(date +%s)
part() {  # part NAME COMMAND...: run one benchmark, its log beside the report
    echo "== $1 ($(date -u +%H:%M))"
    local t=$(date +%s)
    "${@:2}" > "$out/full_$1.log" 2>&1 || { echo "$1 failed; see $out/full_$1.log" >&2; tail -20 "$out/full_$1.log" >&2; exit 1; }
    echo "   $(( $(date +%s) - t )) s"
}
if [ -z "${REPORT_ONLY:-}" ]; then
part live env DATA=live ROWS="${S[ROWS]}" GROWTH="${S[GROWTH]}" WINDOW="${S[WINDOW]}" "$here/load_bench.sh"
part billing env ROWS="${S[BILL]}" "$here/load_billing.sh"
part usage env DATA=billing EVENTS="${S[EVENTS]}" COMPARE=200000 QUERIES="${S[QUERIES]}" "$here/rollup_bench.sh"
part concurrency env CONCURRENCY=1,2,4 ROWS_EACH="${S[ROWS_EACH]}" REPEAT="${S[REPEAT]}" "$here/concurrency_bench.sh"
part soak env SAME_ORDER=1 DURATION="${S[SOAK]}" "$here/soak_bench.sh"
printf 'started="%s"\nminutes=%s\nquick=%s\nqueries=%s\n' "$started" \
    $(( ($(date +%s) - t0 + 59) / 60 )) "${QUICK:-}" "${S[QUERIES]}" > "$out/full_bench.vars"
fi

for f in full_bench load_bench load_bench_billing rollup_bench_billing concurrency_bench soak_bench; do
    # shellcheck disable=SC1090
    source "$out/$f.vars"
done

# at_least FIGURE TARGET: "met" when the figure (unrounded) reaches the
# target; above: when it passes it
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { print (a != "-" && a + 0 >= b + 0) ? "met" : "not met" }'; }
above() { awk -v a="$1" -v b="$2" 'BEGIN { print (a != "-" && a + 0 > b + 0) ? "met" : "not met" }'; }
# f FIGURE [DECIMALS]: rounded to print
f() { awk -v a="$1" -v d="${2:-2}" 'BEGIN { if (a == "-") print a; else printf "%.*f", d, a }'; }
both() {  # both STATUS STATUS: met only when both are
    [ "$1" = met ] && [ "$2" = met ] && echo met || echo "not met"
}
pct() { awk -v a="$1" 'BEGIN { printf "%d%%", a }'; }

s_live=$(both "$(at_least "$live_ingest_bare" 0.60)" "$(at_least "$live_hook_bare" 0.60)")
s_bill=$(both "$(at_least "$bill_ingest_bare" 0.45)" "$(at_least "$bill_hook_bare" 0.45)")
s_btree=$(both "$(at_least "$bill_ingest_copy" 1.3)" "$(at_least "$bill_hook_copy" 1.3)")
s_stage=$(both "$(both "$(above "$live_ingest_stage" 1)" "$(above "$live_hook_stage" 1)")" \
               "$(both "$(above "$bill_ingest_stage" 1)" "$(above "$bill_hook_stage" 1)")")
s_growth=$(at_least "$growth_last_first" 85)
s_total=$(at_least "$usage_total_x" 50)
s_day=$(at_least "$usage_day_x" 50)
s_scale=$(both "$(at_least "$conc_eff_disjoint" 0.9)" "$(at_least "$conc_eff_overlap" 0.9)")
s_dl=$( [ "$conc_deadlocks_worse" -eq 0 ] && echo met || echo "not met")
s_soak=$( [ "$soak_deadlocks" -eq 0 ] && [ "$soak_other_failures" -eq 0 ] && [ "$soak_ledger_mismatch" -eq 0 ] &&
          [ "$soak_stored_distinct" = t ] && echo met || echo "not met")
label=${quick:+ (QUICK=1: small sizes, not those of the targets)}
pgv=$(pg_config --version | awk '{ print $2 }')
gib=$(awk '/MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
render() {
    cat <<EOT
## Every target in one run

\`${quick:+QUICK=1 }test/bench/full_bench.sh\`$label, started $started UTC, $minutes minutes, PostgreSQL $pgv, $(nproc) cores, $gib GiB. Each figure is a ratio of rows/s (or of query times) measured in the same part of this run; the parts' own reports follow.

| target | measured | status |
|---|---|---|
| \`ingest.load\` at least 0.60 of plain COPY with no index, live order (${live_rows} rows a method) | $(f "$live_ingest_bare" 3) (hook $(f "$live_hook_bare" 3)) | $s_live |
| the same, at least 0.45 on billing-shaped data (${bill_rows} rows) | $(f "$bill_ingest_bare" 3) (hook $(f "$bill_hook_bare" 3)) | $s_bill |
| at least 1.3x plain COPY with a BRIN and B-trees on (organization_id, code, timestamp), (external_customer_id, timestamp), billing-shaped | $(f "$bill_ingest_copy" 3) (hook $(f "$bill_hook_copy" 3)) | $s_btree |
| faster than staging + \`INSERT ... ON CONFLICT DO NOTHING\` on UNIQUE (organization_id, transaction_id, timestamp) | live $(f "$live_ingest_stage" 3) (hook $(f "$live_hook_stage" 3)), billing $(f "$bill_ingest_stage" 3) (hook $(f "$bill_hook_stage" 3)) | $s_stage |
| growth to $growth_rows events: the last $growth_window-event window at least 85% of the first | $(pct "$growth_last_first") (mean of the last five windows against the first five: $(pct "$growth_last5_first5"); keys unique: $growth_keys_unique) | $s_growth |
| \`ingest.usage\`, one organization, 30 days, $usage_events billing-shaped events, total, at least 50x raw (median of $queries) | $(f "$usage_total_x" 1)x ($usage_total_ms ms) | $s_total |
| the same per day | $(f "$usage_day_x" 1)x ($usage_day_ms ms) | $s_day |
| the same per hour (reported) | $(f "$usage_hour_x" 1)x ($usage_hour_ms ms) | answers identical to raw (total, per day): $usage_same |
| 2 sessions reach at least 90% of plain COPY's scaling from 2 sessions (ingest.load's over COPY's) | disjoint keys $(f "$conc_eff_disjoint" 3), 10% overlap $(f "$conc_eff_overlap" 3) (ingest.load $conc_eff_ingest, COPY $conc_eff_copy) | $s_scale |
| never more 40P01 than \`INSERT ... ON CONFLICT DO NOTHING\` with the same payloads (1, 2, 4 sessions, payloads shuffled per session) | $conc_deadlocks_ingest against $conc_deadlocks_stage in all; (key set, sessions) where ingest.load had more: $conc_deadlocks_worse | $s_dl |
| 4 loaders (csv, jsonl, COPY through the hook, INSERT), 10% shared keys in the same order, $soak_seconds s: 0 deadlocks | $soak_deadlocks 40P01 in $soak_calls committed calls ($soak_other_failures other failures); stored / distinct keys $soak_stored ($soak_stored_distinct); ledger mismatches $soak_ledger_mismatch | $s_soak |
EOT
}
report=$(render)
{
    echo "$report"
    for f in load_bench load_bench_billing rollup_bench_billing concurrency_bench soak_bench; do
        echo
        cat "$out/$f.md"
    done
} > "$out/full_bench.md"
echo "$report"
echo
echo "(with every part's report: $out/full_bench.md)"
