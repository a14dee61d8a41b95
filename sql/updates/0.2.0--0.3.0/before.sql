-- ingest 0.2.0 to 0.3.0, part 1 of 3 (then the current code, then
-- after.sql): the side state of each table moves from extension-wide tables
-- keyed by OID to per-table side tables that pg_dump keeps.

\echo Use "ALTER EXTENSION ingest UPDATE TO '0.3.0'" to load this file. \quit

CREATE SCHEMA ingest_side;
GRANT USAGE ON SCHEMA ingest_side TO PUBLIC;

ALTER TABLE ingest.table_config
    ADD COLUMN ledger        regclass,
    ADD COLUMN rollup_hours  regclass,
    ADD COLUMN rollup_deltas regclass,
    ADD COLUMN rollup_stale  regclass,
    ADD COLUMN usage_view    regclass,
    ADD COLUMN rollup_days   regclass,
    ADD COLUMN retired       tstzmultirange NOT NULL DEFAULT '{}';
ALTER TABLE ingest.rollup_config ADD COLUMN building_xid xid8, ADD COLUMN building_horizon xid8;
ALTER TABLE ingest.table_config DROP CONSTRAINT table_config_managed_by_check,
    ADD CONSTRAINT table_config_managed_by_check
        CHECK (managed_by IN ('ingest', 'pg_partman', 'citus_shard'));

-- The tables ingest.distribute_table() gave to Citus, by name (OIDs differ
-- from node to node): a Citus reference table once one is, so that every
-- node knows its shards' side tables (sql/ingest/70_citus.sql).
CREATE TABLE ingest_internal.citus_tables (
    event_table      text PRIMARY KEY,
    ledger           text NOT NULL,
    rollup_hours     text NOT NULL,
    rollup_deltas    text NOT NULL,
    rollup_stale     text NOT NULL,
    rollup_days      text NOT NULL,
    time_zone        text NOT NULL,
    on_error         text NOT NULL,
    rollup_retention interval,
    known_from       timestamptz
);

-- A row of ingest.usage(), for the function that computes it on the Citus
-- node of an organization's shard (sql/ingest/70_citus.sql).
CREATE TYPE ingest_side.usage_row AS (
    code                 text,
    external_customer_id text,
    dimensions           jsonb,
    bucket               timestamptz,
    events               bigint,
    value_sum            numeric,
    decimal_sum          numeric,
    value_min            double precision,
    value_max            double precision,
    latest_value         double precision,
    latest_at            timestamptz
);

SELECT pg_catalog.pg_extension_config_dump('ingest.rejects', '');
COMMENT ON TABLE ingest.rejects IS
    'Rows the loader set aside (kind rejected) and duplicates whose payload differed from the stored event (kind conflict); trimmed by age (ingest.rejects_retention)';
-- the worker trims by age
CREATE INDEX rejects_rejected_at ON ingest.rejects (rejected_at);
SELECT pg_catalog.pg_extension_config_dump('ingest.rejects_id_seq', '');

-- Load statistics per table and hour, stored by the worker from the counts
-- every write path publishes at commit (loadstats.c); read through
-- ingest.load_stats.  Statistics, like pg_stat_*: not dumped.  Trimmed by
-- age (ingest.log_retention).
CREATE TABLE ingest_internal.load_stats (
    event_table  oid NOT NULL,
    hour         timestamptz NOT NULL,
    calls        bigint NOT NULL,
    loaded       bigint NOT NULL,
    duplicates   bigint NOT NULL,
    conflicts    bigint NOT NULL,
    rejected     bigint NOT NULL,
    bytes        bigint NOT NULL,
    seconds      double precision NOT NULL,
    last_load_at timestamptz NOT NULL,
    PRIMARY KEY (event_table, hour)
);

-- The worker's fold of each table's rollups (fold.c), each table in a
-- transaction of its own: last outcome and next attempt, with backoff.
CREATE TABLE ingest_internal.fold_state (
    relid                oid PRIMARY KEY,
    last_fold_at         timestamptz,
    last_fold_seconds    double precision,
    last_success_at      timestamptz,
    last_error_at        timestamptz,
    last_sqlstate        text,
    last_error           text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz
);

-- Replaced by functions of another signature or schema.
DROP FUNCTION ingest_internal.fold(oid);
DROP FUNCTION ingest_internal.raw_hours_sql(regclass, text);
DROP FUNCTION ingest_internal.start_dedup(regclass);
DROP FUNCTION ingest_internal.start_rollups(regclass);

DROP FUNCTION ingest_internal.forget_keys(oid, oid);

-- Error texts can quote stored values; rejects' raw lines would bypass
-- row-level security.
ALTER TABLE ingest.maintenance_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY maintenance_log_owner ON ingest.maintenance_log FOR SELECT
    USING (pg_catalog.pg_has_role(COALESCE((SELECT c.relowner FROM pg_catalog.pg_class c
                                             WHERE c.oid OPERATOR(pg_catalog.=) relid),
                                            10::pg_catalog.oid),
                                  'USAGE'));
ALTER POLICY rejects_readable ON ingest.rejects
    USING (pg_catalog.has_table_privilege(event_table, 'SELECT')
           AND NOT pg_catalog.row_security_active(event_table));
