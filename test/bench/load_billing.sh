#!/bin/bash
# Loader benchmark on billing-shaped data: test/bench/load_bench.sh runs
# this with DATA=billing (or DATA=both, after the live-order data set).
#
#   DATA=billing test/bench/load_bench.sh                 # 2M rows per method
#   DATA=billing ROWS=200000 test/bench/load_bench.sh     # a quick run
#   test/bench/load_billing.sh                            # the same, directly
#
# The data (billing_rows in lib.sh, seeded by SEED, default 42): 10,000
# customers with Zipf-like activity in 50 organizations, 20 codes, about
# 245 bytes of properties, 5% duplicate keys of which 0.5% of all rows are
# retries re-stamped with a new timestamp, 5% of the events late by up to
# two days; batches of CHUNK (50,000) rows, each its own transaction,
# synchronous_commit = on.  Each batch goes into every method's table in
# turn (the order rotating from batch to batch, so that none gets the
# machine's quieter moments), timing each call and the WAL it wrote
# (pg_current_wal_lsn before and after).  Methods:
#   ingest.load                 managed table (ledger dedup, rollup feed, BRIN)
#   COPY FROM STDIN via hook    the same loader behind COPY
#   plain COPY + BRIN + B-trees BRIN (timestamp), B-trees (organization_id,
#                               code, timestamp) and (external_customer_id,
#                               timestamp); no dedup
#   plain COPY, no index        the ceiling
#   staging + ON CONFLICT       COPY into a temp table, INSERT ... SELECT ...
#                               ON CONFLICT DO NOTHING on UNIQUE
#                               (organization_id, transaction_id, timestamp)
# Prints markdown; writes it to test/bench/out/load_bench_billing.md too.
source "$(dirname "$0")/lib.sh"

ROWS=${ROWS:-2000000}
CHUNK=${CHUNK:-50000}
SEED=${SEED:-42}

throwaway_cluster 54393 "ingest.enabled = off" "shared_buffers = 2GB" \
    "max_wal_size = 16GB" "checkpoint_timeout = 30min" "synchronous_commit = on"
dir=$cluster_dir
export PGOPTIONS="-c client_min_messages=warning"   # not ingest.load's NOTICE per call

q -c "CREATE EXTENSION ingest"
define_billing_rows
methods=(ingest hook copy bare stage)
declare -A label=(
    [ingest]="ingest.load (csv)"
    [hook]="COPY FROM STDIN through the hook"
    [copy]="plain COPY, BRIN + B-trees (org, code, ts), (customer, ts)"
    [bare]="plain COPY, no index (the ceiling)"
    [stage]="COPY to staging + INSERT ... ON CONFLICT DO NOTHING"
)
declare -A dedup=([ingest]="exact, global (org, tx)" [hook]="exact, global (org, tx)"
                  [copy]="none" [bare]="none" [stage]="per (org, tx, ts) only")
make_table bl_ingest ingest
make_table bl_hook ingest
make_table bl_copy copy
make_table bl_bare bare
make_table bl_stage stage

nchunks=$(( (ROWS + CHUNK - 1) / CHUNK ))
rows=$(( nchunks * CHUNK ))
echo "== generating $rows billing-shaped rows in $nchunks batches of $CHUNK (seed $SEED)"
t0=$(now)
for ((c = 0; c < nchunks; c++)); do
    q -c "COPY (SELECT * FROM billing_rows($((c * CHUNK + 1)), $(((c + 1) * CHUNK)), $rows, $SEED)) TO '$dir/b$c.csv' CSV"
done
t_gen=$(echo "$(now) - $t0" | bc)

declare -A T W
sum_loaded=0 sum_dup=0 sum_rej=0 sum_conf=0
call() {
    local f=$2
    case $1 in
        ingest)
            local r
            r=$(q -c "SELECT loaded, duplicates, rejected, conflicts FROM ingest.load('bl_ingest', pg_read_file('$f'))")
            IFS='|' read -r l d j k <<<"$r"
            sum_loaded=$((sum_loaded + l)) sum_dup=$((sum_dup + d)) sum_rej=$((sum_rej + j)) sum_conf=$((sum_conf + k)) ;;
        hook)
            q -c "COPY bl_hook ($cols) FROM STDIN (FORMAT csv)" < "$f" >/dev/null ;;
        copy|bare)
            q -c "COPY bl_$1 ($cols) FROM '$f' CSV" ;;
        stage)
            q <<SQL ;;
BEGIN;
CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT $cols FROM bl_stage WITH NO DATA;
COPY stage ($cols) FROM '$f' CSV;
INSERT INTO bl_stage ($cols) SELECT $cols FROM stage ON CONFLICT DO NOTHING;
COMMIT;
SQL
    esac
}
timed() {
    local l0 t0 t1 w
    l0=$(q -c "SELECT pg_current_wal_lsn()")
    t0=$(now)
    call "$1" "$2"
    t1=$(now)
    w=$(q -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$l0')")
    T[$1]=$(echo "${T[$1]:-0} + $t1 - $t0" | bc)
    W[$1]=$(echo "${W[$1]:-0} + $w" | bc)
}

settle
echo "== loading: each batch by every method, the order rotating"
for ((c = 0; c < nchunks; c++)); do
    for ((mi = 0; mi < ${#methods[@]}; mi++)); do
        m=${methods[$(( (c + mi) % ${#methods[@]} ))]}
        timed "$m" "$dir/b$c.csv"
    done
    printf '.'
done
echo

# what the data holds: plain COPY stored every input row
data_line=$(q -c "SELECT format('%s rows; %s distinct keys (%s%% duplicate rows); %s re-stamped retries (%s%%); properties %s bytes as text, %s as jsonb on average; %s customers, %s organizations, %s codes',
                  count(*), count(DISTINCT transaction_id),
                  round(100 - count(DISTINCT transaction_id) * 100.0 / count(*), 2),
                  count(DISTINCT (transaction_id, \"timestamp\")) - count(DISTINCT transaction_id),
                  round((count(DISTINCT (transaction_id, \"timestamp\")) - count(DISTINCT transaction_id)) * 100.0 / count(*), 2),
                  round(avg(length(properties::text))), round(avg(pg_column_size(properties))),
                  count(DISTINCT external_customer_id), count(DISTINCT organization_id), count(DISTINCT code))
                FROM bl_copy")
r() { rate "$rows" "${T[$1]}"; }
ratio() { awk -v a="${T[$2]}" -v b="${T[$1]}" 'BEGIN { printf "%.2f", a / b }'; }
per_event() { awk -v a="$1" -v n="$2" 'BEGIN { printf "%.1f", a / n }'; }

# rollups and ledger of the two managed tables
side() {
    local tbl=$1 ledger hours deltas stored ndeltas nhours nkeys lbytes
    IFS='|' read -r ledger hours deltas <<<"$(q -c "SELECT ledger, rollup_hours, rollup_deltas FROM ingest.table_config WHERE event_table = '$tbl'::regclass")"
    stored=$(q -c "SELECT count(*) FROM $tbl")
    ndeltas=$(q -c "SELECT count(*) FROM $deltas")
    q -c "SELECT ingest.fold_rollups('$tbl')" >/dev/null
    nhours=$(q -c "SELECT count(*) FROM $hours")
    nkeys=$(q -c "SELECT count(*) FROM $ledger")
    lbytes=$(q -c "SELECT pg_total_relation_size('$ledger')")
    echo "| $tbl | $stored | $nkeys | $(awk -v a="$lbytes" -v n="$nkeys" 'BEGIN { printf "%.1f", a / n }') | $ndeltas ($(awk -v a="$ndeltas" -v n="$stored" 'BEGIN { printf "%.3f", a / n }')) | $nhours ($(awk -v a="$nhours" -v n="$stored" 'BEGIN { printf "%.3f", a / n }')) |"
}

table=""
for m in "${methods[@]}"; do
    table+="| ${label[$m]} | $(r "$m") | $(ratio "$m" bare) | $(ratio "$m" copy) | $(ratio "$m" stage) | $(per_event "${W[$m]}" "$rows") | $(q -c "SELECT count(*) FROM bl_$m") | ${dedup[$m]} |"$'\n'
done
verdict() {  # verdict NAME RATIO TARGET
    awk -v r="$2" -v t="$3" -v n="$1" 'BEGIN { printf "%s %.2f (target >= %s: %s)", n, r, t, (r >= t ? "met" : "not met") }'
}

out=$(cat <<EOT
### Billing-shaped data

Input: $data_line. $nchunks batches of $CHUNK rows, each its own transaction, synchronous_commit = on; every batch into every method's table in turn, the order rotating. PostgreSQL $(q -c "SHOW server_version"), $(nproc) cores. Data generated in ${t_gen}s (seed $SEED).

| method | rows/s | vs no-index COPY | vs COPY + BRIN + B-trees | vs staging + ON CONFLICT | WAL bytes/event | rows stored | dedup |
|---|---|---|---|---|---|---|---|
$table
Ratios are rows/s over rows/s; WAL is pg_current_wal_lsn() after each call minus before, over the $rows input rows.

Against the targets:
- $(verdict "ingest.load vs plain COPY with no index:" "$(ratio ingest bare)" 0.45); $(verdict "COPY through the hook:" "$(ratio hook bare)" 0.45)
- $(verdict "ingest.load vs plain COPY with BRIN + B-trees:" "$(ratio ingest copy)" 1.3); $(verdict "COPY through the hook:" "$(ratio hook copy)" 1.3)
- ingest.load vs staging + ON CONFLICT: $(ratio ingest stage)x; COPY through the hook: $(ratio hook stage)x

ingest.load's counts over all batches: $sum_loaded loaded, $sum_dup duplicates, $sum_conf conflicts (re-stamped retries: same key, another payload; listed in ingest.rejects), $sum_rej rejected.

Side tables of the managed tables (rollup deltas counted before ingest.fold_rollups, rollup rows after; per stored event in parentheses):

| table | events stored | ledger keys | ledger bytes/key | rollup delta rows (per event) | rollup rows (per event) |
|---|---|---|---|---|---|
$(side bl_ingest)
$(side bl_hook)

Indexes on the partitions (definition on partitions having it/all partitions; the managed table gets its declared B-trees on days already closed, the two days before today, when they are made): bl_ingest: $(index_summary bl_ingest); bl_copy: $(index_summary bl_copy); bl_stage: $(index_summary bl_stage); bl_bare: $(index_summary bl_bare).
EOT
)
echo "$out"
mkdir -p "$top/test/bench/out"
echo "$out" > "$top/test/bench/out/load_bench_billing.md"
# the figures full_bench.sh checks against the targets (unrounded: it
# rounds them only to print)
ratio4() { awk -v a="${T[$2]}" -v b="${T[$1]}" 'BEGIN { printf "%.4f", a / b }'; }
cat > "$top/test/bench/out/load_bench_billing.vars" <<EOT
bill_ingest_bare=$(ratio4 ingest bare)
bill_hook_bare=$(ratio4 hook bare)
bill_ingest_copy=$(ratio4 ingest copy)
bill_hook_copy=$(ratio4 hook copy)
bill_ingest_stage=$(ratio4 ingest stage)
bill_hook_stage=$(ratio4 hook stage)
bill_rows=$rows
EOT
