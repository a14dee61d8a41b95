-- Catalog invariants of managed tables after maintenance (pgTAP).
-- Runs outside a transaction block: ingest.run_maintenance() commits on its own.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;

SELECT ingest.create_event_table('inv_utc', retention => '10 days', premake => 3);
SELECT ingest.create_event_table('inv_ny', premake => 5, time_zone => 'America/New_York');
SELECT ingest.create_event_table('inv_nepal', premake => 0, time_zone => 'Asia/Kathmandu');
-- an adopted table with no partitions at all
CREATE TABLE inv_adopted (LIKE inv_utc) PARTITION BY RANGE ("timestamp");
SELECT ingest.manage_table('inv_adopted', premake => 2, time_zone => 'Australia/Lord_Howe');
-- a backdated partition past retention
CREATE TABLE inv_utc_old (LIKE inv_utc);
DO $$ BEGIN
    EXECUTE format('ALTER TABLE inv_utc ATTACH PARTITION inv_utc_old FOR VALUES FROM (%L) TO (%L)',
                   ingest_internal.day_start(current_date - 20, 'UTC'),
                   ingest_internal.day_start(current_date - 19, 'UTC'));
END $$;
SELECT count(*) FROM ingest.run_maintenance();

SELECT plan(8);

SELECT is_empty($$
    SELECT c.event_table, d
      FROM ingest.table_config c
      CROSS JOIN LATERAL generate_series(0, c.premake) g(n)
      CROSS JOIN LATERAL (SELECT (now() AT TIME ZONE c.time_zone)::date + g.n AS d) x
     WHERE c.managed_by = 'ingest'
       AND NOT EXISTS (SELECT 1 FROM ingest.partitions p
                        WHERE p.event_table = c.event_table AND p.state = 'attached'
                          AND p.day = x.d)
$$, 'every managed table has today and premake days of partitions');

SELECT is_empty($$
    SELECT a.partition, b.partition
      FROM ingest.partitions a
      JOIN ingest.partitions b ON a.event_table = b.event_table AND a.partition < b.partition
     WHERE a.state = 'attached' AND b.state = 'attached'
       AND tstzrange(a.lower_bound, a.upper_bound) && tstzrange(b.lower_bound, b.upper_bound)
$$, 'no two partitions of a table overlap');

SELECT is_empty($$
    SELECT p.partition
      FROM ingest.partitions p JOIN ingest.table_config c USING (event_table)
     WHERE p.state = 'attached'
       AND (p.lower_bound <> ingest_internal.day_start(p.day, c.time_zone)
            OR p.upper_bound <> ingest_internal.day_start(p.day + 1, c.time_zone))
$$, 'every partition is one whole day in its table''s zone');

SELECT is_empty($$
    SELECT c.event_table FROM ingest.table_config c
      JOIN pg_class k ON k.oid = c.event_table
     WHERE k.relkind <> 'p'
$$, 'every config row names a partitioned table');

SELECT is_empty($$
    SELECT p.partition FROM ingest.partitions p JOIN ingest.table_config c USING (event_table)
     WHERE c.retention IS NOT NULL AND p.upper_bound <= now() - c.retention
$$, 'no partition past retention remains');

SELECT results_eq($$
    SELECT event_table::text, consecutive_failures FROM ingest.event_tables ORDER BY 1
$$, $$
    VALUES ('inv_adopted', 0), ('inv_nepal', 0), ('inv_ny', 0), ('inv_utc', 0)
$$, 'the health view lists every managed table, without failures');

SELECT is_empty($$
    SELECT partition, name FROM ingest.indexes
     WHERE event_table IN ('inv_utc'::regclass, 'inv_ny'::regclass, 'inv_nepal'::regclass)
       AND phase = 'always'
       AND partition::text NOT LIKE '%_old'
       AND status <> 'present'
$$, 'every partition ingest made has its always-phase indexes');

SELECT is_empty($$
    SELECT indexrelid::regclass FROM pg_index WHERE NOT indisvalid
$$, 'no invalid index');

SELECT * FROM finish();
