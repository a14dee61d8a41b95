-- Public functions that create, adopt, configure and release event tables.

-- The schema of an unqualified name is the caller's current schema, so the
-- public function resolves it with the caller's search_path (its body names
-- nothing unqualified) before anything runs with search_path pinned.  The
-- table is the caller's, in a schema where the caller may create.
CREATE OR REPLACE FUNCTION ingest.create_event_table(table_name text,
                                          retention interval DEFAULT NULL,
                                          premake integer DEFAULT 3,
                                          time_zone text DEFAULT 'UTC')
RETURNS regclass
LANGUAGE sql SECURITY DEFINER
AS $$
    SELECT ingest_internal.create_event_table(pg_catalog.current_schema(), table_name, retention,
                                              premake, time_zone)
$$;

CREATE OR REPLACE FUNCTION ingest_internal.create_event_table(current_nsp text, table_name text,
                                                             retention interval, premake integer,
                                                             time_zone text)
RETURNS regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts text[];
    nsp   text;
    rel   text;
    tbl   regclass;
    today date;
BEGIN
    IF table_name IS NULL OR premake IS NULL OR time_zone IS NULL THEN
        RAISE EXCEPTION 'table_name, premake and time_zone must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM ingest_internal.check_policy(retention, premake, NULL, time_zone);

    parts := pg_catalog.parse_ident(table_name);
    IF pg_catalog.array_length(parts, 1) = 1 THEN
        nsp := current_nsp;
        rel := parts[1];
        IF nsp IS NULL THEN
            RAISE EXCEPTION 'no schema has been selected to create in'
                USING ERRCODE = 'invalid_schema_name';
        END IF;
    ELSIF pg_catalog.array_length(parts, 1) = 2 THEN
        nsp := parts[1];
        rel := parts[2];
    ELSE
        RAISE EXCEPTION 'improper qualified name (too many dotted names): %', table_name
            USING ERRCODE = 'syntax_error';
    END IF;

    IF nsp = 'pg_temp' OR nsp LIKE 'pg\_temp\_%' THEN
        RAISE EXCEPTION 'table "%" would be a temporary table', rel
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'ingest manages permanent tables only.';
    END IF;
    IF NOT has_schema_privilege(ingest_internal.caller(), nsp, 'CREATE') THEN
        RAISE EXCEPTION 'permission denied for schema %', nsp
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- made by the caller, as their own CREATE TABLE would be
    PERFORM ingest_internal.caller_ddl(pg_catalog.format($ddl$
        CREATE TABLE %I.%I (
            id                   bigint GENERATED ALWAYS AS IDENTITY,
            organization_id      uuid NOT NULL,
            transaction_id       text NOT NULL,
            external_customer_id text NOT NULL,
            code                 text NOT NULL,
            "timestamp"          timestamptz NOT NULL,
            properties           jsonb NOT NULL DEFAULT '{}',
            value                double precision,
            decimal_value        numeric,
            created_at           timestamptz NOT NULL DEFAULT now()
        ) PARTITION BY RANGE ("timestamp")$ddl$, nsp, rel));
    tbl := pg_catalog.format('%I.%I', nsp, rel)::regclass;
    PERFORM ingest_internal.check_shape(tbl);
    -- REPLICA IDENTITY FULL, which each partition made below inherits
    PERFORM ingest_internal.start_replica_identity(tbl);

    INSERT INTO ingest.table_config (event_table, time_zone, retention, premake)
    VALUES (tbl, time_zone, retention, premake);
    INSERT INTO ingest.rollup_config (event_table, name) VALUES (tbl, 'default');
    PERFORM ingest_internal.start_side_tables(tbl);
    PERFORM ingest_internal.add_default_indexes(tbl);
    PERFORM ingest_internal.start_tracking(tbl);

    -- The table is new and invisible to others: make its partitions now.
    today := pg_catalog.timezone(time_zone, pg_catalog.now())::date;
    FOR d IN 0 .. premake LOOP
        PERFORM ingest_internal.create_partition(tbl, today + d);
    END LOOP;
    RETURN tbl;
END
$$;
COMMENT ON FUNCTION ingest.create_event_table(text, interval, integer, text) IS
    'Create an event table partitioned by day in time_zone, with today''s and premake future partitions';

-- Would a trigger (type and name of pg_trigger) fire after ingest's
-- BEFORE INSERT row trigger, which claims the row's key?  The rule of
-- src/tableddl.c, which refuses such a trigger on a managed table.
CREATE OR REPLACE FUNCTION ingest_internal.fires_after_dedup(tgtype int2, tgname name)
RETURNS boolean
LANGUAGE C STRICT IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_fires_after_dedup';

CREATE OR REPLACE FUNCTION ingest.manage_table(tbl regclass,
                                    retention interval DEFAULT NULL,
                                    premake integer DEFAULT 3,
                                    time_zone text DEFAULT 'UTC')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    partman boolean;
    bad     text;
BEGIN
    IF tbl IS NOT NULL THEN
        PERFORM ingest_internal.require_owner(tbl);
    END IF;
    IF tbl IS NULL OR premake IS NULL OR time_zone IS NULL THEN
        RAISE EXCEPTION 'tbl, premake and time_zone must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- the table's usage view goes next to it, which the caller's own
    -- CREATE VIEW could not do without CREATE on the schema
    IF NOT has_schema_privilege(ingest_internal.caller(),
                                (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = tbl),
                                'CREATE') THEN
        RAISE EXCEPTION 'permission denied for schema %',
              (SELECT n.nspname FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl)
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'ingest.manage_table() makes the table''s usage view in its schema.';
    END IF;
    PERFORM ingest_internal.check_policy(retention, premake, NULL, time_zone);
    -- What adoption reads (partitions, triggers, stored keys) must be what
    -- is there once the table is locked: a snapshot older than the lock
    -- could miss a partition made meanwhile, which would then get no
    -- triggers.
    PERFORM ingest_internal.require_read_committed('ingest.manage_table()');
    -- Writers wait from here until the triggers are in place, and no other
    -- DDL changes what is checked below: a row stored meanwhile would miss
    -- the ledger and the rollups.  SHARE ROW EXCLUSIVE (parent first, then
    -- partitions, as INSERT locks them), which CREATE TRIGGER takes anyway,
    -- so readers go on; ACCESS EXCLUSIVE at once where the replica identity
    -- is to change below, so that the lock is never upgraded (a reader
    -- that then writes would deadlock with the upgrade).  Two adoptions of
    -- one table queue here.
    PERFORM ingest_internal.lock_or_fail(tbl,
        CASE WHEN ingest_internal.may_set_identity(tbl) THEN 'access exclusive'
             ELSE 'share row exclusive' END);
    PERFORM ingest_internal.require_owner(tbl);
    PERFORM ingest_internal.check_shape(tbl);
    PERFORM ingest_internal.refuse_citus(tbl, 'manage table');
    -- A replica identity that every partition shares and new ones inherit.
    -- ACCESS EXCLUSIVE on the table and on each partition that changes,
    -- once, at adoption (the worker never alters a live partition).
    PERFORM ingest_internal.start_replica_identity(tbl);
    IF EXISTS (SELECT 1 FROM ingest.table_config c WHERE c.event_table = tbl) THEN
        RAISE EXCEPTION 'table "%" is already managed by ingest', tbl
            USING ERRCODE = 'duplicate_object';
    END IF;
    -- partitions and triggers ingest can follow, before any work
    PERFORM ingest_internal.refuse_untrackable(p.relid) FROM pg_catalog.pg_partition_tree(tbl) p;

    partman := ingest_internal.partman_manages(tbl);
    IF partman THEN
        RAISE NOTICE 'table "%" is managed by pg_partman', tbl
            USING DETAIL = 'pg_partman keeps creating and dropping its partitions; ingest''s dedup, loader, index phases and closing of days still apply.';
    ELSE
        SELECT pg_catalog.string_agg(b.partition::text, ', ' ORDER BY b.lower_bound) INTO bad
          FROM ingest_internal.bounds b
         WHERE b.relid = tbl
           AND (b.lower_bound IS NULL OR b.upper_bound IS NULL
                OR b.lower_bound <> ingest_internal.day_start(
                       pg_catalog.timezone(time_zone, b.lower_bound)::date, time_zone)
                OR b.upper_bound <> ingest_internal.day_start(
                       pg_catalog.timezone(time_zone, b.lower_bound)::date + 1, time_zone));
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION 'table "%" has partitions that are not whole days in time zone "%"',
                tbl, time_zone
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = pg_catalog.format('Partitions: %s.', bad);
        END IF;
    END IF;

    INSERT INTO ingest.table_config (event_table, time_zone, retention, premake, managed_by)
    VALUES (tbl, time_zone, retention, premake,
            CASE WHEN partman THEN 'pg_partman' ELSE 'ingest' END);
    -- From now on every write path deduplicates, against the stored rows
    -- too, and feeds the hourly rollup, which starts with the stored rows.
    INSERT INTO ingest.rollup_config (event_table, name) VALUES (tbl, 'default');
    PERFORM ingest_internal.start_side_tables(tbl);
    PERFORM ingest_internal.start_tracking(tbl);
END
$$;
COMMENT ON FUNCTION ingest.manage_table(regclass, interval, integer, text) IS
    'Adopt an existing table partitioned by day on "timestamp"; maintenance creates its missing partitions';

-- A table's lock by OID, for functions that must not lock another table
-- of the same name (src/managed.c).
CREATE OR REPLACE FUNCTION ingest_internal.lock_table(tbl oid, wait boolean,
                                                     mode text DEFAULT 'access share')
RETURNS boolean
LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_lock_table';

-- A table's fold lock, to the end of the transaction (src/tablelock.c):
-- out of reach of SQL's advisory lock functions.  Without wait, false when
-- it is held.
CREATE OR REPLACE FUNCTION ingest_internal.lock_fold(tbl oid, wait boolean)
RETURNS boolean
LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_lock_fold';

-- For a function that reads, once it holds a table's lock, what others
-- may have changed while it waited: a REPEATABLE READ or SERIALIZABLE
-- snapshot is older than the wait and would not see it.
CREATE OR REPLACE FUNCTION ingest_internal.require_read_committed(caller text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '% must run in a READ COMMITTED transaction', caller
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Run it in its own transaction, or SET TRANSACTION ISOLATION LEVEL READ COMMITTED first.';
    END IF;
END
$$;

-- The same, waiting, for a table that must still be there (42P01 if it was
-- dropped meanwhile).  Taken before the table's name goes into a statement:
-- the name is then this table's, not a newcomer's that took it during the
-- wait.  What was checked before the wait (ownership, the configuration)
-- is the caller's to check again.
CREATE OR REPLACE FUNCTION ingest_internal.lock_or_fail(tbl oid, mode text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    name text := (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
                    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.oid = tbl);
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'table with OID % does not exist', tbl
            USING ERRCODE = 'undefined_table';
    END IF;
    IF NOT ingest_internal.lock_table(tbl, true, mode) THEN
        RAISE EXCEPTION 'table % was dropped while waiting for its lock', name
            USING ERRCODE = 'undefined_table';
    END IF;
END
$$;

-- A managed table locked for management function "caller": by OID, then
-- its owner and configuration (and whatever else the caller reads) as they
-- are under the lock, in a READ COMMITTED transaction.
CREATE OR REPLACE FUNCTION ingest_internal.lock_managed(tbl regclass, mode text, caller text)
RETURNS ingest.table_config
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ingest_internal.require_read_committed(caller);
    PERFORM ingest_internal.lock_or_fail(tbl, mode);
    PERFORM ingest_internal.require_owner(tbl);
    RETURN ingest_internal.require_managed(tbl);
END
$$;

CREATE OR REPLACE FUNCTION ingest.configure(tbl regclass,
                                 retention interval DEFAULT NULL,
                                 premake integer DEFAULT NULL,
                                 retention_action text DEFAULT NULL,
                                 on_error text DEFAULT NULL,
                                 rollup_retention interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tbl IS NOT NULL THEN
        PERFORM ingest_internal.require_owner(tbl);
    END IF;
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'tbl must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- A zero retention means "keep forever"; NULL leaves it unchanged.
    PERFORM ingest_internal.check_policy(NULLIF(retention, interval '0'), premake,
                                         retention_action, NULL);
    IF rollup_retention IS NOT NULL AND rollup_retention <> interval '0'
       AND rollup_retention < interval '1 day' THEN
        RAISE EXCEPTION 'rollup_retention must be at least one day'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF on_error IS NOT NULL AND on_error NOT IN ('reject', 'abort') THEN
        RAISE EXCEPTION 'unrecognized on_error "%"', on_error
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "reject" or "abort".';
    END IF;
    -- the shards of a distributed table took these at distribution
    IF (configure.on_error IS NOT NULL OR configure.rollup_retention IS NOT NULL)
       AND ingest_internal.on_citus(tbl) THEN
        RAISE EXCEPTION 'cannot change on_error or rollup_retention of table "%": it is distributed by Citus', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Each node keeps the values its shards had when ingest.distribute_table() ran.';
    END IF;
    UPDATE ingest.table_config c
       SET retention = CASE WHEN configure.retention IS NULL THEN c.retention
                            ELSE NULLIF(configure.retention, interval '0') END,
           premake = COALESCE(configure.premake, c.premake),
           retention_action = COALESCE(configure.retention_action, c.retention_action),
           on_error = COALESCE(configure.on_error, c.on_error),
           rollup_retention = CASE WHEN configure.rollup_retention IS NULL THEN c.rollup_retention
                                   ELSE NULLIF(configure.rollup_retention, interval '0') END
     WHERE c.event_table = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table "%" is not managed by ingest', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Use ingest.create_event_table() or ingest.manage_table() first.';
    END IF;
END
$$;
COMMENT ON FUNCTION ingest.configure(regclass, interval, integer, text, text, interval) IS
    'Change the policy of a managed table; NULL leaves a setting unchanged, retention => ''0'' keeps data forever';

CREATE OR REPLACE FUNCTION ingest.unmanage_table(tbl regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ingest_internal.require_owner(tbl);
    PERFORM ingest_internal.require_managed(tbl);
    -- The lock that dropping the triggers takes, first: a fold or a load
    -- in progress finishes before any of the table's state is touched
    -- (taken later, it would deadlock with a fold writing that state).
    PERFORM ingest_internal.lock_managed(tbl, 'access exclusive', 'ingest.unmanage_table()');
    -- Citus passes a LOCK TABLE on to the workers; the name, formatted
    -- under the lock, is this table's.
    IF ingest_internal.citus_holds(tbl) THEN
        EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tbl);
    END IF;
    PERFORM ingest_internal.forget_table(tbl);
END
$$;
COMMENT ON FUNCTION ingest.unmanage_table(regclass) IS
    'Stop managing a table: its partitions and rows stay, its key ledger, rollups and rejects go';

-- Keep the configuration in step with DROP TABLE: a dropped table's state
-- goes with it.  SECURITY DEFINER so that a user's DROP never fails on our
-- bookkeeping.
CREATE OR REPLACE FUNCTION ingest_internal.on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t oid;
BEGIN
    FOR t IN SELECT c.event_table::oid FROM ingest.table_config c
               JOIN pg_catalog.pg_event_trigger_dropped_objects() d
                 ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
                AND d.objid = c.event_table::oid
    LOOP
        PERFORM ingest_internal.forget_table(t);
    END LOOP;
    DELETE FROM ingest_internal.retired r
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = r.partition_oid;
    DELETE FROM ingest_internal.partition_closed x
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = x.partition_oid;
END
$$;
