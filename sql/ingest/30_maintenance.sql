-- Maintenance by hand: the same code the background worker runs.

CREATE OR REPLACE FUNCTION ingest.run_maintenance(tbl regclass DEFAULT NULL,
                                       dry_run boolean DEFAULT false)
RETURNS TABLE(event_table regclass, action text, partition text, detail text)
LANGUAGE C CALLED ON NULL INPUT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_run_maintenance';
COMMENT ON FUNCTION ingest.run_maintenance(regclass, boolean) IS
    'Run partition maintenance now (one table, or all when NULL) and return its actions; dry_run returns the plan without acting';

-- Backfill: past days' partitions, made now so that history can be loaded.
-- A closed day gets every declared index at once (on an empty table: no
-- wait).  Retention still applies: a day it would retire
-- at once is refused.  SHARE UPDATE EXCLUSIVE on the table (what ATTACH
-- takes) serializes it with maintenance and blocks no loader.
CREATE OR REPLACE FUNCTION ingest.create_partitions(tbl regclass, from_day date, to_day date)
RETURNS SETOF regclass
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg    ingest.table_config;
    cutoff timestamptz;
    d      date;
    part   regclass;
    ix     ingest.index_config;
BEGIN
    IF tbl IS NOT NULL THEN
        PERFORM ingest_internal.require_owner(tbl);
    END IF;
    IF tbl IS NULL OR from_day IS NULL OR to_day IS NULL THEN
        RAISE EXCEPTION 'tbl, from_day and to_day must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF from_day > to_day OR to_day - from_day >= 1000 THEN
        RAISE EXCEPTION 'from_day must not be after to_day, nor 1000 days or more before it'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ingest_internal.require_managed(tbl);
    -- the rest is checked under the lock
    cfg := ingest_internal.lock_managed(tbl, 'share update exclusive', 'ingest.create_partitions()');
    IF cfg.managed_by <> 'ingest' THEN
        RAISE EXCEPTION 'the partitions of table "%" are made by %', tbl, cfg.managed_by
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    cutoff := ingest_internal.retention_cutoff(cfg, pg_catalog.now());
    IF cutoff IS NOT NULL THEN
        IF ingest_internal.day_start(from_day + 1, cfg.time_zone) <= cutoff THEN
            RAISE EXCEPTION 'day % of table "%" is past its retention', from_day, tbl
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = pg_catalog.format('Retention (%s) retires every day that ends by %s.',
                                                 cfg.retention, cutoff);
        END IF;
    END IF;

    FOR d IN SELECT from_day + i FROM pg_catalog.generate_series(0, to_day - from_day) i LOOP
        -- NULL: a day that has its partition
        part := ingest_internal.create_partition(tbl, d)::regclass;
        CONTINUE WHEN part IS NULL;
        -- a day not yet closed keeps the lean indexes of the hot phase
        FOR ix IN SELECT * FROM ingest.index_config c
                   WHERE c.event_table = tbl AND c.phase <> 'always'
                     AND ingest_internal.day_start(d + 1, cfg.time_zone)
                         + ingest_internal.close_delay() <= pg_catalog.now()
                   ORDER BY c.name
        LOOP
            PERFORM ingest_internal.owner_ddl(part, ingest_internal.index_ddl(part,
                        ingest.partition_index_name(part, ix.name), ix.columns, ix.method,
                        ix.where_clause, ix.with_options, false));
        END LOOP;
        RETURN NEXT part;
    END LOOP;
END
$$;
COMMENT ON FUNCTION ingest.create_partitions(regclass, date, date) IS
    'Make the missing partitions of past (or future) days, with every declared index, so that history can be loaded; refused past retention';

-- Views: policy and health per table, and every partition.

CREATE OR REPLACE VIEW ingest.partitions AS
SELECT c.event_table,
       b.partition,
       pg_catalog.timezone(c.time_zone, b.lower_bound)::date AS day,
       b.lower_bound,
       b.upper_bound,
       CASE WHEN b.is_default THEN 'default'
            WHEN b.detach_pending THEN 'detach pending'
            ELSE 'attached' END AS state,
       pg_catalog.pg_total_relation_size(b.partition_oid) AS size_bytes,
       NULLIF(pc.reltuples, -1)::bigint AS rows_estimate
  FROM ingest.table_config c
  JOIN ingest_internal.bounds b ON b.relid = c.event_table
  JOIN pg_catalog.pg_class pc ON pc.oid = b.partition_oid
UNION ALL
SELECT c.event_table,
       r.partition_oid::regclass,
       pg_catalog.timezone(c.time_zone, r.lower_bound)::date,
       r.lower_bound,
       r.upper_bound,
       'detached',
       pg_catalog.pg_total_relation_size(r.partition_oid),
       NULLIF(pc.reltuples, -1)::bigint
  FROM ingest.table_config c
  JOIN ingest_internal.retired r ON r.relid = c.event_table
  JOIN pg_catalog.pg_class pc ON pc.oid = r.partition_oid
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = r.partition_oid);
COMMENT ON VIEW ingest.partitions IS
    'Partitions of managed tables (and detached ones kept by retention_action = ''detach''), with day, size and row estimate';

-- Load statistics (loadstats.c): counts published at commit and not yet
-- stored by the worker, of the tables the caller may read.
CREATE OR REPLACE FUNCTION ingest_side.load_stats_pending(
    OUT event_table oid, OUT hour timestamptz, OUT calls bigint, OUT loaded bigint,
    OUT duplicates bigint, OUT conflicts bigint, OUT rejected bigint, OUT bytes bigint,
    OUT seconds double precision, OUT last_load_at timestamptz)
RETURNS SETOF record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'ingest_load_stats_pending';

CREATE OR REPLACE VIEW ingest.load_stats WITH (security_barrier) AS
SELECT s.event_table::pg_catalog.regclass AS event_table,
       s.hour,
       pg_catalog.sum(s.calls)::bigint AS calls,
       pg_catalog.sum(s.loaded)::bigint AS loaded,
       pg_catalog.sum(s.duplicates)::bigint AS duplicates,
       pg_catalog.sum(s.conflicts)::bigint AS conflicts,
       pg_catalog.sum(s.rejected)::bigint AS rejected,
       pg_catalog.sum(s.bytes)::bigint AS bytes,
       pg_catalog.sum(s.seconds) AS seconds,
       pg_catalog.max(s.last_load_at) AS last_load_at
  FROM (SELECT * FROM ingest_internal.load_stats
         WHERE pg_catalog.pg_has_role('pg_monitor', 'USAGE')
            OR pg_catalog.has_table_privilege(event_table, 'SELECT')
        UNION ALL
        SELECT * FROM ingest_side.load_stats_pending()) s
 WHERE EXISTS (SELECT 1 FROM ingest.table_config c
                WHERE c.event_table OPERATOR(pg_catalog.=) s.event_table)
 GROUP BY s.event_table, s.hour;
COMMENT ON VIEW ingest.load_stats IS
    'Per managed table and hour: load calls, rows loaded, duplicates skipped, conflicts, rows rejected, input bytes and seconds, from every write path; trimmed by age (ingest.log_retention)';

CREATE OR REPLACE VIEW ingest.event_tables AS
SELECT c.event_table,
       c.managed_by,
       c.time_zone,
       c.retention,
       c.premake,
       c.retention_action,
       COALESCE(p.partitions, 0) AS partitions,
       p.oldest_day,
       p.newest_day,
       s.last_success_at AS last_maintenance,
       s.last_error_at,
       s.last_sqlstate,
       -- error texts can quote stored values: the table owner's to read
       CASE WHEN pg_catalog.pg_has_role(pc.relowner, 'USAGE') THEN s.last_error END AS last_error,
       COALESCE(s.consecutive_failures, 0) AS consecutive_failures,
       s.next_attempt_at,
       l.last_load_at,
       COALESCE(l.loads_last_hour, 0) AS loads_last_hour
  FROM ingest.table_config c
  LEFT JOIN LATERAL (
        SELECT pg_catalog.count(*) AS partitions,
               pg_catalog.min(v.day) AS oldest_day,
               pg_catalog.max(v.day) AS newest_day
          FROM ingest.partitions v
         WHERE v.event_table = c.event_table AND v.state = 'attached') p ON true
  LEFT JOIN ingest_internal.table_state s ON s.relid = c.event_table
  LEFT JOIN pg_catalog.pg_class pc ON pc.oid = c.event_table
  -- hour buckets: the current clock hour and the one before
  LEFT JOIN LATERAL (
        SELECT pg_catalog.max(ls.last_load_at) AS last_load_at,
               pg_catalog.sum(ls.calls) FILTER (
                   WHERE ls.hour >= pg_catalog.date_trunc('hour', pg_catalog.now() - interval '1 hour', 'UTC')
               )::bigint AS loads_last_hour
          FROM ingest.load_stats ls
         WHERE ls.event_table = c.event_table) l ON true;
COMMENT ON VIEW ingest.event_tables IS
    'Managed tables: policy, partition count, oldest and newest day, last successful maintenance and last error, last load and loads of this and the previous hour';

GRANT USAGE ON SCHEMA ingest TO PUBLIC;
GRANT SELECT ON ingest.event_tables, ingest.partitions, ingest.maintenance_log,
                ingest.table_config, ingest.load_stats TO PUBLIC;
GRANT EXECUTE ON FUNCTION ingest_side.load_stats_pending() TO PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ingest_internal FROM PUBLIC;
