# Sourced by the benchmarks: build, install, and helpers.

# BENCH_SKIP_INSTALL=1: root installed this build already and the benchmark
# runs as postgres (in a Debian root filesystem, say), who cannot write the
# installed files; env.sh's `make install` then only checks that the
# installed module and script are byte for byte this build's.
if [ -n "${BENCH_SKIP_INSTALL:-}" ]; then
    make() {
        if [ "${1:-}" = -s ] && [ "${2:-}" = install ]; then
            local v
            v=$(sed -n "s/^default_version = '\(.*\)'/\1/p" ingest.control)
            cmp -s ingest.so "$(pg_config --pkglibdir)/ingest.so" &&
                cmp -s "sql/ingest--$v.sql" "$(pg_config --sharedir)/extension/ingest--$v.sql" ||
                { echo "BENCH_SKIP_INSTALL: the installed ingest is not this build" >&2; return 1; }
            return 0
        fi
        command make "$@"
    }
fi
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"

# psql against the throwaway cluster, quiet and unaligned
q() { as_pg psql -X -q -t -A -d postgres -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
# Arithmetic on those times: bc where installed, else awk (the version
# chroots have no bc); awk's doubles keep microseconds of an epoch.
if ! command -v bc >/dev/null; then
    bc() { local e; e=$(cat); awk "BEGIN { printf \"%.6f\\n\", $e }"; }
fi
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%d", n / t }'; }
# Before each timed method: no autovacuum still busy with an earlier
# method's tables, no dirty pages of it left to write.
settle() {
    local i
    for ((i = 0; i < 300; i++)); do
        [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" = 0 ] && break
        sleep 1
    done
    q -c "CHECKPOINT"
}

cols="organization_id, transaction_id, external_customer_id, code, \"timestamp\", properties, value, decimal_value"

# The billing-shaped data set (load_bench.sh DATA=billing, concurrency_bench.sh):
# billing_rows(first, last, total, seed, prefix) is rows first..last of a
# stream of `total` events over two days from today 00:00 UTC, a pure
# function of its arguments (hashint8extended and md5, no random()):
#   - 10,000 customers, Zipf-like (s = 1: customer r about 1/r as active),
#     each in one of 50 organizations; 20 codes;
#   - properties about 240 bytes of jsonb (10 keys);
#   - every 20th row (5%) repeats an earlier row's key: 4.5% of all rows are
#     exact repeats (up to ~1,000 rows back, or up to ~200,000 rows back,
#     across batches), 0.5% are retries re-stamped with the time they
#     arrive (same key and payload, new timestamp);
#   - 5% of the events are late: stamped up to 2 days before their place
#     in the stream (so the tables need partitions from today - 2).
# The transaction_id is prefix || hex(k) || '_' || 12 hex digits, so two
# prefixes give disjoint key sets.
define_billing_rows() {
    q <<'SQL'
CREATE FUNCTION billing_rows(first bigint, last bigint, total bigint,
                             seed bigint DEFAULT 42, prefix text DEFAULT 'tx_')
RETURNS TABLE(organization_id uuid, transaction_id text, external_customer_id text,
              code text, ts timestamptz, properties jsonb, value float8, decimal_value numeric)
LANGUAGE sql STABLE AS $$
    SELECT ('00000000-0000-4000-8000-' || lpad(org::text, 12, '0'))::uuid,
           prefix || to_hex(k) || '_' || substr(m5, 1, 12),
           'cus_' || lpad(cust::text, 5, '0'),
           (ARRAY['api_calls', 'input_tokens', 'output_tokens', 'cached_tokens',
                  'storage_gb_hours', 'egress_gb', 'compute_seconds', 'gpu_seconds',
                  'seats', 'requests', 'images', 'audio_seconds', 'embeddings',
                  'fine_tune_tokens', 'search_queries', 'db_reads', 'db_writes',
                  'emails', 'sms', 'webhooks'])[1 + (h2 >> 8) % 20],
           date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
             + (CASE WHEN n % 200 = 100 AND k <> n THEN n ELSE k END * 172800.0 / total)
               * interval '1 second'
             - CASE WHEN h3 % 20 = 0 THEN (1 + (h3 >> 8) % 172800) * interval '1 second'
                    ELSE interval '0' END,
           jsonb_build_object(
               'model', (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet', 'llama-3-70b',
                               'mistral-large', 'embed-v3', 'whisper-1'])[1 + (h2 >> 16) % 7],
               'region', (ARRAY['us-east-1', 'us-west-2', 'eu-west-1', 'eu-central-1',
                                'ap-southeast-1'])[1 + (h2 >> 24) % 5],
               'endpoint', (ARRAY['/v1/chat/completions', '/v1/embeddings', '/v1/audio/transcriptions',
                                  '/v1/images/generations'])[1 + (h2 >> 32) % 4],
               'request_id', m5::uuid,
               'sdk', 'python/1.' || (h3 >> 20) % 60 || '.' || (h3 >> 28) % 10,
               'input_tokens', (h1 >> 12) % 8000,
               'output_tokens', (h1 >> 28) % 2000,
               'latency_ms', (h2 >> 40) % 3000,
               'cache_hit', (h3 >> 36) % 3 = 0),
           ((h1 >> 12) % 10000)::float8,
           ((h2 >> 12) % 100000) / 1000.0
      FROM generate_series(first, last) n,
           LATERAL (SELECT hashint8extended(n, seed + 3) & 2147483647 AS hx) d0,
           -- k: the row whose event this one is; k % 20 <> 0 always
           LATERAL (SELECT CASE WHEN n % 20 <> 0 THEN n
                                ELSE n - 1 - (hx >> 16) % 19 - CASE
                                    WHEN n % 200 = 100 THEN 20 * (hx % 250)           -- retry
                                    WHEN n % 40 = 0 THEN 20 * (hx % 50)               -- near repeat
                                    ELSE 20 * (hx % 10000) END                        -- across batches
                           END AS k0) d1,
           LATERAL (SELECT CASE WHEN k0 < 1 THEN n - 1 - (hx >> 16) % 19 ELSE k0 END AS k) d2,
           LATERAL (SELECT hashint8extended(k, seed) & 9223372036854775807 AS h1,
                           hashint8extended(k, seed + 1) & 9223372036854775807 AS h2,
                           hashint8extended(k, seed + 2) & 9223372036854775807 AS h3,
                           md5(seed || '/' || k) AS m5) h,
           LATERAL (SELECT floor(exp(((h1 & 4294967295)::float8 / 4294967296.0) * ln(10001)))::int - 1 AS cust) c,
           LATERAL (SELECT (hashint8extended(cust, seed + 7) & 2147483647) % 50 AS org) o
$$;
SQL
}

# make_table NAME KIND: an event table with partitions from today - 2 (UTC)
# to today + 3, set up for one method:
#   ingest  managed by ingest (what create_event_table gives: ledger, rollup
#           feed, its indexes)
#   copy    unmanaged; BRIN (timestamp), B-trees (organization_id, code,
#           timestamp) and (external_customer_id, timestamp); no dedup
#   bare    unmanaged, no index at all
#   stage   unmanaged; BRIN (timestamp) and UNIQUE (organization_id,
#           transaction_id, timestamp), the arbiter of ON CONFLICT
make_table() {
    q >/dev/null <<SQL
SELECT ingest.create_event_table('$1', premake => 3);
SELECT count(*) FROM ingest.create_partitions('$1', (now() AT TIME ZONE 'UTC')::date - 2,
                                              (now() AT TIME ZONE 'UTC')::date - 1);
SQL
    [ "$2" = ingest ] && return
    q >/dev/null <<SQL
SELECT ingest.unmanage_table('$1');
DO \$\$
DECLARE i regclass;
BEGIN
    FOR i IN SELECT x.indexrelid::regclass FROM pg_index x JOIN pg_inherits h ON h.inhrelid = x.indrelid
              WHERE h.inhparent = '$1'::regclass LOOP
        EXECUTE format('DROP INDEX %s', i);
    END LOOP;
    FOR i IN SELECT x.indexrelid::regclass FROM pg_index x WHERE x.indrelid = '$1'::regclass LOOP
        EXECUTE format('DROP INDEX %s', i);
    END LOOP;
END \$\$;
SQL
    case $2 in
        copy) q -c "CREATE INDEX ON $1 USING brin (\"timestamp\")" \
                -c "CREATE INDEX ON $1 (organization_id, code, \"timestamp\")" \
                -c "CREATE INDEX ON $1 (external_customer_id, \"timestamp\")" ;;
        stage) q -c "CREATE INDEX ON $1 USING brin (\"timestamp\")" \
                 -c "CREATE UNIQUE INDEX ON $1 (organization_id, transaction_id, \"timestamp\")" ;;
        bare) ;;
    esac
}

# index_summary TABLE: the distinct index definitions on its partitions,
# each with on how many of them
index_summary() {
    q -c "SELECT coalesce(string_agg(d || ' on ' || n || '/' || (SELECT count(*) FROM pg_inherits WHERE inhparent = '$1'::regclass), '; ' ORDER BY d), 'none') FROM (
            SELECT regexp_replace(pg_get_indexdef(x.indexrelid), '^CREATE (UNIQUE )?INDEX .* USING ', '\\1') AS d, count(*) AS n
              FROM pg_inherits h JOIN pg_index x ON x.indrelid = h.inhrelid
             WHERE h.inhparent = '$1'::regclass GROUP BY 1) s"
}
