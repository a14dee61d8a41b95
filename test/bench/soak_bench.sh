#!/bin/bash
# Soak: four loaders at once into one managed table for DURATION seconds,
# each call its own transaction, 10% of every batch's keys shared with the
# other loaders (each loader meets them in its own shuffled order):
#   csv     SELECT * FROM ingest.load(t, <csv batch>, 'csv')
#   jsonl   SELECT * FROM ingest.load(t, <jsonl batch>, 'jsonl')
#   copy    psql: COPY t FROM STDIN (FORMAT csv), through ingest's hook
#   insert  INSERT INTO t SELECT ... (ingest's row trigger), multi-row
# A failed call is counted by SQLSTATE and not retried.  At the end: the
# stored rows must be the distinct keys and the ledger must hold exactly
# the keys of the events.
#
#   test/bench/soak_bench.sh                       # 10 minutes, 5,000 rows a call
#   DURATION=60 BATCH=2000 test/bench/soak_bench.sh
#   SAME_ORDER=1 test/bench/soak_bench.sh          # every loader meets the
#                                   shared keys in the same order
#
# Prints markdown; writes it to test/bench/out/soak_bench.md too.
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-600}
BATCH=${BATCH:-5000}
SAME_ORDER=${SAME_ORDER:-0}
case $SAME_ORDER in 0) order="each loader's batch in its own order" ;;
                    1) order="every loader's batch in the same key order (SAME_ORDER=1)" ;;
                    *) echo "SAME_ORDER must be 0 or 1" >&2; exit 2 ;; esac

throwaway_cluster 54396 "ingest.enabled = on" "shared_buffers = 1GB" "max_wal_size = 8GB" \
    "deadlock_timeout = 100ms"
dir=$cluster_dir
chmod 755 "$dir"

q <<SQL
CREATE EXTENSION ingest;
SELECT ingest.create_event_table('soak', premake => 1);
-- batch b of loader l: 90% keys of its own, 10% shared with the other
-- loaders' batch b, in an order of the loader's own (SAME_ORDER=1: the
-- shared keys in the same order in every loader's batch)
CREATE FUNCTION soak_rows(l int, b bigint)
RETURNS TABLE(organization_id uuid, transaction_id text, external_customer_id text, code text,
              ts timestamptz, properties jsonb, value float8)
LANGUAGE sql AS \$\$
    SELECT ('00000000-0000-4000-8000-' || lpad((hashint8(k) & 15)::text, 12, '0'))::uuid,
           k_text, 'cus_' || (hashint8(k) & 1023), 'api_calls',
           date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
             + ((hashint8(k) & 65535) * 1.0) * interval '1 second',
           '{"model": "gpt-4o"}'::jsonb, 1::float8
      FROM (SELECT j,
                   CASE WHEN j % 10 = 0 THEN b * $BATCH + j ELSE (l * 1000000000000 + b * $BATCH + j) END AS k,
                   CASE WHEN j % 10 = 0 THEN 'sh_' || (b * $BATCH + j) ELSE 'l' || l || '_' || (b * $BATCH + j) END AS k_text
              FROM generate_series(1, $BATCH) j) s
     ORDER BY hashint8(k # CASE WHEN $SAME_ORDER = 1 THEN 0 ELSE l END)
\$\$;
SQL

end=$(( $(date +%s) + DURATION ))
cols="organization_id, transaction_id, external_customer_id, code, \"timestamp\", properties, value"

# loader NAME: calls until the end; one line per call: "ok" or the SQLSTATE
loader() {
    local name=$1 l sql f err rc b=0
    case $name in csv) l=1 ;; jsonl) l=2 ;; copy) l=3 ;; insert) l=4 ;; esac
    f=$dir/$name.csv
    # the batch number counts here: a nextval() in the call would give its
    # transaction an xid before ingest.load starts, and ingest.load retries
    # a deadlocked call only when it is its transaction's first write
    while [ "$(date +%s)" -lt "$end" ]; do
        b=$((b + 1))
        case $name in
            csv) sql="SELECT loaded FROM ingest.load('soak', (SELECT string_agg(concat_ws(',', r.organization_id, r.transaction_id, r.external_customer_id, r.code, r.ts, '\"' || replace(r.properties::text, '\"', '\"\"') || '\"', r.value), E'\\n') FROM soak_rows($l, $b) r), 'csv', false, ARRAY['organization_id', 'transaction_id', 'external_customer_id', 'code', 'timestamp', 'properties', 'value'])" ;;
            jsonl) sql="SELECT loaded FROM ingest.load('soak', (SELECT string_agg(json_build_object('organization_id', r.organization_id, 'transaction_id', r.transaction_id, 'external_customer_id', r.external_customer_id, 'code', r.code, 'timestamp', r.ts, 'properties', r.properties, 'value', r.value)::text, E'\\n') FROM soak_rows($l, $b) r), 'jsonl')" ;;
            insert) sql="INSERT INTO soak ($cols) SELECT * FROM soak_rows($l, $b)" ;;
            copy) q -c "COPY (SELECT * FROM soak_rows($l, $b)) TO STDOUT (FORMAT csv)" > "$f"
                  sql="" ;;
        esac
        rc=0
        if [ -n "$sql" ]; then
            err=$(q -v VERBOSITY=verbose -c "$sql" 2>&1 >/dev/null) || rc=$?
        else
            err=$(q -v VERBOSITY=verbose -c "COPY soak ($cols) FROM STDIN (FORMAT csv)" < "$f" 2>&1 >/dev/null) || rc=$?
        fi
        [ -n "$err" ] && printf '%s\n' "$err" >> "$dir/$name.errors"
        err=$(grep -o 'ERROR:  [0-9A-Z]\{5\}' <<<"$err" | head -1 | cut -c9-) || true
        # a failure without an SQLSTATE (a lost connection, say) is one too
        [ "$rc" -ne 0 ] && [ -z "$err" ] && err=other
        echo "${err:-ok}"
    done > "$dir/$name.log"
}

echo "== $DURATION s: csv, jsonl, COPY and INSERT loaders at once, $BATCH rows a call"
t0=$(now)
for name in csv jsonl copy insert; do
    loader "$name" &
done
wait
t1=$(now)
secs=$(echo "$t1 - $t0" | bc)

rows=()
for name in csv jsonl copy insert; do
    ok=$(grep -c '^ok$' "$dir/$name.log" || true)
    failed=$( (grep -v '^ok$' "$dir/$name.log" || true) | sort | uniq -c | awk '{ printf "%s%s x%d", sep, $2, $1; sep = ", " }')
    rows+=("| $name | $ok | ${failed:-none} | $(rate $((ok * BATCH)) "$secs") |")
done
stored=$(q -c "SELECT count(*) || ' / ' || count(DISTINCT (organization_id, transaction_id)) FROM soak")
ledger=$(q -c "SELECT count(*) FROM soak e FULL JOIN ingest_side.soak_keys k USING (organization_id, transaction_id)
               WHERE e.organization_id IS NULL OR k.organization_id IS NULL")

mkdir -p "$(dirname "$0")/out"
{
    echo "## Soak: four loaders at once"
    echo
    echo "\`SAME_ORDER=$SAME_ORDER DURATION=$DURATION BATCH=$BATCH test/bench/soak_bench.sh\`, $(date -u +%F), $(pg_config --version), $(nproc) cores; one managed table, each call its own transaction (synchronous_commit on), 10% of each batch's keys shared by all four loaders, $order; deadlock_timeout 100ms; failed calls not retried."
    echo
    echo "| loader | calls committed | calls failed (SQLSTATE x count) | rows offered/s in committed calls |"
    echo "|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Stored rows / distinct keys: $stored. Keys in the ledger without an event, or events without a key: $ledger."
} | tee "$(dirname "$0")/out/soak_bench.md"
# the figures full_bench.sh checks against the targets
{
    echo "soak_same_order=$SAME_ORDER"
    echo "soak_seconds=$DURATION"
    echo "soak_calls=$(cat "$dir"/{csv,jsonl,copy,insert}.log | grep -c '^ok$' || true)"
    echo "soak_deadlocks=$(cat "$dir"/{csv,jsonl,copy,insert}.log | grep -c '^40P01$' || true)"
    echo "soak_other_failures=$(cat "$dir"/{csv,jsonl,copy,insert}.log | grep -vc '^ok$\|^40P01$' || true)"
    echo "soak_stored_distinct=$( [ "${stored% / *}" = "${stored#* / }" ] && echo t || echo f)"
    echo "soak_stored=\"$stored\""
    echo "soak_ledger_mismatch=$ledger"
} > "$(dirname "$0")/out/soak_bench.vars"
# the first error of each kind, for the record
for name in csv jsonl copy insert; do
    [ -f "$dir/$name.errors" ] && { echo "-- $name:"; grep -A3 'ERROR:' "$dir/$name.errors" | head -8; }
done > "$(dirname "$0")/out/soak_bench_errors.txt" || true
