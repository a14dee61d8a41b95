-- ingest extension script, built from the fragments under sql/ingest/ in
-- the order the Makefile lists them.  This fragment and 90_install.sql hold
-- the objects that keep data (schemas, tables, the event trigger) and run
-- only at install; every other fragment is code written with CREATE OR
-- REPLACE, which update scripts replay (see the Makefile).

\echo Use "CREATE EXTENSION ingest" to load this file. \quit

-- Internals live in their own schema; nothing in it is granted to PUBLIC.
CREATE SCHEMA ingest_internal;
REVOKE ALL ON SCHEMA ingest_internal FROM PUBLIC;

-- Side tables of each managed table (its key ledger and rollups), created
-- with it, owned by its owner and dumped with it by pg_dump.  Users may
-- name objects here (USAGE), but each table is its owner's alone.
CREATE SCHEMA ingest_side;
GRANT USAGE ON SCHEMA ingest_side TO PUBLIC;

-- Policy per managed table.  Dumped by pg_dump: it is user configuration.
-- Tables are stored as regclass so that a dump restores them by name.
CREATE TABLE ingest.table_config (
    event_table      regclass PRIMARY KEY,
    time_zone        text NOT NULL DEFAULT 'UTC',
    retention        interval,
    premake          integer NOT NULL DEFAULT 3 CHECK (premake >= 0),
    retention_action text NOT NULL DEFAULT 'drop'
                     CHECK (retention_action IN ('drop', 'detach')),
    -- citus_shard: on a Citus worker node, a shard of a table that the
    -- coordinator manages (sql/ingest/70_citus.sql)
    managed_by       text NOT NULL DEFAULT 'ingest'
                     CHECK (managed_by IN ('ingest', 'pg_partman', 'citus_shard')),
    on_error         text NOT NULL DEFAULT 'reject'
                     CHECK (on_error IN ('reject', 'abort')),
    rollup_retention interval,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- the table's side tables (ingest_internal.start_side_tables)
    ledger           regclass,
    rollup_hours     regclass,
    rollup_deltas    regclass,
    rollup_stale     regclass,
    usage_view       regclass,
    rollup_days      regclass,
    -- instants after the first partition's start whose raw events are
    -- retired: the days between a retired day made again and the
    -- partitions after it (ingest_internal.stale_new_range)
    retired          tstzmultirange NOT NULL DEFAULT '{}'
);
SELECT pg_catalog.pg_extension_config_dump('ingest.table_config', '');
COMMENT ON TABLE ingest.table_config IS
    'Partition policy of each table managed by ingest; change it with ingest.configure()';

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

-- Health of each table's maintenance.  Not dumped: it describes this
-- server's history, keyed by OID.
CREATE TABLE ingest_internal.table_state (
    relid                oid PRIMARY KEY,
    last_run_at          timestamptz,
    last_success_at      timestamptz,
    last_error_at        timestamptz,
    last_sqlstate        text,
    last_error           text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz
);

-- Partitions that maintenance has begun to retire.  A row is written and
-- committed before DETACH ... CONCURRENTLY starts, so that a crash at any
-- point leaves a trace the next run can finish from.
CREATE TABLE ingest_internal.retired (
    partition_oid oid PRIMARY KEY,
    relid         oid NOT NULL,
    partition     text NOT NULL,
    lower_bound   timestamptz NOT NULL,
    upper_bound   timestamptz NOT NULL,
    retired_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Completion marks of runs started by ingest.run_maintenance().
CREATE TABLE ingest_internal.run_done (
    run_id bigint PRIMARY KEY
);
CREATE SEQUENCE ingest_internal.run_id_seq;

-- Every maintenance action and failure.  Trimmed by age
-- (ingest.log_retention) by the worker.
CREATE TABLE ingest.maintenance_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logged_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    run_id      bigint NOT NULL,
    event_table text NOT NULL,
    relid       oid NOT NULL,
    action      text NOT NULL,
    partition   text,
    status      text NOT NULL CHECK (status IN ('ok', 'error', 'warning', 'skipped')),
    sqlstate    text,
    message     text
);
CREATE INDEX ON ingest.maintenance_log (logged_at);
CREATE INDEX ON ingest.maintenance_log (run_id);
-- Error texts can quote stored values: each table's rows are its owner's.
ALTER TABLE ingest.maintenance_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY maintenance_log_owner ON ingest.maintenance_log FOR SELECT
    USING (pg_catalog.pg_has_role(COALESCE((SELECT c.relowner FROM pg_catalog.pg_class c
                                             WHERE c.oid OPERATOR(pg_catalog.=) relid),
                                            10::pg_catalog.oid),
                                  'USAGE'));
COMMENT ON TABLE ingest.maintenance_log IS
    'Every partition maintenance action and failure, with its SQLSTATE; trimmed by age (ingest.log_retention)';

-- Rows the loader set aside, and conflicting duplicates.
CREATE TABLE ingest.rejects (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_table regclass NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    source      text NOT NULL,
    line_number bigint,
    raw         text NOT NULL,
    sqlstate    text NOT NULL,
    message     text NOT NULL,
    kind        text NOT NULL DEFAULT 'rejected' CHECK (kind IN ('rejected', 'conflict'))
);
COMMENT ON TABLE ingest.rejects IS
    'Rows the loader set aside (kind rejected) and duplicates whose payload differed from the stored event (kind conflict); trimmed by age (ingest.rejects_retention)';
-- the worker trims by age
CREATE INDEX rejects_rejected_at ON ingest.rejects (rejected_at);
ALTER TABLE ingest.rejects ENABLE ROW LEVEL SECURITY;
-- Everyone sees the rejects of the tables they can read, unless row-level
-- security filters the table for them: a reject's raw line would bypass it.
CREATE POLICY rejects_readable ON ingest.rejects FOR SELECT
    USING (pg_catalog.has_table_privilege(event_table, 'SELECT')
           AND NOT pg_catalog.row_security_active(event_table));
GRANT SELECT ON ingest.rejects TO PUBLIC;
-- Rejects are the users' data: pg_dump keeps them.
SELECT pg_catalog.pg_extension_config_dump('ingest.rejects', '');
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

-- Index management (50_indexes.sql).
CREATE TABLE ingest.index_config (
    event_table  regclass NOT NULL,
    name         text NOT NULL,
    columns      text[] NOT NULL,
    method       text NOT NULL CHECK (method IN ('btree', 'brin')),
    phase        text NOT NULL CHECK (phase IN ('always', 'closed')),
    where_clause text,
    with_options text,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (event_table, name)
);
SELECT pg_catalog.pg_extension_config_dump('ingest.index_config', '');
COMMENT ON TABLE ingest.index_config IS
    'Indexes declared per managed table, applied to partitions by phase; see ingest.add_index()';

-- Indexes being removed from every partition by maintenance.
CREATE TABLE ingest_internal.index_drops (
    event_table regclass NOT NULL,
    name        text NOT NULL,
    PRIMARY KEY (event_table, name)
);

-- Closing steps done per partition.
CREATE TABLE ingest_internal.partition_closed (
    partition_oid oid NOT NULL,
    step          text NOT NULL CHECK (step IN ('summarize', 'analyze', 'freeze')),
    done_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (partition_oid, step)
);


-- Hourly rollups (60_rollups.sql).
-- The rollups of each table: "default" (no dimensions, made with the table)
-- and those of ingest.create_rollup().  Hours before known_from are unknown.
CREATE TABLE ingest.rollup_config (
    event_table regclass NOT NULL,
    name        text NOT NULL,
    dimensions  text[] NOT NULL DEFAULT '{}',
    known_from  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- set while the rollup is being built: the creating transaction, and
    -- the next xid when a fold first saw it committed
    building_xid xid8,
    building_horizon xid8,
    PRIMARY KEY (event_table, name)
);
SELECT pg_catalog.pg_extension_config_dump('ingest.rollup_config', '');
COMMENT ON TABLE ingest.rollup_config IS
    'Hourly rollups of each managed table: "default", and those grouped by property keys (ingest.create_rollup)';
GRANT SELECT ON ingest.rollup_config TO PUBLIC;
