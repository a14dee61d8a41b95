#!/bin/bash
# Where ingest.load's time and WAL go, stage by stage, on the billing-shaped
# data (lib.sh's billing_rows; DATA=live: small events in time order, 200
# organizations, 2,000 customers, 4 codes, 5% repeats): EVENTS events in calls of BATCH rows, each
# its own transaction, synchronous_commit on, into a managed table with the
# default rollup and index phases; plain COPY of the same files into an
# unmanaged table with no index, the ceiling; and the staging pattern (COPY
# into a temporary table, then INSERT ... ON CONFLICT DO NOTHING into a
# table with a BRIN and UNIQUE (organization_id, transaction_id, timestamp),
# as load_bench.sh loads it), all in the same run.
#
#   test/bench/load_profile.sh                    # 1M events
#   EVENTS=200000 test/bench/load_profile.sh      # quicker
#
# CPU: perf record (call graphs) of each loading backend; each stage's share
# is the inclusive samples of the function that does it.  WAL: pg_waldump
# --stats over each load's WAL, per relation (events heap, BRIN, ledger heap
# and index, rollup delta heap and index; for staging, the heap and its
# indexes) and in total.  Needs perf (Debian
# package linux-perf) and root or perf_event_paranoid <= 1.
#
# Prints a markdown report; writes it to test/bench/out/load_profile_$DATA.md too.
source "$(dirname "$0")/lib.sh"

EVENTS=${EVENTS:-1000000}
BATCH=${BATCH:-50000}
SEED=${SEED:-42}
DATA=${DATA:-billing}
command -v perf >/dev/null || { echo "load_profile.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }

throwaway_cluster 54396 "ingest.enabled = off" "shared_buffers = 2GB" "max_wal_size = 16GB" \
    "checkpoint_timeout = 30min" "autovacuum = off"
dir=$cluster_dir
pgdata=$cluster_dir/data
q -c "CREATE EXTENSION ingest" >/dev/null
define_billing_rows
q <<'SQL'
CREATE FUNCTION live_rows(first bigint, last bigint, total bigint, seed bigint)
RETURNS TABLE(organization_id uuid, transaction_id text, external_customer_id text,
              code text, ts timestamptz, properties jsonb, value float8, decimal_value numeric)
LANGUAGE sql AS $$
    SELECT ('00000000-0000-4000-8000-' || lpad((k % 200)::text, 12, '0'))::uuid,
           'tx-' || k, 'customer-' || (k % 2000),
           (ARRAY['api_call', 'tokens', 'storage_gb', 'seats'])[1 + k % 4],
           date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
             + k * (86400.0 / total) * interval '1 second',
           '{}'::jsonb, (k % 100)::float8, NULL::numeric
      FROM generate_series(first, last) n,
           LATERAL (SELECT CASE WHEN n % 20 = 0 AND n > 1000 THEN n - 1 - (n * 7919) % 1000
                                ELSE n END AS k) d
$$;
SQL
make_table pr_ingest ingest
make_table pr_bare bare
make_table pr_stage stage

nfiles=$(( (EVENTS + BATCH - 1) / BATCH ))
case $DATA in
    billing) gen=billing_rows ;;
    live) gen=live_rows ;;
    *) echo "DATA must be billing or live" >&2; exit 2 ;;
esac
echo "== generating $EVENTS $DATA events in $nfiles files"
for ((c = 0; c < nfiles; c++)); do
    q -c "COPY (SELECT * FROM $gen($((c * BATCH + 1)), $(((c + 1) * BATCH)), $EVENTS, $SEED)) TO '$dir/b$c.csv' CSV"
done
chmod -R a+rX "$dir"

# run_load NAME SQL-PER-FILE: every file through one backend, profiled;
# prints "seconds wal_start wal_end"
run_load() {
    local name=$1 stmt=$2 script=$dir/$1.sql pidfile=$dir/$1.pid perfpid t0 t1 lsn0 lsn1
    settle >/dev/null
    : > "$script"
    echo "COPY (SELECT pg_backend_pid()) TO '$pidfile';" >> "$script"
    echo "SELECT pg_sleep(2);" >> "$script"
    for ((c = 0; c < nfiles; c++)); do
        printf "$stmt\n" "$dir/b$c.csv" >> "$script"
    done
    lsn0=$(q -c "SELECT pg_current_wal_insert_lsn()")
    rm -f "$pidfile"
    q -f "$script" >/dev/null &
    local qpid=$!
    while [ ! -s "$pidfile" ]; do sleep 0.1; done
    perf record -q -g -F 499 -p "$(cat "$pidfile")" -o "$dir/$name.perf" >/dev/null 2>&1 &
    perfpid=$!
    sleep 1
    t0=$(now)
    wait "$qpid"
    t1=$(now)
    lsn1=$(q -c "SELECT pg_current_wal_insert_lsn()")
    wait "$perfpid" 2>/dev/null || true
    echo "$(echo "$t1 - $t0 - 1" | bc) $lsn0 $lsn1"
}

# WAL of a load by relation, and in total (wal_from and wal_to: the load's
# WAL), read before the next load's checkpoint recycles its segments
wal_bytes() {
    # the Total line's combined size (records + full-page images)
    as_pg pg_waldump --stats -p "$pgdata/pg_wal" -s "$wal_from" -e "$wal_to" "$@" 2>/dev/null \
        | awk '/^Total/ { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) v[++n] = $i; print v[n]; exit }'
}
db=$(q -c "SELECT oid FROM pg_database WHERE datname = current_database()")
# relfilenodes of a class of relations: the managed table's partitions
# (heap), their indexes, and each side table with its indexes
relwal() {
    local sql=$1 total=0 r b
    for r in $(q -c "$sql"); do
        b=$(wal_bytes --relation="1663/$db/$r")
        # (nothing printed: no WAL of that relation, as of an empty partition)
        total=$((total + ${b:-0}))
    done
    echo "$total"
}

echo "== plain COPY into an unindexed table"
read -r t_bare l0_bare l1_bare < <(run_load pr_bare "COPY pr_bare ($cols) FROM '%s' CSV;")
echo "== ingest.load"
read -r t_ingest l0_ingest l1_ingest < <(run_load pr_ingest "SELECT * FROM ingest.load('pr_ingest', pg_read_file('%s'));")
stored=$(q -c "SELECT count(*) FROM pr_ingest")
[ -n "${PROFILE_KEEP:-}" ] && cp "$dir/pr_ingest.perf" "$PROFILE_KEEP"
wal_from=$l0_ingest
wal_to=$l1_ingest
wal_total=$(( $(q -c "SELECT pg_wal_lsn_diff('$l1_ingest', '$l0_ingest')::bigint") ))
wal_bare=$(( $(q -c "SELECT pg_wal_lsn_diff('$l1_bare', '$l0_bare')::bigint") ))
side_of() { q -c "SELECT c.$1::oid FROM ingest.table_config c WHERE c.event_table = 'pr_ingest'::regclass"; }
ledger=$(side_of ledger)
deltas=$(side_of rollup_deltas)
hours=$(side_of rollup_hours)
w_heap=$(relwal "SELECT pg_relation_filenode(p.relid) FROM pg_partition_tree('pr_ingest') p WHERE p.isleaf")
w_idx=$(relwal "SELECT pg_relation_filenode(x.indexrelid) FROM pg_partition_tree('pr_ingest') p JOIN pg_index x ON x.indrelid = p.relid WHERE p.isleaf")
w_ledger=$(relwal "SELECT pg_relation_filenode($ledger)")
w_ledger_idx=$(relwal "SELECT pg_relation_filenode(x.indexrelid) FROM pg_index x WHERE x.indrelid = $ledger")
w_deltas=$(relwal "SELECT pg_relation_filenode($deltas) UNION ALL SELECT pg_relation_filenode(x.indexrelid) FROM pg_index x WHERE x.indrelid = $deltas")
w_hours=$(relwal "SELECT pg_relation_filenode($hours) UNION ALL SELECT pg_relation_filenode(x.indexrelid) FROM pg_index x WHERE x.indrelid = $hours")
w_other=$((wal_total - w_heap - w_idx - w_ledger - w_ledger_idx - w_deltas - w_hours))
delta_rows=$(q -c "SELECT count(*) FROM $(q -c "SELECT $deltas::regclass")")
keys=$(q -c "SELECT count(*) FROM $(q -c "SELECT $ledger::regclass")")
echo "== staging + INSERT ... ON CONFLICT DO NOTHING"
read -r t_stage l0_stage l1_stage < <(run_load pr_stage "BEGIN; CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT $cols FROM pr_stage WITH NO DATA; COPY stage ($cols) FROM '%s' CSV; INSERT INTO pr_stage ($cols) SELECT $cols FROM stage ON CONFLICT DO NOTHING; COMMIT;")
stored_stage=$(q -c "SELECT count(*) FROM pr_stage")

# inclusive share of each stage's function in a loading backend
for t in pr_ingest pr_stage; do
    perf report -i "$dir/$t.perf" --children --stdio --sort symbol -g none 2>/dev/null \
        > "$dir/$t.report"
done
report_of=pr_ingest
share() {
    local sym
    for sym in "$@"; do
        awk -v s="$sym" '$3 == "[.]" && $4 == s { gsub("%", "", $1); print $1; found = 1; exit }
                         END { if (!found) print 0 }' "$dir/$report_of.report"
    done | awk '{ t += $1 } END { printf "%.1f", t }'
}
declare -A stage
stage[parse]=$(share IngestParserNext)
stage[convert]=$(share IngestParserConvert)
stage[route]=$(share IngestPartWriterRoute)
stage[hash]=$(share IngestLedgerHash)
stage[ledger]=$(share IngestLedgerClaim)
stage[heap]=$(share IngestPartWriterFlush)
stage[rollup]=$(share IngestRollupFeed IngestRollupEnd)
stage[btree]=$(share _bt_doinsert)
stage[extend]=$(share RelationGetBufferForTuple)
stage[wal]=$(share XLogInsert)
stage[flush]=$(share XLogFlush)
stage[load]=$(share IngestLoadInput)
stage[read]=$(share pg_read_file_v2 pg_read_file_all pg_read_file_off_len pg_read_file)
stage[token]=$(share SpeculativeInsertionLockAcquire SpeculativeInsertionLockRelease)
report_of=pr_stage
declare -A st
st[copy]=$(share CopyFrom)
st[insert]=$(share ExecInsert)
st[probe]=$(share ExecCheckIndexConstraints)
st[token]=$(share SpeculativeInsertionLockAcquire SpeculativeInsertionLockRelease)
st[heap]=$(share heap_insert heap_multi_insert)
st[btree]=$(share _bt_doinsert)
st[wal]=$(share XLogInsert)
st[flush]=$(share XLogFlush)

wal_from=$l0_stage
wal_to=$l1_stage
ws_total=$(( $(q -c "SELECT pg_wal_lsn_diff('$l1_stage', '$l0_stage')::bigint") ))
ws_heap=$(relwal "SELECT pg_relation_filenode(p.relid) FROM pg_partition_tree('pr_stage') p WHERE p.isleaf")
ws_uniq=$(relwal "SELECT pg_relation_filenode(x.indexrelid) FROM pg_partition_tree('pr_stage') p JOIN pg_index x ON x.indrelid = p.relid WHERE p.isleaf AND x.indisunique")
ws_brin=$(relwal "SELECT pg_relation_filenode(x.indexrelid) FROM pg_partition_tree('pr_stage') p JOIN pg_index x ON x.indrelid = p.relid WHERE p.isleaf AND NOT x.indisunique")
ws_other=$((ws_total - ws_heap - ws_uniq - ws_brin))

per() { awk -v b="$1" -v n="${2:-$stored}" 'BEGIN { printf "%.0f", b / n }'; }
pct() { awk -v b="$1" -v n="$wal_total" 'BEGIN { printf "%.0f%%", 100 * b / n }'; }
report=$(cat <<EOF
## Load profile: where ingest.load's time and WAL go

\`DATA=$DATA EVENTS=$EVENTS BATCH=$BATCH test/bench/load_profile.sh\`, $(date -u +%F), PostgreSQL $(q -c "SHOW server_version"), $(nproc) cores;
$DATA data, $nfiles calls of $BATCH rows, each its own transaction, synchronous_commit on;
$stored events stored, $keys keys in the ledger, $delta_rows rollup delta rows written (before any fold).

| | seconds | rows/s | WAL bytes/event |
|---|---|---|---|
| plain COPY, no index (ceiling) | $t_bare | $(rate "$EVENTS" "$t_bare") | $(per "$wal_bare") |
| ingest.load | $t_ingest | $(rate "$EVENTS" "$t_ingest") | $(per "$wal_total") |
| staging + INSERT ... ON CONFLICT ($stored_stage events stored: retries re-stamped are stored twice) | $t_stage | $(rate "$EVENTS" "$t_stage") | $(per "$ws_total" "$stored_stage") |
| ingest.load / ceiling | | $(awk -v a="$t_bare" -v b="$t_ingest" 'BEGIN { printf "%.2f", a / b }') | |
| ingest.load / staging | | $(awk -v a="$t_stage" -v b="$t_ingest" 'BEGIN { printf "%.2f", a / b }') | |

CPU of the loading backend (perf, inclusive on-CPU samples of each stage's function; the last rows cut across the stages above them; time waiting for the disk, as for the commit's WAL flush, is not sampled):

| stage | function | share of samples |
|---|---|---|
| read the file (pg_read_file) | pg_read_file | ${stage[read]}% |
| the load as a whole | IngestLoadInput | ${stage[load]}% |
| parse | IngestParserNext | ${stage[parse]}% |
| convert (input functions) | IngestParserConvert | ${stage[convert]}% |
| route to a partition | IngestPartWriterRoute | ${stage[route]}% |
| payload hash | IngestLedgerHash | ${stage[hash]}% |
| ledger claim | IngestLedgerClaim | ${stage[ledger]}% |
| heap and BRIN insert | IngestPartWriterFlush | ${stage[heap]}% |
| rollup feed (per batch, and the flush at the end) | IngestRollupFeed, IngestRollupEnd | ${stage[rollup]}% |
| B-tree inserts (ledger, deltas) | _bt_doinsert | ${stage[btree]}% |
| finding heap space, extending (all heaps) | RelationGetBufferForTuple | ${stage[extend]}% |
| WAL insertion (all stages) | XLogInsert | ${stage[wal]}% |
| WAL flush at commit | XLogFlush | ${stage[flush]}% |
| speculative insertion locks (ledger) | SpeculativeInsertionLockAcquire, -Release | ${stage[token]}% |

WAL of the load, by relation (pg_waldump --stats, records and full-page images):

| relation | bytes/event | share |
|---|---|---|
| event partitions (heap) | $(per "$w_heap") | $(pct "$w_heap") |
| their indexes (BRIN) | $(per "$w_idx") | $(pct "$w_idx") |
| ledger heap | $(per "$w_ledger") | $(pct "$w_ledger") |
| ledger index | $(per "$w_ledger_idx") | $(pct "$w_ledger_idx") |
| rollup deltas (heap and index) | $(per "$w_deltas") | $(pct "$w_deltas") |
| rollup hours (heap and index) | $(per "$w_hours") | $(pct "$w_hours") |
| other (commits, rejects, statistics) | $(per "$w_other") | $(pct "$w_other") |
| total | $(per "$wal_total") | 100% |

The staging pattern's backend, the same way (CPU shares; then WAL per event it stored):

| stage | function | share of samples |
|---|---|---|
| COPY into the temporary table | CopyFrom | ${st[copy]}% |
| INSERT ... ON CONFLICT, per row | ExecInsert | ${st[insert]}% |
| its check for a conflict before inserting | ExecCheckIndexConstraints | ${st[probe]}% |
| speculative insertion locks | SpeculativeInsertionLockAcquire, -Release | ${st[token]}% |
| heap inserts (the table; the temporary one's, multi-insert) | heap_insert, heap_multi_insert | ${st[heap]}% |
| B-tree inserts (the unique index) | _bt_doinsert | ${st[btree]}% |
| WAL insertion | XLogInsert | ${st[wal]}% |
| WAL flush at commit | XLogFlush | ${st[flush]}% |

| relation | bytes/event |
|---|---|
| partitions (heap) | $(per "$ws_heap" "$stored_stage") |
| UNIQUE (organization_id, transaction_id, timestamp) | $(per "$ws_uniq" "$stored_stage") |
| BRIN | $(per "$ws_brin" "$stored_stage") |
| other (commits, the temporary table's catalog rows) | $(per "$ws_other" "$stored_stage") |
| total | $(per "$ws_total" "$stored_stage") |
EOF
)
echo "$report"
mkdir -p "$top/test/bench/out"
echo "$report" > "$top/test/bench/out/load_profile_$DATA.md"
