-- ingest.configure, ingest.run_maintenance and the plan behind it.

SELECT ingest.create_event_table('ev', premake => 1);
SELECT regress.backdate('ev', -3);
SELECT regress.backdate('ev', -5);
SELECT regress.backdate('ev', -6);

-- no retention: nothing to retire
SELECT * FROM regress.lifecycle('ev', true);

-- configure: NULL keeps a setting
SELECT ingest.configure('ev', retention => '4 days');
SELECT retention, premake, retention_action FROM ingest.table_config WHERE event_table = 'ev'::regclass;
SELECT ingest.configure('ev', premake => 2);
SELECT retention, premake, retention_action FROM ingest.table_config WHERE event_table = 'ev'::regclass;

-- the plan: create the new premade day, retire days wholly older than 4 days, oldest first
SELECT action, regress.rel(partition) FROM regress.lifecycle('ev', true);
-- a manual run carries out exactly that plan, through a worker
SELECT action, regress.rel(partition) FROM regress.lifecycle('ev');
SELECT regress.rel(partition::text), state FROM ingest.partitions WHERE event_table = 'ev'::regclass ORDER BY day;
SELECT count(*) FROM pg_class WHERE relname IN ('ev_old5', 'ev_old6');
SELECT action, regress.rel(partition), status, sqlstate FROM ingest.maintenance_log
 WHERE action IN ('create', 'detach', 'finalize', 'drop', 'warning') ORDER BY id;
-- nothing left to do
SELECT count(*) FROM regress.lifecycle('ev');

-- retention_action 'detach' keeps retired partitions as plain tables, listed
SELECT ingest.configure('ev', retention_action => 'detach', retention => '2 days');
SELECT action, regress.rel(partition) FROM regress.lifecycle('ev');
SELECT regress.rel(partition::text), state FROM ingest.partitions WHERE event_table = 'ev'::regclass ORDER BY day;
SELECT relispartition FROM pg_class WHERE relname = 'ev_old3';
-- switching to 'drop' drops what was kept
SELECT ingest.configure('ev', retention_action => 'drop');
SELECT action, regress.rel(partition) FROM regress.lifecycle('ev');
SELECT count(*) FROM pg_class WHERE relname = 'ev_old3';

-- guard rail: at most ingest.max_drops_per_run partitions retired per run
SELECT ingest.create_event_table('capped', retention => '1 day');
SELECT regress.backdate('capped', -n) FROM generate_series(2, 5) n;
ALTER SYSTEM SET ingest.max_drops_per_run = 2;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT action, regress.rel(partition), detail FROM regress.lifecycle('capped', true)
 WHERE action <> 'detach';
SELECT action, regress.rel(partition) FROM regress.lifecycle('capped') WHERE action <> 'warning';
SELECT status, message FROM ingest.maintenance_log WHERE action = 'warning';
SELECT count(*) FROM ingest.partitions WHERE event_table = 'capped'::regclass AND day < regress.today();
ALTER SYSTEM RESET ingest.max_drops_per_run;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT action, regress.rel(partition) FROM regress.lifecycle('capped');

-- catch-up: missing days between the newest partition and today+premake are made
SELECT ingest.create_event_table('gap', premake => 2);
DO $$ DECLARE p regclass; BEGIN
    FOR p IN SELECT partition FROM ingest.partitions WHERE event_table = 'gap'::regclass LOOP
        EXECUTE format('DROP TABLE %s', p);
    END LOOP;
END $$;
SELECT regress.backdate('gap', -3);
SELECT action, regress.rel(partition) FROM regress.lifecycle('gap');

-- day boundaries in the table's zone, with 23- and 25-hour days at DST changes
SET datestyle = ISO;
SET timezone = 'America/New_York';
SELECT ingest.create_event_table('ny', premake => 2, time_zone => 'America/New_York');
SELECT day, detail FROM ingest_internal.plan('ny', '2026-03-07 12:00-05', 7);
SELECT day, detail FROM ingest_internal.plan('ny', '2026-10-31 23:30-04', 7);
SELECT ingest_internal.day_start(d, 'America/New_York') AS starts,
       ingest_internal.day_start(d + 1, 'America/New_York')
         - ingest_internal.day_start(d, 'America/New_York') AS length
  FROM (VALUES (date '2026-03-08'), ('2026-03-09'), ('2026-11-01')) v(d);

RESET datestyle;
RESET timezone;

-- retries back off, and tighten as the runway of future partitions shrinks
SELECT f, ingest_internal.retry_delay(f, 60, interval '3 days') AS long_runway,
       ingest_internal.retry_delay(f, 60, interval '2 hours') AS short_runway,
       ingest_internal.retry_delay(f, 60, interval '-1 hour') AS no_runway
  FROM generate_series(1, 8) f;

-- bad input
SELECT regress.try($$SELECT ingest.configure('ev', retention_action => 'archive')$$);
SELECT regress.try($$SELECT ingest.configure('ev', retention => '1 hour')$$);
SELECT regress.try($$SELECT ingest.configure('ev', premake => -1)$$);
SELECT regress.try($$SELECT ingest.configure('pg_class')$$);
SELECT regress.try($$SELECT * FROM ingest.run_maintenance('pg_class')$$);
SELECT regress.try($$SELECT * FROM ingest.run_maintenance('nope')$$);
-- a single statement whose default isolation is not READ COMMITTED
SET default_transaction_isolation = 'repeatable read';
SELECT * FROM ingest.run_maintenance('ev');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
RESET default_transaction_isolation;
BEGIN;
SELECT regress.try($$SELECT * FROM ingest.run_maintenance('ev')$$);
SELECT count(*) FROM regress.lifecycle('ev', true);
COMMIT;
-- retention => '0' keeps data forever
SELECT ingest.configure('ev', retention => '0');
SELECT retention FROM ingest.table_config WHERE event_table = 'ev'::regclass;

-- unmanage_table stops maintenance and keeps every row
INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp")
VALUES (gen_random_uuid(), 'x', 'c', 'k', now());
SELECT ingest.unmanage_table('ev');
SELECT count(*) FROM ingest.table_config WHERE event_table = 'ev'::regclass;
SELECT count(*) FROM ev;
SELECT regress.try($$SELECT ingest.unmanage_table('ev')$$);

-- DROP TABLE forgets the configuration
DROP TABLE gap;
SELECT count(*) FROM ingest.table_config WHERE event_table::text = 'gap';

-- backfill: partitions of past days with every declared index, so that
-- history loads; days that exist are skipped; a day not yet closed keeps
-- the hot phase's indexes; refused past retention, to others, and on
-- nonsense
SELECT ingest.create_event_table('bf', retention => '60 days', premake => 0);
SELECT ingest.add_index('bf', ARRAY['external_customer_id']);
SELECT count(*) FROM ingest.create_partitions('bf', regress.today() - 31, regress.today() - 29);
SELECT count(*) FROM ingest.create_partitions('bf', regress.today() - 30, regress.today() + 1);
-- a day made while the worker's create waited for the table's lock (its
-- plan is a moment old): NULL, nothing made twice; a retired partition
-- dropped by someone else before the worker's drop: nothing to do
SELECT ingest_internal.create_partition('bf', regress.today() - 30) IS NULL AS made_already;
SELECT regress.try($$SELECT ingest_internal.drop_retired(4294967000::oid)$$) AS nothing_to_drop;
-- a lock that would also wait for the partitions cannot be tried without waiting
SELECT regress.try($$SELECT ingest_internal.lock_table('bf'::regclass, false, 'access exclusive')$$);
-- what it reads once it holds the lock would be older than the wait under
-- REPEATABLE READ: refused there
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT regress.try($$SELECT ingest.create_partitions('bf', regress.today() + 5, regress.today() + 5)$$);
ROLLBACK;
-- the partitions, by their indexes
WITH ix AS (
    SELECT v.day - regress.today() AS day,
           string_agg(regexp_replace(i.relname, '^bf_p\d{8}_', ''), ' ' ORDER BY i.relname) AS indexes
      FROM ingest.partitions v JOIN pg_index x ON x.indrelid = v.partition
      JOIN pg_class i ON i.oid = x.indexrelid
     WHERE v.event_table = 'bf'::regclass GROUP BY v.day)
SELECT min(day) AS first, max(day) AS last, count(*), indexes FROM ix GROUP BY indexes ORDER BY 1;
SELECT loaded, rejected FROM ingest.load('bf', format(
    '00000000-0000-0000-0000-0000000000bf,old1,c1,api,%s,{},1,', regress.h(-30, 12)));
SELECT transaction_id, "timestamp" = regress.h(-30, 12) AS at_day_minus_30 FROM bf;
SELECT left(r, 6) AS sqlstate, r ~ 'is past its retention' AS past_retention
  FROM regress.try($$SELECT ingest.create_partitions('bf', regress.today() - 61, regress.today() - 59)$$) r;
SELECT regress.try($$SELECT ingest.create_partitions('bf', regress.today(), regress.today() - 1)$$);
SELECT regress.try($$SELECT ingest.create_partitions('bf', NULL, regress.today())$$);
CREATE ROLE bf_stranger;
SET ROLE bf_stranger;
SELECT regress.try($$SELECT ingest.create_partitions('bf', regress.today() - 40, regress.today() - 40)$$);
RESET ROLE;
-- the worker's plan takes the backfilled days as its own: nothing to redo
SELECT action, regress.rel(partition) FROM regress.lifecycle('bf', true);

-- A table whose newest day is long past gets the missed days of the last
-- 31 and a warning naming the older ones (once: then the newest day is
-- today's), left to the owner: every missed day was planned at once (a
-- table its owner attached so held up every other table's run for weeks)
SELECT ingest.create_event_table('cu', premake => 0) IS NOT NULL AS made;
SELECT regress.try(format('DROP TABLE %s', (SELECT partition FROM ingest.partitions
                                             WHERE event_table = 'cu'::regclass)));
SELECT regress.backdate('cu', -400);
CREATE FUNCTION regress.cu_plan() RETURNS TABLE(creates bigint, oldest int, newest int, warning text)
LANGUAGE sql AS $$
    WITH c AS (SELECT substring(partition FROM '_p(\d{8})$')::date - regress.today() AS day,
                      CASE WHEN action = 'warning' THEN
                          regexp_replace(detail, '(\d{4}-\d\d-\d\d) to (\d{4}-\d\d-\d\d)',
                                         (substring(detail FROM '(\d{4}-\d\d-\d\d) to')::date - regress.today())
                                         || ' to ' ||
                                         (substring(detail FROM 'to (\d{4}-\d\d-\d\d)')::date - regress.today()))
                      END AS w
                 FROM regress.lifecycle('cu', true))
    SELECT count(day), min(day), max(day), max(w) FROM c $$;
SELECT * FROM regress.cu_plan();
SELECT count(*) FILTER (WHERE action = 'create') AS made FROM regress.lifecycle('cu');
SELECT * FROM regress.cu_plan();
SELECT regress.try($$SELECT ingest.create_partitions('cu', regress.today() - 399, regress.today() - 32)$$);
SELECT count(*) AS partitions FROM ingest.partitions WHERE event_table = 'cu'::regclass;
DROP TABLE cu;
DROP FUNCTION regress.cu_plan();

-- a managed table whose dedup trigger was dropped is not maintained, and
-- the run says so (it said nothing: no row, no error)
SELECT ingest.create_event_table('nr', premake => 0) IS NOT NULL AS made;
DROP TRIGGER ingest_dedup ON nr;
SELECT ingest.configure('nr', premake => 2);
SELECT action, partition, detail FROM ingest.run_maintenance('nr');
SELECT status, sqlstate, left(message, 60) AS message FROM ingest.maintenance_log
 WHERE relid = 'nr'::regclass ORDER BY id;
DROP TABLE nr;

SELECT * FROM regress.invariants();
