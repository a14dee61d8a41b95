#!/bin/bash
# Memory of ingest.load_file on a large file: the loading backend's peak
# private memory while it loads a generated CSV of SIZE_MB (default 2 GB),
# against COPY FROM STDIN through the hook for the same file, in one
# throwaway cluster.  The backend's memory is sampled from
# /proc/<pid>/status every 0.2 s: RssAnon, its private memory (what palloc
# takes), and VmHWM, the peak resident size, which also counts the shared
# buffers it touched (and so grows to shared_buffers on a long load).
#
#   test/bench/load_file_memory.sh               # 2 GB
#   SIZE_MB=200 test/bench/load_file_memory.sh   # a quick run
#
# Run as root (it installs the build); prints a markdown table.
source "$(dirname "$0")/lib.sh"

SIZE_MB=${SIZE_MB:-2048}

throwaway_cluster 54393 "ingest.enabled = off" "shared_buffers = 256MB" \
    "max_wal_size = 8GB" "checkpoint_timeout = 30min" "synchronous_commit = off"
dir=$cluster_dir
file=$dir/events.csv
cols="organization_id, transaction_id, external_customer_id, code, \"timestamp\", properties, value, decimal_value"

q <<SQL
CREATE EXTENSION ingest;
SELECT ingest.create_event_table('ev_file', premake => 3);
SELECT ingest.create_event_table('ev_hook', premake => 3);
SQL

# About 160 bytes a row: enough rows for SIZE_MB, spread over two days.
rows=$(( SIZE_MB * 1024 * 1024 / 160 ))
echo "== generating $file ($rows rows, about $SIZE_MB MB)"
q <<SQL
COPY (SELECT ('00000000-0000-4000-8000-' || lpad((n % 500)::text, 12, '0'))::uuid,
             'tx-' || n, 'customer-' || (n % 5000),
             (ARRAY['api_call', 'tokens', 'storage_gb', 'seats'])[1 + n % 4],
             date_trunc('day', now()) + (n * 172800.0 / $rows) * interval '1 second',
             jsonb_build_object('model', 'm' || (n % 7), 'region', 'r' || (n % 3)),
             (n % 100)::float8, (n % 1000) / 100.0
        FROM generate_series(1, $rows) n) TO '$file' (FORMAT csv);
SQL
chmod 644 "$file"
bytes=$(stat -c %s "$file")
echo "   $bytes bytes"

kib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

# measure NAME TABLE SQL [STDIN]: run SQL in a session named NAME (input
# from the file STDIN), find its backend, sample its memory until it ends.
measure() {
    local name=$1 table=$2 sql=$3 input=${4:-/dev/null}
    settle
    local t0=$(now)
    as_pg psql -X -q -v ON_ERROR_STOP=1 -d "dbname=postgres application_name=$name" \
        -c "$sql" < "$input" > "$dir/$name.out" 2>&1 &
    local client=$!
    local pid=""
    for ((i = 0; i < 100; i++)); do
        pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$name'")
        [ -n "$pid" ] && break
        sleep 0.1
    done
    local anon=0 hwm=0 a h
    while kill -0 "$client" 2>/dev/null; do
        a=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        h=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        [ -n "$a" ] && (( a > anon )) && anon=$a
        [ -n "$h" ] && (( h > hwm )) && hwm=$h
        sleep 0.2
    done
    wait "$client" || { cat "$dir/$name.out"; exit 1; }
    local secs=$(awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
    local loaded=$(q -c "SELECT count(*) FROM $table")
    printf '| %s | %s | %.0f | %s | %s |\n' "$name" "$loaded" "$secs" \
        "$(kib "$anon")" "$(kib "$hwm")" >> "$dir/table.md"
    echo "   $name: $loaded rows in $secs s; peak RssAnon $(kib "$anon") MiB, VmHWM $(kib "$hwm") MiB"
}

echo "| method | rows | seconds | peak RssAnon (MiB) | VmHWM (MiB) |" > "$dir/table.md"
echo "|---|---|---|---|---|" >> "$dir/table.md"

echo "== ingest.load_file"
measure load_file ev_file "SELECT * FROM ingest.load_file('ev_file', '$file')"
echo "== COPY FROM STDIN through the hook"
measure copy_hook ev_hook "COPY ev_hook ($cols) FROM STDIN (FORMAT csv)" "$file"

echo
echo "File: $bytes bytes, $rows rows; PostgreSQL $(q -c 'SHOW server_version'); shared_buffers 256MB."
cat "$dir/table.md"
