#!/bin/bash
# What keeping the ledger and rollups exact costs UPDATE and DELETE, and how
# long writers wait while a rollup is created, in one throwaway cluster.
#
# Part 1: the same ROWS events in a managed table and in an unmanaged copy
# (same partitions, same BRIN index); UPDATE of a measure, UPDATE of the
# key, UPDATE moving every row to the next day, DELETE of every row; each
# statement timed on both, and the fold that recomputes the stale hours.
# Part 2: a loader commits 1,000-row batches in a loop while
# ingest.create_rollup() runs on a table of ROLLUP_ROWS events and the next
# fold builds the rollup; the longest batch before, during and after.
#
#   test/bench/changes_bench.sh                       # 1M rows, 2M for part 2
#   ROWS=100000 ROLLUP_ROWS=200000 test/bench/changes_bench.sh   # quick
#
# Prints a markdown table; writes it to test/bench/out/changes_bench.md too.
source "$(dirname "$0")/lib.sh"

ROWS=${ROWS:-1000000}
ROLLUP_ROWS=${ROLLUP_ROWS:-2000000}

throwaway_cluster 54393 "ingest.enabled = off" "shared_buffers = 2GB" \
    "max_wal_size = 16GB" "checkpoint_timeout = 30min" "synchronous_commit = off"

# N events of today as a CSV file: 50 organizations, 1,000 customers, 4 codes
csv() {
    q -c "COPY (SELECT format('00000000-0000-0000-0000-%s', lpad((n % 50)::text, 12, '0')),
                       'tx-' || n, 'c' || n % 1000, (ARRAY['api', 'tokens', 'storage', 'seats'])[1 + n % 4],
                       date_trunc('day', now()) + n * (86399.0 / $1) * interval '1 second',
                       jsonb_build_object('model', 'm' || n % 7), n % 100, NULL
                  FROM generate_series(1, $1) n) TO '$cluster_dir/$2.csv' CSV"
}
cols="organization_id, transaction_id, external_customer_id, code, \"timestamp\", properties, value, decimal_value"
csv "$ROWS" events
q <<SQL
CREATE EXTENSION ingest;
SELECT ingest.create_event_table('ev_managed', premake => 2);
SELECT ingest.create_event_table('ev_plain', premake => 2);
SELECT ingest.unmanage_table('ev_plain');
SELECT loaded FROM ingest.load_file('ev_managed', '$cluster_dir/events.csv');
COPY ev_plain ($cols) FROM '$cluster_dir/events.csv' CSV;
SELECT ingest.fold_rollups();
VACUUM ANALYZE ev_managed, ev_plain;
SQL

# seconds one statement takes on a table
timed() {
    local t0
    settle >/dev/null
    t0=$(now)
    q -c "$(printf "$1" "$2")" >/dev/null
    echo "$(now) - $t0" | bc
}
fold() {
    local t0
    t0=$(now)
    q -c "SELECT ingest.fold_rollups('ev_managed')" >/dev/null
    echo "$(now) - $t0" | bc
}
rows=""
for stmt in "UPDATE %s SET value = value + 1" \
            "UPDATE %s SET transaction_id = transaction_id || '-2'" \
            "UPDATE %s SET \"timestamp\" = \"timestamp\" + interval '1 day'" \
            "DELETE FROM %s"; do
    tp=$(timed "$stmt" ev_plain)
    tm=$(timed "$stmt" ev_managed)
    tf=$(fold)
    rows+="| \`$(printf "$stmt" t)\` | $(printf '%.2f' "$tp") | $(printf '%.2f' "$tm") | $(awk -v a="$tm" -v b="$tp" 'BEGIN { printf "%.2f", a / b }') | $(printf '%.2f' "$tf") |"$'\n'
done
exact=$(q -c "SELECT NOT EXISTS (SELECT FROM ingest.rollup_verify('ev_managed', '-infinity', 'infinity'))
                AND (SELECT count(*) FROM ingest_side.ev_managed_keys) = (SELECT count(*) FROM ev_managed)")

# Part 2: writers while a rollup is created and built
csv "$ROLLUP_ROWS" rollup
q <<SQL
SELECT ingest.create_event_table('ev_rollup', premake => 2);
SELECT loaded FROM ingest.load_file('ev_rollup', '$cluster_dir/rollup.csv');
SELECT ingest.fold_rollups();
VACUUM ANALYZE ev_rollup;
-- one batch of 1,000 new events
CREATE FUNCTION bench_batch(b int) RETURNS bigint LANGUAGE sql AS \$\$
    SELECT loaded FROM ingest.load('ev_rollup', (SELECT string_agg(format(
        '00000000-0000-0000-0000-000000000001,w-%s-%s,c1,api,%s,{},1,', b, n, now()), E'\n')
        FROM generate_series(1, 1000) n)) \$\$;
SQL
settle >/dev/null
log=$cluster_dir/batches.log
stop=$cluster_dir/stop
# one batch per call, each its own transaction: start and end of each
(
    for ((b = 0; b < 100000; b++)); do
        [ -e "$stop" ] && break
        s=$(now)
        q -c "SELECT bench_batch($b)" >/dev/null
        echo "$s $(now)" >> "$log"
    done
) &
writer=$!
sleep 10
t_create0=$(now)
q -c "SELECT ingest.create_rollup('ev_rollup', 'by_model', ARRAY['model'])" >/dev/null
t_create1=$(now)
q -c "SELECT ingest.fold_rollups('ev_rollup')" >/dev/null
t_build1=$(now)
built=$(q -c "SELECT building_xid IS NULL FROM ingest.rollup_config WHERE name = 'by_model'")
sleep 10
touch "$stop"
wait "$writer"
rollup_exact=$(q -c "SELECT NOT EXISTS (SELECT FROM ingest.rollup_verify('ev_rollup', '-infinity', 'infinity', 'by_model'))")
longest() { awk -v lo="$1" -v hi="$2" '$2 >= lo && $1 <= hi { d = $2 - $1; if (d > m) m = d } END { printf "%.3f", m }' "$log"; }
before=$(longest 0 "$t_create0")
during=$(longest "$t_create0" "$t_build1")
after=$(longest "$t_build1" 9999999999)
batches=$(wc -l < "$log")

out=$(cat <<EOT
PostgreSQL $(q -c "SHOW server_version"), $(nproc) cores; $ROWS events of one day in each table, 50 organizations.

| statement (every row) | unmanaged s | managed s | ratio | fold after s |
|---|---|---|---|---|
$rows
Ledger and rollups exact after all of them: $exact.

create_rollup on $ROLLUP_ROWS events while a loader commits 1,000-row batches ($batches batches):
create_rollup took $(echo "$t_create1 - $t_create0" | bc | xargs printf '%.3f') s, the fold that built it $(echo "$t_build1 - $t_create1" | bc | xargs printf '%.2f') s (built: $built, exact: $rollup_exact);
longest loader batch before: $before s, during create_rollup and the build: $during s, after: $after s.
EOT
)
echo "$out"
mkdir -p "$top/test/bench/out"
echo "$out" > "$top/test/bench/out/changes_bench.md"
