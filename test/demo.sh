#!/bin/bash
# make demo: install what is needed, build, start a throwaway cluster with
# ingest preloaded, and show a managed event table at work.
source "$(dirname "$0")/env.sh"

dir=$(mktemp -d /tmp/ingest-demo.XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
cleanup() { asdb pg_ctl -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

asdb initdb -D "$dir/data" -A trust -U postgres >/dev/null
asdb tee -a "$dir/data/postgresql.conf" >/dev/null <<EOC
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
port = 54390
listen_addresses = ''
unix_socket_directories = '$dir'
EOC
asdb pg_ctl -D "$dir/data" -l "$dir/log" -w start >/dev/null
echo "== throwaway cluster started in $dir (socket $dir, port 54390)"

run() { asdb psql -X -h "$dir" -p 54390 -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

run -e <<'SQL'
CREATE EXTENSION ingest;

-- A managed event table: one partition per UTC day, today plus 3 ahead,
-- raw events kept 30 days.
SELECT ingest.create_event_table('usage_events', retention => '30 days');
SELECT partition, day, lower_bound, upper_bound, state FROM ingest.partitions;

-- Some usage events.
INSERT INTO usage_events (organization_id, transaction_id, external_customer_id, code, "timestamp", properties, value)
SELECT '6f1c1f4e-0000-4000-8000-000000000001', 'tx-' || g, 'customer-' || (g % 7), 'api_call',
       now() - (g % 20) * interval '1 minute', jsonb_build_object('model', 'm' || (g % 3)), 1
  FROM generate_series(1, 1000) g;
SELECT code, external_customer_id, count(*) FROM usage_events GROUP BY 1, 2 ORDER BY 2;

-- A partition 40 days old: the worker retires it (DETACH CONCURRENTLY, then DROP).
CREATE TABLE usage_events_old (LIKE usage_events);
SELECT format('ALTER TABLE usage_events ATTACH PARTITION usage_events_old FOR VALUES FROM (%L) TO (%L)',
              ingest_internal.day_start(current_date - 40, 'UTC'),
              ingest_internal.day_start(current_date - 39, 'UTC')) \gexec
SELECT * FROM ingest.run_maintenance('usage_events', dry_run => true);
SELECT pg_sleep(3);
SELECT logged_at, action, partition, status, message FROM ingest.maintenance_log ORDER BY id;
SELECT * FROM ingest.event_tables;
SQL
echo "== demo done; stopping the cluster"
