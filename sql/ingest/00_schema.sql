-- ingest extension script, built from the fragments under sql/ingest/ in
-- the order the Makefile lists them.

\echo Use "CREATE EXTENSION ingest" to load this file. \quit

-- Internals live in their own schema; nothing in it is granted to PUBLIC.
CREATE SCHEMA ingest_internal;
REVOKE ALL ON SCHEMA ingest_internal FROM PUBLIC;

-- Policy per managed table.  Dumped by pg_dump: it is user configuration.
-- The table is stored as regclass so that a dump restores it by name.
CREATE TABLE ingest.table_config (
    event_table      regclass PRIMARY KEY,
    time_zone        text NOT NULL DEFAULT 'UTC',
    retention        interval,
    premake          integer NOT NULL DEFAULT 3 CHECK (premake >= 0),
    retention_action text NOT NULL DEFAULT 'drop'
                     CHECK (retention_action IN ('drop', 'detach')),
    managed_by       text NOT NULL DEFAULT 'ingest'
                     CHECK (managed_by IN ('ingest', 'pg_partman')),
    on_error         text NOT NULL DEFAULT 'reject'
                     CHECK (on_error IN ('reject', 'abort')),
    rollup_retention interval,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('ingest.table_config', '');
COMMENT ON TABLE ingest.table_config IS
    'Partition policy of each table managed by ingest; change it with ingest.configure()';

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
COMMENT ON TABLE ingest.maintenance_log IS
    'Every partition maintenance action and failure, with its SQLSTATE; trimmed by age (ingest.log_retention)';
