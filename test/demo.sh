#!/bin/bash
# make demo: install what is needed, build, start a throwaway cluster with
# ingest preloaded, and show a managed event table at work.
source "$(dirname "$0")/env.sh"

throwaway_cluster 54390 "ingest.maintenance_interval = 1"
echo "== throwaway cluster started in $cluster_dir (port 54390)"

run() { as_pg psql -X -d postgres -v ON_ERROR_STOP=1 "$@"; }

run -e <<'SQL'
CREATE EXTENSION ingest;

-- A managed event table: one partition per UTC day, today plus 3 ahead,
-- raw events kept 30 days.
SELECT ingest.create_event_table('usage_events', retention => '30 days');
SELECT partition, day, lower_bound, upper_bound, state FROM ingest.partitions;

-- 1,000 usage events through the loader, then the same payload again plus
-- 10 new events, a retry re-stamped an hour later and a bad row.  They are
-- stamped in the first 20 minutes of today (UTC): the new table has no
-- partition for yesterday, and "the last 20 minutes" reach into it just
-- after midnight.
SELECT string_agg(format('6f1c1f4e-0000-4000-8000-000000000001,tx-%s,customer-%s,api_call,%s,"{""model"": ""m%s""}",1,',
                         g, g % 7, date_trunc('day', now(), 'UTC') + (g % 20) * interval '1 minute', g % 3), E'\n') AS payload
  FROM generate_series(1, 1000) g \gset
\set ECHO none
\echo '-- SELECT * FROM ingest.load(''usage_events'', <1,000 csv rows>);'
SELECT * FROM ingest.load('usage_events', :'payload');
\echo '-- the same 1,000 rows again, 10 new, a retry re-stamped an hour later, a bad row:'
SELECT * FROM ingest.load('usage_events', :'payload' || E'\n'
    || (SELECT string_agg(format('6f1c1f4e-0000-4000-8000-000000000001,tx-%s,customer-1,api_call,%s,{},1,', g, now()), E'\n')
          FROM generate_series(1001, 1010) g)
    || E'\n6f1c1f4e-0000-4000-8000-000000000001,tx-5,customer-5,api_call,' || (now() + interval '1 hour') || E',{},1,'
    || E'\nnot-a-uuid,tx-x,customer-1,api_call,' || now() || E',{},1,');
\set ECHO queries
SELECT count(*) AS events, count(DISTINCT transaction_id) AS distinct_keys FROM usage_events;
SELECT line_number, sqlstate, kind, message FROM ingest.rejects ORDER BY id;
SELECT code, external_customer_id, count(*) FROM usage_events GROUP BY 1, 2 ORDER BY 2;

-- Usage per customer from the hourly rollup, exact before and after a fold.
SELECT external_customer_id, events, value_sum
  FROM ingest.usage('usage_events', '6f1c1f4e-0000-4000-8000-000000000001',
                    date_trunc('hour', now()) - interval '1 day', date_trunc('hour', now()) + interval '1 hour')
 ORDER BY 1;
SELECT ingest.fold_rollups();
SELECT count(*) AS disagreements FROM ingest.rollup_verify('usage_events', now() - interval '1 day', now() + interval '1 day');

-- A partition 40 days old: the worker retires it (DETACH CONCURRENTLY, then DROP).
CREATE TABLE usage_events_old (LIKE usage_events);
SELECT format('ALTER TABLE usage_events ATTACH PARTITION usage_events_old FOR VALUES FROM (%L) TO (%L)',
              (current_date - 40)::timestamp AT TIME ZONE 'UTC',
              (current_date - 39)::timestamp AT TIME ZONE 'UTC') \gexec
SELECT * FROM ingest.run_maintenance('usage_events', dry_run => true);
SELECT pg_sleep(3);
SELECT logged_at, action, partition, status, message FROM ingest.maintenance_log ORDER BY id;
SELECT * FROM ingest.event_tables;
SQL
echo "== demo done; stopping the cluster"
