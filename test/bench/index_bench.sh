#!/bin/bash
# Index phases benchmark: ingest.load throughput into a table with the
# default phases (BRIN always, two B-trees built when a day closes) against
# the same table with all three indexes always present, on the same data, in
# one run, as both grow to GROWTH events; then the latency of a
# one-customer-one-day query on a closed partition against the hot one.
#
#   test/bench/index_bench.sh                          # 20M events each
#   GROWTH=2000000 WINDOW=1000000 test/bench/index_bench.sh   # quicker
#
# Prints a markdown report; writes it to test/bench/out/index_bench.md too.
source "$(dirname "$0")/lib.sh"

GROWTH=${GROWTH:-20000000}
CHUNK=${CHUNK:-100000}
WINDOW=${WINDOW:-2000000}
QUERIES=${QUERIES:-20}

throwaway_cluster 54393 "ingest.enabled = off" "ingest.maintenance_interval = 1" \
    "ingest.close_delay = 7d" "shared_buffers = 2GB" "max_wal_size = 16GB" \
    "checkpoint_timeout = 30min" "synchronous_commit = off"
dir=$cluster_dir

q <<'SQL'
CREATE EXTENSION ingest;
-- the default phases: BRIN (timestamp) always, B-trees when a day closes
SELECT ingest.create_event_table('ev_phase', premake => 2);
-- the same indexes, all present from the start
SELECT ingest.create_event_table('ev_all', premake => 2);
SELECT ingest.drop_index('ev_all', name) FROM ingest.index_config WHERE event_table = 'ev_all'::regclass
   AND phase = 'closed';
SELECT ingest.add_index('ev_all', ARRAY['organization_id', 'code', 'timestamp'], phase => 'always', name => 'org_code_ts_always');
SELECT ingest.add_index('ev_all', ARRAY['external_customer_id', 'timestamp'], phase => 'always', name => 'customer_ts_always');
-- yesterday, so that a day can close after the load
SELECT ingest_internal.create_partition(t, (now() AT TIME ZONE 'UTC')::date - 1)
  FROM unnest(ARRAY['ev_phase', 'ev_all']::regclass[]) t;
SQL
# The worker builds ev_all's always-phase B-trees on its (empty) partitions;
# no day closes yet (close_delay is a week).
worker() { q -c "ALTER SYSTEM SET ingest.enabled = $1" -c "SELECT pg_reload_conf()" >/dev/null; }
worker on
for ((i = 0; i < 600; i++)); do
    [ "$(q -c "SELECT count(*) FROM ingest.indexes WHERE event_table = 'ev_all'::regclass AND status <> 'present'")" = "0" ] && break
    sleep 1
done
worker off

echo "== generating $GROWTH events over yesterday and today"
nchunks=$(( (GROWTH + CHUNK - 1) / CHUNK ))
for ((c = 0; c < nchunks; c++)); do
    q -c "COPY (SELECT ('00000000-0000-4000-8000-' || lpad((n % 500)::text, 12, '0'))::uuid,
                       'tx-' || n, 'customer-' || (n % 5000),
                       (ARRAY['api_call', 'tokens', 'storage_gb', 'seats'])[1 + n % 4],
                       date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 day'
                         + ((n::bigint * 7919) % 172800) * interval '1 second',
                       '{}', (n % 100)::float8, NULL
                  FROM generate_series($((c * CHUNK + 1)), $(((c + 1) * CHUNK))) n)
          TO '$(printf '%s/chunk%05d.csv' "$dir" "$c")' CSV"
done

per_window=$(( WINDOW / CHUNK ))
declare -A curve
for t in ev_phase ev_all; do
    echo "== loading $t"
    wstart=$(now)
    for ((c = 0; c < nchunks; c++)); do
        q -c "SELECT * FROM ingest.load('$t', pg_read_file('$(printf '%s/chunk%05d.csv' "$dir" "$c")'))" >/dev/null
        if (( (c + 1) % per_window == 0 )); then
            t1=$(now)
            curve[$t,$(( (c + 1) / per_window ))]=$(rate "$WINDOW" "$(echo "$t1 - $wstart" | bc)")
            wstart=$t1
        fi
    done
done

echo "== closing yesterday's partitions (worker on, close_delay 0)"
q -c "ALTER SYSTEM SET ingest.close_delay = 0" >/dev/null
t0=$(now)
worker on
for ((i = 0; i < 3600; i++)); do
    closed=$(q -c "SELECT count(*) FROM ingest_internal.partition_closed pc
                    JOIN ingest.partitions p ON p.partition = pc.partition_oid::regclass
                   WHERE p.event_table = 'ev_phase'::regclass")
    [ "$closed" = "3" ] && break
    sleep 1
done
t_close=$(awk -v t="$(echo "$(now) - $t0" | bc)" 'BEGIN { printf "%d", t }')
worker off

# Median of QUERIES one-customer-one-day queries, in ms.
latency() {
    local day=$1
    q <<SQL
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric(10,2) FROM (
  SELECT (SELECT (regexp_match(l, 'Execution Time: ([0-9.]+)'))[1]::float8
            FROM (SELECT ingest_internal.explain_ms(format(
              'SELECT count(*), sum(value) FROM ev_phase WHERE external_customer_id = %L
                  AND "timestamp" >= %L AND "timestamp" < %L', 'customer-' || (g * 37),
              (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') + $day * interval '1 day',
              (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') + ($day + 1) * interval '1 day')) AS l) x) AS ms
    FROM generate_series(1, $QUERIES) g) s;
SQL
}
q <<'SQL'
CREATE FUNCTION ingest_internal.explain_ms(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE l text; r text := '';
BEGIN
    FOR l IN EXECUTE 'EXPLAIN (ANALYZE, TIMING OFF) ' || query LOOP r := r || l || E'\n'; END LOOP;
    RETURN r;
END $$;
SQL
lat_closed=$(latency -1)
lat_hot=$(latency 0)
plan_closed=$(q -c "EXPLAIN (COSTS OFF) SELECT count(*), sum(value) FROM ev_phase WHERE external_customer_id = 'customer-42'
    AND \"timestamp\" >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 day'
    AND \"timestamp\" < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
plan_hot=$(q -c "EXPLAIN (COSTS OFF) SELECT count(*), sum(value) FROM ev_phase WHERE external_customer_id = 'customer-42'
    AND \"timestamp\" >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    AND \"timestamp\" < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day'")

table=""
for ((w = 1; w <= nchunks / per_window; w++)); do
    table+="| $(( (w - 1) * WINDOW / 1000 ))k-$(( w * WINDOW / 1000 ))k | ${curve[ev_phase,$w]} | ${curve[ev_all,$w]} | $(awk -v a="${curve[ev_phase,$w]}" -v b="${curve[ev_all,$w]}" 'BEGIN { printf "%.2f", a / b }') |"$'\n'
done
out=$(cat <<EOT
$GROWTH events per table over two days (yesterday and today), loaded with ingest.load in chunks of $CHUNK, PostgreSQL $(q -c "SHOW server_version"), $(nproc) cores.

| window | default phases, rows/s | all indexes always, rows/s | ratio |
|---|---|---|---|
$table
Closing yesterday's partition of ev_phase (two B-tree builds, BRIN summarize, ANALYZE, VACUUM FREEZE) took about ${t_close} s.

One customer, one day (median of $QUERIES queries, ms): closed partition $lat_closed, hot partition $lat_hot.

Closed partition:
\`\`\`
$plan_closed
\`\`\`
Hot partition:
\`\`\`
$plan_hot
\`\`\`
EOT
)
echo "$out"
mkdir -p "$top/test/bench/out"
echo "$out" > "$top/test/bench/out/index_bench.md"
