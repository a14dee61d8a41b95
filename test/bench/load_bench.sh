#!/bin/bash
# Loader benchmark: rows per second of ingest.load against the usual ways of
# landing events, on the same generated data (about 5% duplicates: repeats
# within a chunk, across chunks, and retries re-stamped with a new
# timestamp), in one throwaway cluster, plus ingest.load's growth curve.
#
#   test/bench/load_bench.sh                 # 2M rows per method, growth to 20M
#   SHARED_BUFFERS=6GB test/bench/load_bench.sh   # the cluster's shared_buffers (2GB)
#   ROWS=200000 GROWTH=1000000 test/bench/load_bench.sh   # a quick run
#   STATS_ONLY=1 ROWS=2000000 GROWTH=2000000 CHUNK=50000 test/bench/load_bench.sh
#                                       # only load statistics on against off
#
#   DATA=billing ROWS=200000 test/bench/load_bench.sh
#                                       # billing-shaped data instead (load_billing.sh)
#   DATA=both ROWS=200000 GROWTH=200000 test/bench/load_bench.sh
#                                       # this data set, then the billing-shaped one
#
# Prints a markdown table; writes it to test/bench/out/load_bench.md too
# (DATA=billing: load_bench_billing.md; DATA=both: both, and the two
# together in load_bench_both.md).
case ${DATA:=live} in
    live) ;;
    billing) exec "$(dirname "$0")/load_billing.sh" ;;
    both)
        DATA=live "$0"
        DATA=billing "$0"
        out=$(dirname "$0")/out
        cat "$out/load_bench.md" - "$out/load_bench_billing.md" <<<"" > "$out/load_bench_both.md"
        exit 0 ;;
    *) echo "DATA must be live, billing or both" >&2; exit 2 ;;
esac
source "$(dirname "$0")/lib.sh"

ROWS=${ROWS:-2000000}
GROWTH=${GROWTH:-20000000}
CHUNK=${CHUNK:-100000}
WINDOW=${WINDOW:-2000000}
[ "$GROWTH" -lt "$ROWS" ] && GROWTH=$ROWS
[ "$WINDOW" -gt "$GROWTH" ] && WINDOW=$GROWTH

throwaway_cluster 54392 "ingest.enabled = off" "shared_buffers = ${SHARED_BUFFERS:-2GB}" \
    "max_wal_size = 16GB" "checkpoint_timeout = 30min" "synchronous_commit = off"
dir=$cluster_dir
cols="organization_id, transaction_id, external_customer_id, code, \"timestamp\", properties, value, decimal_value"

q <<SQL
CREATE EXTENSION ingest;
-- ingest: the ledger is the only index
SELECT ingest.create_event_table('ev_ingest', premake => 3);
-- load statistics on against off (ingest.track_loads): two more tables,
-- loaded chunk by chunk alternating so that both see the same machine
SELECT ingest.create_event_table('ev_stats_a', premake => 3);
SELECT ingest.create_event_table('ev_stats_b', premake => 3);
-- ingest.load's growth curve, last, from an empty table
SELECT ingest.create_event_table('ev_growth', premake => 3);
-- COPY FROM STDIN through the hook: the same loader
SELECT ingest.create_event_table('ev_hook', premake => 3);
-- plain COPY, no dedup at all, a conventional index set
SELECT ingest.create_event_table('ev_copy', premake => 3);
SELECT ingest.unmanage_table('ev_copy');
CREATE INDEX ON ev_copy (organization_id, "timestamp");
CREATE INDEX ON ev_copy (organization_id, transaction_id);
-- the ceiling: plain COPY into the same partitions with no index at all
SELECT ingest.create_event_table('ev_bare', premake => 3);
SELECT ingest.unmanage_table('ev_bare');
DO \$\$
DECLARE i regclass;
BEGIN
    FOR i IN SELECT x.indexrelid::regclass FROM pg_index x JOIN pg_inherits h ON h.inhrelid = x.indrelid
              WHERE h.inhparent = 'ev_bare'::regclass LOOP
        EXECUTE format('DROP INDEX %s', i);
    END LOOP;
END \$\$;
-- ON CONFLICT needs a unique arbiter, which must contain the partition key
SELECT ingest.create_event_table('ev_stage', premake => 3);
SELECT ingest.unmanage_table('ev_stage');
CREATE UNIQUE INDEX ON ev_stage (organization_id, transaction_id, "timestamp");
SELECT ingest.create_event_table('ev_multi', premake => 3);
SELECT ingest.unmanage_table('ev_multi');
CREATE UNIQUE INDEX ON ev_multi (organization_id, transaction_id, "timestamp");

-- Row n of the data.  Events arrive in time order, as from a live feed:
-- the whole run spans two days.  Every 20th row repeats a key: in the same
-- chunk, from an earlier chunk, or as a retry re-stamped an hour later.
CREATE FUNCTION bench_rows(first bigint, last bigint, total bigint DEFAULT $GROWTH)
RETURNS TABLE(organization_id uuid, transaction_id text, external_customer_id text,
              code text, ts timestamptz, properties jsonb, value float8, decimal_value numeric)
LANGUAGE sql AS \$\$
    SELECT ('00000000-0000-4000-8000-' || lpad((k % 500)::text, 12, '0'))::uuid,
           'tx-' || k,
           'customer-' || (k % 5000),
           (ARRAY['api_call', 'tokens', 'storage_gb', 'seats'])[1 + k % 4],
           date_trunc('day', now()) + (k * 172800.0 / total) * interval '1 second'
             + CASE WHEN n % 60 = 40 THEN interval '1 hour' ELSE interval '0' END,
           jsonb_build_object('model', 'm' || (k % 7), 'region', 'r' || (k % 3)),
           (k % 100)::float8,
           (k % 1000) / 100.0
      FROM generate_series(first, last) n,
           LATERAL (SELECT CASE WHEN n % 60 = 0 THEN n - 1
                                WHEN n % 60 = 20 AND n > 150001 THEN n - 150001
                                WHEN n % 60 = 40 THEN n - 7
                                ELSE n END AS k) x
\$\$;
SQL

echo "== generating $GROWTH rows in chunks of $CHUNK"
nchunks=$(( (GROWTH + CHUNK - 1) / CHUNK ))
for ((c = 0; c < nchunks; c++)); do
    f=$(printf '%s/chunk%05d.csv' "$dir" "$c")
    q -c "COPY (SELECT * FROM bench_rows($((c * CHUNK + 1)), $(((c + 1) * CHUNK)))) TO '$f' CSV"
    if (( c * CHUNK < ROWS )) && [ -z "${STATS_ONLY:-}" ]; then
        q -c "COPY (SELECT 'INSERT INTO ev_multi ($cols) VALUES ' ||
                   string_agg(format('(%L,%L,%L,%L,%L,%L,%s,%s)', organization_id, transaction_id,
                                     external_customer_id, code, ts, properties, value, decimal_value), ',')
                   || ' ON CONFLICT DO NOTHING;'
                FROM (SELECT *, row_number() OVER () AS r FROM bench_rows($((c * CHUNK + 1)), $(((c + 1) * CHUNK)))) b
               GROUP BY (r - 1) / 1000) TO '$dir/multi$c.sql'"
    fi
done
chunks_for() { echo $(( ($1 + CHUNK - 1) / CHUNK )); }
nrows=$(chunks_for "$ROWS")


if [ -z "${STATS_ONLY:-}" ]; then
    settle
    echo "== ingest.load"
    # into its own empty table, as every other method: one pass over the chunks
    t0=$(now)
    for ((c = 0; c < nrows; c++)); do
        q -c "SELECT * FROM ingest.load('ev_ingest', pg_read_file('$(printf '%s/chunk%05d.csv' "$dir" "$c")'))" >/dev/null
    done
    t_ingest=$(echo "$(now) - $t0" | bc)
fi

settle
echo "== ingest.load, load statistics on and off"
# Each chunk into two more managed tables, one with load statistics on and
# one off.  Which table has them on, and which is loaded first, alternate
# from chunk to chunk, so that neither a table nor the machine's quieter
# moments favour one side.  (Two tables loaded in turn share the machine
# and its caches, so these rows/s are not ingest.load's figure above.)
t_stats=0
t_nostats=0
load_timed() {
    local t0=$(now)
    q -c "SET ingest.track_loads = $1" -c "SELECT * FROM ingest.load('$2', pg_read_file('$3'))" >/dev/null
    echo "$(now) - $t0" | bc
}
for ((c = 0; c < nrows; c++)); do
    f=$(printf '%s/chunk%05d.csv' "$dir" "$c")
    if (( c % 2 == 0 )); then on=ev_stats_a off=ev_stats_b; else on=ev_stats_b off=ev_stats_a; fi
    if (( (c / 2) % 2 == 0 )); then
        t_stats=$(echo "$t_stats + $(load_timed on $on "$f")" | bc)
        t_nostats=$(echo "$t_nostats + $(load_timed off $off "$f")" | bc)
    else
        t_nostats=$(echo "$t_nostats + $(load_timed off $off "$f")" | bc)
        t_stats=$(echo "$t_stats + $(load_timed on $on "$f")" | bc)
    fi
done
stats_line="Load statistics (ingest.track_loads) cost ingest.load $(awk -v on="$t_stats" -v off="$t_nostats" 'BEGIN { printf "%+.2f", (on - off) * 100 / off }')% ($(rate "$((nrows * CHUNK))" "$t_stats") rows/s on, $(rate "$((nrows * CHUNK))" "$t_nostats") rows/s off, $nrows chunks of $CHUNK, each into both tables, which has statistics on and which goes first alternating)."
if [ -n "${STATS_ONLY:-}" ]; then
    # STATS_ONLY=1: just this comparison, for a quick and long-enough run
    mkdir -p "$top/test/bench/out"
    echo "$stats_line (PostgreSQL $(q -c "SHOW server_version"), $(nproc) cores)" | tee "$top/test/bench/out/load_stats_cost.md"
    exit 0
fi

settle
echo "== COPY FROM STDIN through the hook"
t0=$(now)
for ((c = 0; c < nrows; c++)); do
    q -c "COPY ev_hook ($cols) FROM STDIN (FORMAT csv)" < "$(printf '%s/chunk%05d.csv' "$dir" "$c")" >/dev/null
done
t_hook=$(echo "$(now) - $t0" | bc)

settle
copy_chunks() {
    local t0=$(now)
    for ((c = 0; c < nrows; c++)); do
        q -c "COPY $1 ($cols) FROM '$(printf '%s/chunk%05d.csv' "$dir" "$c")' CSV"
    done
    echo "$(now) - $t0" | bc
}
echo "== plain COPY"
t_copy=$(copy_chunks ev_copy)

settle
echo "== plain COPY, no index"
t_bare=$(copy_chunks ev_bare)

settle
echo "== COPY into staging + INSERT ... ON CONFLICT DO NOTHING"
t0=$(now)
for ((c = 0; c < nrows; c++)); do
    q <<SQL
BEGIN;
CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT $cols FROM ev_stage WITH NO DATA;
COPY stage ($cols) FROM '$(printf '%s/chunk%05d.csv' "$dir" "$c")' CSV;
INSERT INTO ev_stage ($cols) SELECT $cols FROM stage ON CONFLICT DO NOTHING;
COMMIT;
SQL
done
t_stage=$(echo "$(now) - $t0" | bc)

settle
echo "== batched multi-row INSERT ... ON CONFLICT DO NOTHING (1000 rows a statement)"
t0=$(now)
for ((c = 0; c < nrows; c++)); do
    q -f "$dir/multi$c.sql" >/dev/null
done
t_multi=$(echo "$(now) - $t0" | bc)

settle
echo "== ingest.load, growth to $GROWTH rows (windows of $WINDOW)"
# What each window did besides loading, to see where a decline comes from:
# WAL bytes, checkpoints, and autovacuum and autoanalyze runs on the
# table's partitions and side tables; and the ledger index's size at its end.
if [ "$(q -c "SHOW server_version_num")" -ge 170000 ]; then
    checkpoints="SELECT num_timed + num_requested FROM pg_stat_checkpointer"
else
    checkpoints="SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
fi
window_state() {
    q -F ' ' -c "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, ($checkpoints),
                        (SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)
                           FROM pg_stat_user_tables
                          WHERE relid IN (SELECT relid FROM pg_partition_tree('ev_growth'))
                             OR schemaname = 'ingest_side' AND relname LIKE 'ev\\_growth%'),
                        pg_indexes_size('ingest_side.ev_growth_keys') / 1048576"
}
growth=""
windows=()
wstart=$(now)
read -r wal0 ckpt0 av0 _ <<<"$(window_state)"
per_window=$(( WINDOW / CHUNK ))
for ((c = 0; c < nchunks; c++)); do
    f=$(printf '%s/chunk%05d.csv' "$dir" "$c")
    q -c "SELECT * FROM ingest.load('ev_growth', pg_read_file('$f'))" >/dev/null
    if (( (c + 1) % per_window == 0 )); then
        t=$(now)
        wrate=$(rate "$WINDOW" "$(echo "$t - $wstart" | bc)")
        first_window=${first_window:-$wrate}
        last_window=$wrate
        windows+=("$wrate")
        read -r wal ckpt av ledger_mb <<<"$(window_state)"
        growth+="| $(( (c + 1 - per_window) * CHUNK / 1000 ))k-$(( (c + 1) * CHUNK / 1000 ))k | $wrate | $(( (wal - wal0) / WINDOW )) | $(( ckpt - ckpt0 )) | $(( av - av0 )) | $ledger_mb |"$'\n'
        wal0=$wal ckpt0=$ckpt av0=$av
        wstart=$(now)
    fi
done

stored=$(q -c "SELECT count(*) FROM ev_growth")
dupfree=$(q -c "SELECT count(*) = count(DISTINCT (organization_id, transaction_id)) FROM ev_growth")
rows_loaded=$(( nrows * CHUNK ))
r_copy=$(rate "$rows_loaded" "$t_copy")
out=$(cat <<EOT
Input: $rows_loaded rows per method in chunks of $CHUNK (about 5% duplicate keys), PostgreSQL $(q -c "SHOW server_version"), $(nproc) cores.

| method | rows/s | vs plain COPY | dedup |
|---|---|---|---|
| ingest.load (csv) | $(rate "$rows_loaded" "$t_ingest") | $(awk -v a="$t_copy" -v b="$t_ingest" 'BEGIN { printf "%.2f", a / b }') | exact, global |
| COPY FROM STDIN through the hook | $(rate "$rows_loaded" "$t_hook") | $(awk -v a="$t_copy" -v b="$t_hook" 'BEGIN { printf "%.2f", a / b }') | exact, global |
| plain COPY, btree (org, ts) + (org, tx) | $r_copy | 1.00 | none |
| plain COPY, no index at all (the ceiling) | $(rate "$rows_loaded" "$t_bare") | $(awk -v a="$t_copy" -v b="$t_bare" 'BEGIN { printf "%.2f", a / b }') | none |
| COPY to staging + INSERT ... ON CONFLICT | $(rate "$rows_loaded" "$t_stage") | $(awk -v a="$t_copy" -v b="$t_stage" 'BEGIN { printf "%.2f", a / b }') | per (org, tx, ts) |
| multi-row INSERT ... ON CONFLICT | $(rate "$rows_loaded" "$t_multi") | $(awk -v a="$t_copy" -v b="$t_multi" 'BEGIN { printf "%.2f", a / b }') | per (org, tx, ts) |

$stats_line

ingest.load against the staging pattern: $(awk -v a="$t_stage" -v b="$t_ingest" 'BEGIN { printf "%.2f", a / b }')x.

ingest.load growth ($GROWTH rows into one table; $stored stored, keys unique: $dupfree; last window $(awk -v a="$last_window" -v b="$first_window" 'BEGIN { printf "%d", a * 100 / b }')% of the first):

| window | rows/s | WAL bytes/event | checkpoints | autovacuum + autoanalyze runs | ledger index MB at the end |
|---|---|---|---|---|---|
$growth
EOT
)
# the mean of the last five windows against the first five: one window
# varies by about 15% from the next
nw=${#windows[@]}
k=$(( nw < 5 ? nw : 5 ))
last5_first5=$(printf '%s\n' "${windows[@]}" | awk -v n="$nw" -v k="$k" '
    { w[NR] = $1 } END { for (i = 1; i <= k; i++) { f += w[i]; l += w[n - k + i] } printf "%d", l * 100 / f }')
out+=$'\n\n'"Mean of the last $k windows against the first $k: $last5_first5%."
echo "$out"
mkdir -p "$top/test/bench/out"
echo "$out" > "$top/test/bench/out/load_bench.md"
# the figures full_bench.sh checks against the targets (unrounded: it
# rounds them only to print)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", a / b }'; }
cat > "$top/test/bench/out/load_bench.vars" <<EOT
live_ingest_bare=$(ratio "$t_bare" "$t_ingest")
live_hook_bare=$(ratio "$t_bare" "$t_hook")
live_ingest_copy=$(ratio "$t_copy" "$t_ingest")
live_hook_copy=$(ratio "$t_copy" "$t_hook")
live_ingest_stage=$(ratio "$t_stage" "$t_ingest")
live_hook_stage=$(ratio "$t_stage" "$t_hook")
live_rows=$rows_loaded
growth_rows=$GROWTH
growth_window=$WINDOW
growth_last_first=$(awk -v a="$last_window" -v b="$first_window" 'BEGIN { printf "%d", a * 100 / b }')
growth_last5_first5=$last5_first5
growth_windows="${windows[*]}"
growth_keys_unique=$dupfree
EOT
