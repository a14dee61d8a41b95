-- ingest.manage_table: adopting existing tables, and pg_partman's.

-- an existing table of the right shape, with an extra column
SELECT ingest.create_event_table('shape');
CREATE TABLE billing (LIKE shape INCLUDING ALL, note text) PARTITION BY RANGE ("timestamp");
SELECT regress.backdate('billing', -2);

SELECT ingest.manage_table('billing', retention => '90 days', premake => 2);
SELECT event_table, time_zone, retention, premake, managed_by FROM ingest.table_config;
-- adoption makes no partitions itself; maintenance catches up from the newest
SELECT action, day - regress.today() AS day_offset
  FROM regress.lifecycle('billing', true) r
  JOIN LATERAL (SELECT substring(r.partition from '(\d{8})$')::date AS day) d ON true;
SELECT action FROM regress.lifecycle('billing');
SELECT day - regress.today() AS day_offset, state FROM ingest.partitions
 WHERE event_table = 'billing'::regclass ORDER BY day;
-- the adopted table keeps its extra column, and so do new partitions
SELECT count(*) FROM pg_attribute a JOIN ingest.partitions p ON a.attrelid = p.partition
 WHERE p.event_table = 'billing'::regclass AND a.attname = 'note';

-- wrong shapes
CREATE TABLE plain (LIKE billing);
SELECT regress.try($$SELECT ingest.manage_table('plain')$$);
CREATE TABLE by_list (LIKE billing) PARTITION BY LIST (code);
SELECT regress.try($$SELECT ingest.manage_table('by_list')$$);
CREATE TABLE by_created (LIKE billing) PARTITION BY RANGE (created_at);
SELECT regress.try($$SELECT ingest.manage_table('by_created')$$);
CREATE TABLE ts_without_tz (organization_id uuid, "timestamp" timestamp) PARTITION BY RANGE ("timestamp");
SELECT regress.try($$SELECT ingest.manage_table('ts_without_tz')$$);
CREATE TABLE missing_col (organization_id uuid, transaction_id text, "timestamp" timestamptz)
    PARTITION BY RANGE ("timestamp");
SELECT regress.try($$SELECT ingest.manage_table('missing_col')$$);
CREATE TABLE wrong_type (LIKE billing) PARTITION BY RANGE ("timestamp");
ALTER TABLE wrong_type ALTER COLUMN value TYPE numeric;
SELECT regress.try($$SELECT ingest.manage_table('wrong_type')$$);
-- a nondeterministic collation on a text column ingest dedups or groups on:
-- the loader's feed compared bytes, the fold grouped 'API' with 'api'
CREATE COLLATION regress_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE ci_code (LIKE billing) PARTITION BY RANGE ("timestamp");
ALTER TABLE ci_code ALTER COLUMN code TYPE text COLLATE regress_ci;
SELECT regress.try($$SELECT ingest.manage_table('ci_code')$$);
DROP TABLE ci_code;
DROP COLLATION regress_ci;
SELECT regress.try($$SELECT ingest.manage_table('no_such_table')$$);
SELECT regress.try($$SELECT ingest.manage_table('billing')$$);
SELECT regress.try($$SELECT ingest.manage_table('plain', premake => -3)$$);

-- partitions that are not whole days in the table's zone are named
CREATE TABLE odd (LIKE billing) PARTITION BY RANGE ("timestamp");
CREATE TABLE odd_a PARTITION OF odd FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2026-01-02 00:00+00');
CREATE TABLE odd_b PARTITION OF odd FOR VALUES FROM ('2026-01-02 00:00+00') TO ('2026-01-02 12:00+00');
CREATE TABLE odd_c PARTITION OF odd FOR VALUES FROM ('2026-01-03 00:00+00') TO ('2026-01-05 00:00+00');
SELECT regress.try($$SELECT ingest.manage_table('odd')$$);
-- the same UTC days are not whole days in New York
DROP TABLE odd_b, odd_c;
SELECT regress.try($$SELECT ingest.manage_table('odd', time_zone => 'America/New_York')$$);
SELECT regress.try($$SELECT ingest.manage_table('odd')$$);

-- a default partition is refused: concurrent attach/detach cannot coexist with it
CREATE TABLE with_default (LIKE billing) PARTITION BY RANGE ("timestamp");
CREATE TABLE with_default_d PARTITION OF with_default DEFAULT;
SELECT regress.try($$SELECT ingest.manage_table('with_default')$$);
SELECT event_table FROM ingest.table_config ORDER BY 1;

-- pg_partman's tables are adopted, and left to pg_partman: 4.7 on
-- PostgreSQL 15, 5.x on 17 and 18, whose create_parent takes '1 day' and
-- 'range' where 4.7 takes 'daily' and 'native'
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
CREATE TABLE pm_events (LIKE billing) PARTITION BY RANGE ("timestamp");
SELECT partman.create_parent('public.pm_events', 'timestamp', p_premake => 2,
                             p_interval => CASE WHEN v4 THEN 'daily' ELSE '1 day' END,
                             p_type => CASE WHEN v4 THEN 'native' ELSE 'range' END)
  FROM (SELECT extversion LIKE '4.%' AS v4 FROM pg_extension WHERE extname = 'pg_partman') v;
SELECT ingest.manage_table('pm_events');
SELECT event_table, managed_by FROM ingest.table_config WHERE event_table = 'pm_events'::regclass;
SELECT count(*) FROM ingest.run_maintenance('pm_events', dry_run => true);
SELECT action FROM ingest.run_maintenance('pm_events');
SELECT managed_by, partitions > 0 AS has_partitions FROM ingest.event_tables
 WHERE event_table = 'pm_events'::regclass;

SELECT * FROM regress.invariants();
