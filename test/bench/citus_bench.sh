#!/bin/bash
# Citus throughput: COPY through the coordinator into a table distributed
# with ingest.distribute_table(), and ingest.load_file of the same files
# into another, with 1 and then 2 worker nodes, against
# plain COPY into a distributed table without ingest, on the same data
# (about 5% duplicates: repeats within and across chunks).  Every node runs
# on this one machine, so this measures what ingest adds on Citus and how
# the work spreads, not the throughput of separate machines.
#
#   test/bench/citus_bench.sh                  # 1M rows in chunks of 50,000
#   ROWS=200000 CHUNK=20000 test/bench/citus_bench.sh
#
# Needs Citus installed (test/citus.sh installs it). Prints a markdown
# table; writes it to test/bench/out/citus_bench.md too.
source "$(dirname "$0")/lib.sh"
# a failed COPY inside $(load ...) stops the benchmark
shopt -s inherit_errexit

ROWS=${ROWS:-1000000}
CHUNK=${CHUNK:-50000}
SHARDS=${SHARDS:-8}
[ -f "$(pg_config --pkglibdir)/citus.so" ] \
    || { echo "Citus is not installed: run test/citus.sh (make test) first" >&2; exit 1; }

out=$(dirname "$0")/out
mkdir -p "$out"
base=$(mktemp -d /tmp/ingest-citus-bench.XXXXXX)
chown postgres: "$base"
nodes=()
cleanup() {
    local d
    for d in "${nodes[@]}"; do
        as_pg pg_ctl -D "$d" -m immediate stop >/dev/null 2>&1 || true
    done
    rm -rf "$base"
}
trap cleanup EXIT

# start_node NAME PORT: a node with Citus and ingest, listening on localhost
start_node() {
    local d=$base/$1
    as_pg initdb -D "$d" -A trust -U postgres >/dev/null
    as_pg tee -a "$d/postgresql.conf" >/dev/null <<EOF
shared_preload_libraries = 'citus,ingest'
port = $2
listen_addresses = 'localhost'
unix_socket_directories = '$base'
max_worker_processes = 32
shared_buffers = 1GB
max_wal_size = 8GB
synchronous_commit = off
citus.node_conninfo = 'sslmode=disable'
EOF
    as_pg pg_ctl -D "$d" -l "$base/$1.log" -w start >/dev/null
    nodes+=("$d")
    as_pg psql -X -q -h "$base" -p "$2" -d postgres -c 'CREATE EXTENSION citus'
}
stop_nodes() {
    local d
    for d in "${nodes[@]}"; do
        as_pg pg_ctl -D "$d" -m fast stop >/dev/null
        rm -rf "$d"
    done
    nodes=()
}
cq() { as_pg psql -X -q -t -A -h "$base" -p 54500 -d postgres -v ON_ERROR_STOP=1 "$@"; }

# The data: ROWS rows over 200 organizations and today's UTC day, every
# 20th row a repeat of an earlier key (within or across chunks).
data=$base/rows.csv
start_node gen 54499
as_pg psql -X -q -h "$base" -p 54499 -d postgres -v ON_ERROR_STOP=1 -c "
COPY (SELECT ('00000000-0000-4000-8000-' || lpad((k % 200)::text, 12, '0'))::uuid,
             'tx_' || k, 'cus_' || (k % 5000), 'api_calls',
             date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
               + (i * 80000.0 / $ROWS) * interval '1 second',
             '{\"model\": \"gpt-4o\", \"region\": \"eu\"}', 1, NULL
        FROM (SELECT i, CASE WHEN i % 20 = 0 THEN (i * 7919) % greatest(i - 1, 1) ELSE i END AS k
                FROM generate_series(1::bigint, $ROWS) i) s
       ORDER BY i) TO '$data' (FORMAT csv)"
stop_nodes
split -l "$CHUNK" -a 4 "$data" "$base/chunk."
chmod a+r "$base"/chunk.*

# load TABLE: seconds to COPY the data into TABLE, chunk by chunk, each
# chunk its own transaction
load() {
    local t0 t1 f
    t0=$(now)
    for f in "$base"/chunk.*; do
        cq -c "COPY $1 ($cols) FROM STDIN (FORMAT csv)" < "$f"
    done
    t1=$(now)
    echo "$t1 - $t0" | bc
}

# load_file TABLE: the same with ingest.load_file, chunk by chunk
load_file() {
    local t0 t1 f
    t0=$(now)
    for f in "$base"/chunk.*; do
        cq -c "SELECT FROM ingest.load_file('$1', '$f')" >/dev/null
    done
    t1=$(now)
    echo "$t1 - $t0" | bc
}

results=()
for workers in 1 2; do
    start_node coordinator 54500
    for ((w = 1; w <= workers; w++)); do
        start_node "worker$w" $((54500 + w))
    done
    cq -c "SELECT citus_set_coordinator_host('localhost', 54500)" >/dev/null
    for ((w = 1; w <= workers; w++)); do
        cq -c "SELECT citus_add_node('localhost', $((54500 + w)))" >/dev/null
    done
    cq >/dev/null <<SQL
CREATE EXTENSION ingest;
SELECT ingest.create_event_table('ev_ingest', premake => 1);
SELECT ingest.distribute_table('ev_ingest', shard_count => $SHARDS);
SELECT ingest.create_event_table('ev_load', premake => 1);
SELECT ingest.distribute_table('ev_load', shard_count => $SHARDS);
CREATE TABLE ev_plain (LIKE ev_ingest INCLUDING DEFAULTS INCLUDING IDENTITY) PARTITION BY RANGE ("timestamp");
CREATE TABLE ev_plain_today PARTITION OF ev_plain
  FOR VALUES FROM (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
  TO (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day');
SELECT create_distributed_table('ev_plain', 'organization_id', shard_count => $SHARDS, colocate_with => 'none');
SQL
    echo "== $workers worker(s): plain Citus COPY"
    t_plain=$(load ev_plain)
    echo "== $workers worker(s): COPY into the ingest table"
    t_ingest=$(load ev_ingest)
    echo "== $workers worker(s): ingest.load_file into another ingest table"
    t_load=$(load_file ev_load)
    stored=$(cq -c "SELECT count(*) FROM ev_ingest")
    stored_load=$(cq -c "SELECT count(*) FROM ev_load")
    distinct=$(cq -c "SELECT count(DISTINCT (organization_id, transaction_id)) FROM ev_plain")
    results+=("| $workers | $(rate "$ROWS" "$t_ingest") | $(rate "$ROWS" "$t_load") | $(rate "$ROWS" "$t_plain") | $(awk -v a="$t_plain" -v b="$t_ingest" 'BEGIN { printf "%.2f", a / b }') | $(awk -v a="$t_plain" -v b="$t_load" 'BEGIN { printf "%.2f", a / b }') | $stored, $stored_load / $distinct |")
    stop_nodes
done

{
    echo "## Citus: COPY through the coordinator, 1 and 2 worker nodes"
    echo
    echo "\`ROWS=$ROWS CHUNK=$CHUNK SHARDS=$SHARDS test/bench/citus_bench.sh\`, $(date -u +%F), $(pg_config --version), $(nproc) cores; every node on this machine (synchronous_commit off, shared_buffers 1GB each); the table distributed by ingest.distribute_table() with $SHARDS shards, against a distributed table without ingest (no dedup) on the same data."
    echo
    echo "| worker nodes | ingest COPY rows/s | ingest.load_file rows/s | plain Citus COPY rows/s | ingest COPY vs plain | ingest.load_file vs plain | stored (COPY, load_file) / distinct keys |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${results[@]}"
} | tee "$out/citus_bench.md"
