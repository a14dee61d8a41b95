#!/bin/bash
# Rollup benchmark: ingest.load throughput with the hourly rollup fed versus
# not fed, on the same data in one run; fold throughput; and the latency of
# ingest.usage() for one organization over 30 days (total and per day)
# against the same aggregation over raw events and over the hourly rollup
# rows alone, on a table of EVENTS events, median of QUERIES organizations.
#
#   test/bench/rollup_bench.sh                          # 10M events
#   EVENTS=1000000 COMPARE=500000 test/bench/rollup_bench.sh   # quicker
#   DATA=billing test/bench/rollup_bench.sh   # the EVENTS events are
#       billing-shaped (lib.sh's billing_rows, its two days stretched over
#       the 30: 50 organizations, 10,000 Zipf customers, 20 codes, 5%
#       duplicates, late arrivals); the COMPARE loads keep the synthetic data
#   FOLD_EVERY=10: the big table is folded after every 10 chunks (1M events)
#       as it loads, as the worker folds a table in use
#
# Prints a markdown report; writes it to test/bench/out/rollup_bench_$DATA.md too.
source "$(dirname "$0")/lib.sh"

EVENTS=${EVENTS:-10000000}
COMPARE=${COMPARE:-2000000}
CHUNK=${CHUNK:-100000}
QUERIES=${QUERIES:-20}
FOLD_EVERY=${FOLD_EVERY:-10}
DATA=${DATA:-live}
SEED=${SEED:-42}
case $DATA in
    live) orgs=200 shape="events over 30 days, 200 organizations, 2,000 customers, 4 codes" ;;
    billing) orgs=50 shape="billing-shaped events (lib.sh) over 30 days, 50 organizations, 10,000 customers, 20 codes" ;;
    *) echo "DATA must be live or billing" >&2; exit 2 ;;
esac

throwaway_cluster 54394 "ingest.enabled = off" "shared_buffers = 2GB" "max_wal_size = 16GB" \
    "checkpoint_timeout = 30min" "synchronous_commit = off"
dir=$cluster_dir

q <<SQL
CREATE EXTENSION ingest;
SELECT ingest.create_event_table(t, premake => 1)
  FROM unnest(ARRAY['ev_on', 'ev_off', 'bf_on', 'bf_off']) t;
-- "off": no rollup configured, so the loader's feed writes nothing
DELETE FROM ingest.rollup_config WHERE event_table IN ('ev_off'::regclass, 'bf_off'::regclass);
-- 30 days of partitions
SELECT ingest_internal.create_partition(t, (now() AT TIME ZONE 'UTC')::date - d)
  FROM unnest(ARRAY['ev_on', 'ev_off', 'bf_on', 'bf_off']::regclass[]) t, generate_series(1, 29) d;
-- Event n of the 30 days: in time order as a live feed sends them, or
-- scattered over the 30 days as a backfill is.
CREATE FUNCTION bench_events(first bigint, last bigint, scattered boolean)
RETURNS TABLE(o uuid, tx text, cust text, code text, ts timestamptz, p jsonb, v float8, d numeric)
LANGUAGE sql AS \$\$
    SELECT ('00000000-0000-4000-8000-' || lpad((n % 200)::text, 12, '0'))::uuid,
           'tx-' || n, 'customer-' || (n % 2000),
           (ARRAY['api_call', 'tokens', 'storage_gb', 'seats'])[1 + n % 4],
           date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '29 days'
             + CASE WHEN scattered THEN (n * 7919) % (30 * 86400)
                    ELSE n * (30 * 86400.0 / $EVENTS) END * interval '1 second',
           '{}'::jsonb, (n % 100)::float8, NULL::numeric
      FROM generate_series(first, last) n
\$\$;
SQL
define_billing_rows

echo "== generating $EVENTS $DATA events over 30 days, and $COMPARE scattered ones"
nchunks=$(( (EVENTS + CHUNK - 1) / CHUNK ))
ncompare=$(( (COMPARE + CHUNK - 1) / CHUNK ))
for ((c = 0; c < nchunks; c++)); do
    if [ "$DATA" = billing ] && [ "$c" -ge "$ncompare" ]; then
        # billing_rows' two days from today, stretched to the 30 days
        # from today - 29; late arrivals before them land on the first
        q -c "COPY (SELECT organization_id, transaction_id, external_customer_id, code,
                           greatest(s.first, s.first + (b.ts - s.today) * 15),
                           properties, value, decimal_value
                      FROM billing_rows($((c * CHUNK + 1)), $(((c + 1) * CHUNK)), $EVENTS, $SEED) b,
                           LATERAL (SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS today) t,
                           LATERAL (SELECT t.today, t.today - interval '29 days' AS first) s)
              TO '$(printf '%s/chunk%05d.csv' "$dir" "$c")' CSV"
    else
        q -c "COPY (SELECT * FROM bench_events($((c * CHUNK + 1)), $(((c + 1) * CHUNK)), false))
              TO '$(printf '%s/chunk%05d.csv' "$dir" "$c")' CSV"
    fi
done
for ((c = 0; c < ncompare; c++)); do
    q -c "COPY (SELECT * FROM bench_events($((c * CHUNK + 1)), $(((c + 1) * CHUNK)), true))
          TO '$(printf '%s/scatter%05d.csv' "$dir" "$c")' CSV"
done

load() {
    local t=$1 from=$2 to=$3 files=${4:-chunk} t0
    settle >/dev/null
    t0=$(now)
    for ((c = from; c < to; c++)); do
        q -c "SELECT * FROM ingest.load('$t', pg_read_file('$(printf '%s/%s%05d.csv' "$dir" "$files" "$c")'))" >/dev/null
    done
    echo "$(now) - $t0" | bc
}
echo "== backfill order: rollups off, then on, $COMPARE events"
t_bf_off=$(load bf_off 0 "$ncompare" scatter)
t_bf_on=$(load bf_on 0 "$ncompare" scatter)
bf_deltas=$(q -c "SELECT count(*) FROM ingest_side.bf_on_deltas")
echo "== live order: rollups off, then on, $COMPARE events"
t_off=$(load ev_off 0 "$ncompare")
t_on=$(load ev_on 0 "$ncompare")
live_deltas=$(q -c "SELECT count(*) FROM ingest_side.ev_on_deltas")
deltas=$(q -c "SELECT (SELECT count(*) FROM ingest_side.ev_on_deltas) + (SELECT count(*) FROM ingest_side.bf_on_deltas)")
t0=$(now)
q -c "SELECT ingest.fold_rollups()" >/dev/null
t_fold=$(echo "$(now) - $t0" | bc)

echo "== rollups on, up to $EVENTS events"
# the worker folds as events arrive: here every FOLD_EVERY chunks, so that
# the days' rows are rewritten by folds as they are in use
for ((c = ncompare; c < nchunks; c++)); do
    q -c "SELECT * FROM ingest.load('ev_on', pg_read_file('$(printf '%s/chunk%05d.csv' "$dir" "$c")'))" >/dev/null
    if (( (c + 1) % FOLD_EVERY == 0 )); then
        q -c "SELECT ingest.fold_rollups('ev_on')" >/dev/null
    fi
done
# the side tables as autovacuum keeps them: the fold leaves the deltas
# table full of dead rows, which readers' index scans would step over
q -c "SELECT ingest.fold_rollups('ev_on')" -c "ANALYZE ev_on" \
  -c "VACUUM ANALYZE ingest_side.ev_on_rollup, ingest_side.ev_on_daily, ingest_side.ev_on_deltas" >/dev/null
exact=$(q -c "SELECT count(*) = 0 FROM ingest.rollup_verify('ev_on', '-infinity', 'infinity')")
bf_exact=$(q -c "SELECT count(*) = 0 FROM ingest.rollup_verify('bf_on', '-infinity', 'infinity')")

q <<'SQL'
CREATE FUNCTION ingest_internal.bench_ms(query text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE l text; ms float8;
BEGIN
    FOR l IN EXECUTE 'EXPLAIN (ANALYZE, TIMING OFF) ' || query LOOP
        IF l LIKE 'Execution Time:%' THEN ms := substring(l from '([0-9.]+)')::float8; END IF;
    END LOOP;
    RETURN ms;
END $$;
SQL
median() {
    q <<SQL
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ingest_internal.bench_ms(format(\$q\$$1\$q\$,
       ('00000000-0000-4000-8000-' || lpad((g * 7 % $orgs)::text, 12, '0'))::uuid)))::numeric(10, 2)
  FROM generate_series(1, $QUERIES) g;
SQL
}
range="date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '29 days', date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day'"
raw_where="organization_id = %L
             AND \"timestamp\" >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '29 days'
             AND \"timestamp\" < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day'"
raw_measures="count(*), sum(value::numeric), sum(decimal_value), min(value), max(value),
              (array_agg(value ORDER BY \"timestamp\" DESC, transaction_id COLLATE \"C\" DESC))[1], max(\"timestamp\")"
lat_usage=$(median "SELECT * FROM ingest.usage('ev_on', %L, $range)")
lat_raw=$(median "SELECT code, external_customer_id, $raw_measures FROM ev_on WHERE $raw_where GROUP BY 1, 2")
lat_usage_day=$(median "SELECT * FROM ingest.usage('ev_on', %L, $range, granularity => 'day')")
lat_raw_day=$(median "SELECT code, external_customer_id, date_trunc('day', \"timestamp\", 'UTC'), $raw_measures
                        FROM ev_on WHERE $raw_where GROUP BY 1, 2, 3")
lat_usage_hour=$(median "SELECT * FROM ingest.usage('ev_on', %L, $range, granularity => 'hour')")
lat_raw_hour=$(median "SELECT code, external_customer_id, date_trunc('hour', \"timestamp\"), $raw_measures
                        FROM ev_on WHERE $raw_where GROUP BY 1, 2, 3")
# what ingest.usage read before the daily rollup: hourly rows and deltas
lat_hourly=$(median "SELECT s.code, s.external_customer_id, $(q -c "SELECT ingest_internal.rollup_merge_sql()" | tr '\n' ' ')
                       FROM ingest_internal.rollup_rows('ev_on', 'default', %L, $range) s GROUP BY 1, 2")
# identical answers: ingest.usage() against the raw aggregation, one
# organization, in total and per UTC day
same_as_raw() {
    local gran=$1 bucket=$2
    q <<SQL
WITH u AS (SELECT code, external_customer_id, bucket, events, value_sum, decimal_sum, value_min, value_max,
                  latest_value, latest_at
             FROM ingest.usage('ev_on', '00000000-0000-4000-8000-000000000007', $range, granularity => '$gran')),
     r AS (SELECT code, external_customer_id, $bucket, $raw_measures
             FROM ev_on
            WHERE organization_id = '00000000-0000-4000-8000-000000000007'
              AND "timestamp" >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '29 days'
              AND "timestamp" < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day'
            GROUP BY 1, 2, 3)
SELECT (SELECT count(*) FROM u) > 0
   AND NOT EXISTS (SELECT * FROM u EXCEPT ALL SELECT * FROM r)
   AND NOT EXISTS (SELECT * FROM r EXCEPT ALL SELECT * FROM u);
SQL
}
same=$(same_as_raw total "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '29 days'")
same_day=$(same_as_raw day "date_trunc('day', \"timestamp\", 'UTC')")
events=$(q -c "SELECT count(*) FROM ev_on")
rollup_rows=$(q -c "SELECT count(*) FROM ingest_side.ev_on_rollup")
daily_rows=$(q -c "SELECT count(*) FROM ingest_side.ev_on_daily")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0fx", a / b }'; }

rows=$(( ncompare * CHUNK ))
out=$(cat <<EOT
\`DATA=$DATA EVENTS=$EVENTS COMPARE=$COMPARE QUERIES=$QUERIES test/bench/rollup_bench.sh\`: PostgreSQL $(q -c "SHOW server_version"), $(nproc) cores; $shape.

| $rows events | rollup not fed, rows/s | rollup fed, rows/s | cost of the rollup | delta rows written |
|---|---|---|---|---|
| live order (chunks of $CHUNK follow each other in time) | $(rate "$rows" "$t_off") | $(rate "$rows" "$t_on") | $(awk -v a="$t_on" -v b="$t_off" 'BEGIN { printf "%.1f%%", (a / b - 1) * 100 }') | $live_deltas |
| backfill (each chunk scattered over the 30 days) | $(rate "$rows" "$t_bf_off") | $(rate "$rows" "$t_bf_on") | $(awk -v a="$t_bf_on" -v b="$t_bf_off" 'BEGIN { printf "%.1f%%", (a / b - 1) * 100 }') | $bf_deltas |

rollup_verify empty for the backfilled table: $bf_exact.

Fold: $deltas delta rows folded in $(printf '%.2f' "$t_fold") s, $(rate "$deltas" "$t_fold") delta rows/s.

One organization over 30 days on $events events (folded every $FOLD_EVERY chunks as they loaded; $rollup_rows hourly and $daily_rows daily rollup rows; rollup_verify empty: $exact), median of $QUERIES organizations, in ms:

| granularity | ingest.usage() | raw events | ratio | hourly rows alone (rollup_rows) |
|---|---|---|---|---|
| total | $lat_usage | $lat_raw | $(ratio "$lat_raw" "$lat_usage") | $lat_hourly |
| day (UTC) | $lat_usage_day | $lat_raw_day | $(ratio "$lat_raw_day" "$lat_usage_day") | |
| hour | $lat_usage_hour | $lat_raw_hour | $(ratio "$lat_raw_hour" "$lat_usage_hour") | |

The raw aggregation and ingest.usage() gave the same rows for the organization checked: in total $same, per UTC day $same_day.
EOT
)
echo "$out"
mkdir -p "$top/test/bench/out"
echo "$out" > "$top/test/bench/out/rollup_bench_$DATA.md"
# the figures full_bench.sh checks against the targets
x() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", a / b }'; }
cat > "$top/test/bench/out/rollup_bench_$DATA.vars" <<EOT
usage_events=$events
usage_total_x=$(x "$lat_raw" "$lat_usage")
usage_day_x=$(x "$lat_raw_day" "$lat_usage_day")
usage_hour_x=$(x "$lat_raw_hour" "$lat_usage_hour")
usage_total_ms="$lat_usage against $lat_raw"
usage_day_ms="$lat_usage_day against $lat_raw_day"
usage_hour_ms="$lat_usage_hour against $lat_raw_hour"
usage_same="$same $same_day"
usage_verify_empty=$exact
EOT
