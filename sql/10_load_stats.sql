-- ingest.load_stats: what every write path did, per table and hour.
SELECT ingest.create_event_table('lst');
-- timestamps from a column default (noon today), so that COPY data can be
-- fixed and a replay is a duplicate with the same payload
ALTER TABLE lst ALTER COLUMN "timestamp" SET DEFAULT date_trunc('day', now(), 'UTC') + interval '12 hours';
CREATE FUNCTION regress.lst_csv(prefix text, n int, code text DEFAULT 'api') RETURNS text
LANGUAGE sql AS $$
    SELECT string_agg(format('00000000-0000-0000-0000-000000000001,%s%s,c,%s',
                             prefix, g, code), E'\n') || E'\n'
      FROM generate_series(1, n) g $$;
CREATE FUNCTION regress.lst_load(data text) RETURNS SETOF record
LANGUAGE sql AS $$
    SELECT * FROM ingest.load('lst', data,
                              columns => ARRAY['organization_id', 'transaction_id',
                                               'external_customer_id', 'code']) $$;
CREATE VIEW regress.lst_stats AS
SELECT calls, loaded, duplicates, conflicts, rejected, bytes > 0 AS has_bytes,
       seconds >= 0 AS has_seconds, hour = date_trunc('hour', last_load_at, 'UTC') AS hour_of_load
  FROM ingest.load_stats WHERE event_table = 'lst'::regclass;

-- the counts are per hour: start clear of the next hour's turn
DO $$ BEGIN PERFORM pg_sleep(s + 1) FROM (SELECT 3600 - extract(epoch FROM clock_timestamp()) % 3600 AS s) t WHERE s < 60; END $$;
-- nothing yet
SELECT * FROM regress.lst_stats;
-- ingest.load: 5 loaded; then 3 duplicates (two with another payload: conflicts),
-- 1 rejected, 1 loaded
SELECT * FROM regress.lst_load(regress.lst_csv('a', 5)) AS (l bigint, d bigint, r bigint, c bigint);
SELECT * FROM regress.lst_load(regress.lst_csv('a', 1) || regress.lst_csv('a', 2, 'other')
                               || E'not-a-uuid,x,c,api\n' || regress.lst_csv('b', 1))
    AS (l bigint, d bigint, r bigint, c bigint);
SELECT * FROM regress.lst_stats;
-- COPY through the hook: 2 loaded, 1 duplicate
COPY lst (organization_id, transaction_id, external_customer_id, code) FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-000000000001,c1,c,api
00000000-0000-0000-0000-000000000001,a1,c,api
00000000-0000-0000-0000-000000000001,c2,c,api
\.
SELECT * FROM regress.lst_stats;
-- INSERT (the row trigger): 1 loaded, 1 duplicate, one call
INSERT INTO lst (organization_id, transaction_id, external_customer_id, code)
VALUES ('00000000-0000-0000-0000-000000000001', 'i1', 'c', 'api'),
       ('00000000-0000-0000-0000-000000000001', 'a2', 'c', 'api');
SELECT * FROM regress.lst_stats;
-- plain COPY (hook off): 1 loaded, 1 duplicate, one call
SET ingest.copy_hook = off;
COPY lst (organization_id, transaction_id, external_customer_id, code) FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-000000000001,p1,c,api
00000000-0000-0000-0000-000000000001,a3,c,api
\.
RESET ingest.copy_hook;
SELECT * FROM regress.lst_stats;

-- what is rolled back is not counted: a transaction, a savepoint
BEGIN;
SELECT * FROM regress.lst_load(regress.lst_csv('r', 3)) AS (l bigint, d bigint, r bigint, c bigint);
ROLLBACK;
BEGIN;
SAVEPOINT s;
INSERT INTO lst (organization_id, transaction_id, external_customer_id, code)
VALUES ('00000000-0000-0000-0000-000000000001', 's1', 'c', 'api');
ROLLBACK TO s;
SELECT * FROM regress.lst_load(regress.lst_csv('s', 2)) AS (l bigint, d bigint, r bigint, c bigint);
COMMIT;
SELECT * FROM regress.lst_stats;
SELECT count(*) AS events FROM lst;
-- the table's summary: last load time and this hour's loads
SELECT last_load_at IS NOT NULL AS has_last_load, loads_last_hour
  FROM ingest.event_tables WHERE event_table = 'lst'::regclass;

-- off: nothing counted
SET ingest.track_loads = off;
SELECT * FROM regress.lst_load(regress.lst_csv('o', 1)) AS (l bigint, d bigint, r bigint, c bigint);
RESET ingest.track_loads;
SELECT calls, loaded FROM regress.lst_stats;

-- statistics of a table are its readers' (and pg_monitor's) to see
CREATE ROLE lst_stranger;
CREATE ROLE lst_monitor IN ROLE pg_monitor;
GRANT SELECT ON regress.lst_stats TO lst_stranger, lst_monitor;
GRANT USAGE ON SCHEMA regress TO lst_stranger, lst_monitor;
SET ROLE lst_stranger;
SELECT count(*) AS seen FROM ingest.load_stats WHERE event_table = 'lst'::regclass;
SELECT loads_last_hour FROM ingest.event_tables WHERE event_table = 'lst'::regclass;
SET ROLE lst_monitor;
SELECT calls, loaded FROM ingest.load_stats WHERE event_table = 'lst'::regclass;
RESET ROLE;
-- off Citus, the cluster-wide forms are this node's
SELECT (SELECT array_agg(ROW(hour, calls, loaded, duplicates, rejected) ORDER BY hour)
          FROM ingest.cluster_load_stats('lst'))
     = (SELECT array_agg(ROW(hour, calls, loaded, duplicates, rejected) ORDER BY hour)
          FROM ingest.load_stats WHERE event_table = 'lst'::regclass) AS cluster_stats_same,
       (SELECT array_agg(ROW(node, line_number, sqlstate) ORDER BY rejected_at, line_number)
          FROM ingest.cluster_rejects('lst'))
     IS NOT DISTINCT FROM (SELECT array_agg(ROW('local'::text, line_number, sqlstate) ORDER BY rejected_at, line_number)
          FROM ingest.rejects WHERE event_table = 'lst'::regclass) AS cluster_rejects_same,
       (SELECT count(*) FROM ingest.cluster_load_stats('lst')) AS hours,
       (SELECT count(*) FROM ingest.cluster_rejects('lst')) AS rejects;
SET ROLE lst_stranger;
SELECT count(*) FROM ingest.cluster_rejects('lst');
SET ROLE lst_monitor;
SELECT count(*) > 0 AS monitor_sees FROM ingest.cluster_load_stats('lst');
RESET ROLE;
CREATE ROLE lst_nobody;
SET ROLE lst_nobody;
SELECT count(*) FROM ingest.cluster_load_stats('lst');
RESET ROLE;
DROP ROLE lst_nobody;
-- a non-superuser cannot turn counting off
SET ROLE lst_stranger;
SET ingest.track_loads = off;
RESET ROLE;
DROP OWNED BY lst_stranger, lst_monitor;
DROP ROLE lst_stranger, lst_monitor;

-- stored statistics (the worker's, here by hand) go with the table
INSERT INTO ingest_internal.load_stats
VALUES ('lst'::regclass, date_trunc('hour', now() - interval '1 day'), 1, 1, 0, 0, 0, 10, 0.1, now() - interval '1 day');
SELECT calls, loaded FROM ingest.load_stats WHERE event_table = 'lst'::regclass ORDER BY hour;
DROP VIEW regress.lst_stats;
DROP TABLE lst;
SELECT count(*) AS stats_left FROM ingest_internal.load_stats;

SELECT * FROM regress.invariants();
