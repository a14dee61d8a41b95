-- Partition lifecycle policy: shapes, bounds, the maintenance plan and the
-- steps that carry it out.  The worker (src/maintenance.c) calls these; so
-- does ingest.run_maintenance(dry_run => true), so both see one plan.

-- A partition's bounds (pg_class.relpartbound) as values: read from the
-- node, not from its text, which DateStyle and TimeZone shape (NULL for
-- MINVALUE, MAXVALUE, the default partition and other keys than one
-- timestamptz column; all NULL for a relation that is no partition).  In
-- ingest_side, executable by everyone: the view ingest.partitions calls it
-- for its caller, and it shows only what pg_class shows anyone.
CREATE OR REPLACE FUNCTION ingest_side.partition_bounds(rel oid, OUT lower_bound timestamptz,
                                                       OUT upper_bound timestamptz, OUT is_default boolean)
RETURNS record
LANGUAGE C STRICT STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'ingest_partition_bounds';
GRANT EXECUTE ON FUNCTION ingest_side.partition_bounds(oid) TO PUBLIC;

-- Every partition of every partitioned table, with its range bounds.
CREATE OR REPLACE VIEW ingest_internal.bounds AS
SELECT i.inhparent AS relid,
       i.inhrelid AS partition_oid,
       i.inhrelid::pg_catalog.regclass AS partition,
       b.lower_bound,
       b.upper_bound,
       b.is_default,
       i.inhdetachpending AS detach_pending
  FROM pg_catalog.pg_inherits i
  LEFT JOIN LATERAL ingest_side.partition_bounds(i.inhrelid) b ON true;

-- Start of a calendar day in a time zone: local midnight, so DST days are
-- 23 or 25 hours long.
CREATE OR REPLACE FUNCTION ingest_internal.day_start(d date, tz text)
RETURNS timestamptz
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.timezone(tz, d::pg_catalog.timestamp) $$;

-- Name of the partition for a day: <table>_pYYYYMMDD, the table name cut so
-- the whole fits in NAMEDATALEN.
CREATE OR REPLACE FUNCTION ingest_internal.partition_name(tbl regclass, d date)
RETURNS text
LANGUAGE plpgsql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    base text;
BEGIN
    SELECT c.relname INTO base FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    -- cut by bytes, not characters: multibyte names must not collide
    WHILE octet_length(base) > 53 LOOP
        base := left(base, -1);
    END LOOP;
    RETURN base || '_p' || to_char(d, 'YYYYMMDD');
END
$$;

-- Check policy arguments; NULL means "not given" for each of them.
CREATE OR REPLACE FUNCTION ingest_internal.check_policy(retention interval, premake integer,
                                             retention_action text, time_zone text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF premake IS NOT NULL AND (premake < 0 OR premake > 365) THEN
        RAISE EXCEPTION 'premake must be between 0 and 365, not %', premake
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retention IS NOT NULL AND retention < interval '1 day' THEN
        RAISE EXCEPTION 'retention must be at least one day'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = pg_catalog.format('Retention %s was given.', retention);
    END IF;
    IF retention_action IS NOT NULL AND retention_action NOT IN ('drop', 'detach') THEN
        RAISE EXCEPTION 'unrecognized retention_action "%"', retention_action
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "drop" or "detach".';
    END IF;
    IF time_zone IS NOT NULL THEN
        -- raises 22023 "time zone ... not recognized" for an unknown zone
        PERFORM pg_catalog.timezone(time_zone, pg_catalog.now());
    END IF;
END
$$;

-- Check that a table has the shape ingest manages: range-partitioned on a
-- timestamptz column "timestamp", with the billing-event columns.
CREATE OR REPLACE FUNCTION ingest_internal.check_shape(tbl regclass)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind     "char";
    strat    "char";
    keycols  int2vector;
    keytype  oid;
    keyname  name;
    col      record;
    found_t  oid;
    gen      "char";
    coll     oid;
BEGIN
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF kind IS DISTINCT FROM 'p' THEN
        RAISE EXCEPTION 'table "%" is not partitioned', tbl
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'ingest manages tables partitioned by range on a timestamptz column "timestamp".';
    END IF;

    SELECT p.partstrat, p.partattrs INTO strat, keycols
      FROM pg_catalog.pg_partitioned_table p WHERE p.partrelid = tbl;
    SELECT a.attname, a.atttypid INTO keyname, keytype
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attnum = keycols[0];
    IF strat <> 'r' OR pg_catalog.array_length(keycols::int2[], 1) <> 1
       OR keyname IS DISTINCT FROM 'timestamp'
       OR keytype IS DISTINCT FROM 'pg_catalog.timestamptz'::regtype THEN
        RAISE EXCEPTION 'table "%" is not partitioned by range on a timestamptz column "timestamp"', tbl
            USING ERRCODE = 'wrong_object_type';
    END IF;

    FOR col IN
        SELECT * FROM (VALUES
            ('organization_id', 'pg_catalog.uuid'::regtype),
            ('transaction_id', 'pg_catalog.text'),
            ('external_customer_id', 'pg_catalog.text'),
            ('code', 'pg_catalog.text'),
            ('timestamp', 'pg_catalog.timestamptz'),
            ('properties', 'pg_catalog.jsonb'),
            ('value', 'pg_catalog.float8'),
            ('decimal_value', 'pg_catalog.numeric'),
            ('created_at', 'pg_catalog.timestamptz')) AS r(attname, atttype)
    LOOP
        found_t := NULL;
        gen := NULL;
        SELECT a.atttypid, a.attgenerated, a.attcollation INTO found_t, gen, coll
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attname = col.attname AND NOT a.attisdropped;
        IF found_t IS NULL THEN
            RAISE EXCEPTION 'table "%" has no column "%"', tbl, col.attname
                USING ERRCODE = 'undefined_column';
        ELSIF found_t <> col.atttype THEN
            RAISE EXCEPTION 'column "%" of table "%" has type %, not %',
                col.attname, tbl, found_t::regtype, col.atttype
                USING ERRCODE = 'datatype_mismatch';
        ELSIF gen <> '' THEN
            RAISE EXCEPTION 'column "%" of table "%" is a generated column', col.attname, tbl
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'ingest deduplicates and rolls up on the values events arrive with.';
        ELSIF EXISTS (SELECT FROM pg_catalog.pg_collation c WHERE c.oid = coll AND NOT c.collisdeterministic) THEN
            -- the ledger and the loader's rollup feed compare bytes, SQL's
            -- GROUP BY would compare by the collation: the two would split
            RAISE EXCEPTION 'column "%" of table "%" has a nondeterministic collation', col.attname, tbl
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'ingest deduplicates and rolls up on the bytes of its text columns.',
                      HINT = 'Give the column a deterministic collation, such as "C" or "default".';
        END IF;
    END LOOP;
    -- a temporary table goes with its session, its configuration would not
    IF (SELECT c.relpersistence FROM pg_catalog.pg_class c WHERE c.oid = tbl) = 't' THEN
        RAISE EXCEPTION 'table "%" is a temporary table', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'ingest manages permanent tables only.';
    END IF;
END
$$;

-- Whether pg_partman 4.x/5.x has this table in its part_config.
CREATE OR REPLACE FUNCTION ingest_internal.partman_manages(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nsp    name;
    plain  text;
    result boolean;
BEGIN
    SELECT n.nspname INTO nsp
      FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_partman';
    IF nsp IS NULL THEN
        RETURN false;
    END IF;
    SELECT n.nspname || '.' || c.relname INTO plain
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl;
    EXECUTE pg_catalog.format(
        'SELECT EXISTS (SELECT 1 FROM %I.part_config WHERE parent_table IN ($1, $2))', nsp)
       INTO result USING plain, tbl::text;
    RETURN result;
END
$$;

-- The instant before which a table's retention retires a day (its days and
-- months, across DST), or NULL when it keeps everything.
CREATE OR REPLACE FUNCTION ingest_internal.retention_cutoff(cfg ingest.table_config, at timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.timezone(cfg.time_zone, pg_catalog.timezone(cfg.time_zone, at) - cfg.retention)
$$;

-- Make the partition for one day: a standalone table, then ATTACH, which
-- takes only SHARE UPDATE EXCLUSIVE on the parent (CREATE TABLE ... PARTITION
-- OF would take ACCESS EXCLUSIVE and queue every loader behind it).  NULL
-- when a partition covering the day was made while its lock was waited for.
CREATE OR REPLACE FUNCTION ingest_internal.create_partition(tbl regclass, d date)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tz    text;
    nsp   name;
    part  text;
    citus_triggers text := pg_catalog.current_setting('citus.enable_unsafe_triggers', true);
BEGIN
    -- the lock ATTACH takes, by OID first: the table's name below is then
    -- this table's, not a newcomer's
    PERFORM ingest_internal.lock_or_fail(tbl, 'share update exclusive');
    part := ingest_internal.partition_name(tbl, d);
    SELECT c.time_zone INTO tz FROM ingest.table_config c WHERE c.event_table = tbl;
    IF tz IS NULL THEN
        RAISE EXCEPTION 'table "%" is not managed by ingest', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF EXISTS (SELECT 1 FROM ingest_internal.bounds b
                WHERE b.relid = tbl AND NOT b.is_default
                  AND b.lower_bound < ingest_internal.day_start(d + 1, tz)
                  AND b.upper_bound > ingest_internal.day_start(d, tz)) THEN
        RETURN NULL;
    END IF;
    SELECT n.nspname INTO nsp
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl;

    -- as the table's owner, who needs CREATE on its schema
    PERFORM ingest_internal.owner_ddl(tbl, pg_catalog.format(
        'CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
        'INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS)',
        nsp, part, tbl));
    PERFORM ingest_internal.create_always_indexes(tbl, pg_catalog.format('%I.%I', nsp, part)::regclass);
    PERFORM ingest_internal.track_relation(pg_catalog.format('%I.%I', nsp, part)::regclass);
    -- Citus distributes a partition attached to a table it distributes,
    -- and refuses one with triggers (ingest's act on their own shard and
    -- its colocated side tables) unless this is on, as the worker has it
    IF citus_triggers IS NOT NULL THEN
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    END IF;
    PERFORM ingest_internal.owner_ddl(tbl, pg_catalog.format(
        'ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
        tbl, nsp, part,
        ingest_internal.day_start(d, tz), ingest_internal.day_start(d + 1, tz)));
    IF citus_triggers IS NOT NULL THEN
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', citus_triggers, true);
    END IF;
    -- after ATTACH, which makes the partition's copy of a USING INDEX
    -- index; the table is still this transaction's alone, so its ACCESS
    -- EXCLUSIVE lock blocks no one
    PERFORM ingest_internal.inherit_replica_identity(pg_catalog.format('%I.%I', nsp, part)::regclass);
    RETURN pg_catalog.format('%I.%I', nsp, part);
END
$$;

-- Replica identity, for logical replication (README: "Streaming events
-- out").  PostgreSQL keeps it per relation: ALTER TABLE ... REPLICA
-- IDENTITY on a partitioned table does not reach its partitions, and a new
-- partition starts with DEFAULT, which without a primary key makes the
-- first published UPDATE or DELETE on it fail (55000).  So every partition
-- ingest sees made (the worker's, create_partitions', CREATE TABLE ...
-- PARTITION OF and ATTACH by hand, pg_partman's) takes its parent's setting.

-- Give a partition its parent's replica identity; for USING INDEX, the
-- partition's index attached to the parent's.  True when it changed.  ALTER
-- TABLE ... REPLICA IDENTITY takes ACCESS EXCLUSIVE on the partition:
-- callers do it on new partitions, or at adoption, or when asked to.
CREATE OR REPLACE FUNCTION ingest_internal.inherit_replica_identity(part regclass)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent oid;
    want   "char";
    have   "char";
    idx    name;
BEGIN
    SELECT i.inhparent INTO parent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = part;
    IF parent IS NULL THEN
        RETURN false;
    END IF;
    SELECT c.relreplident INTO want FROM pg_catalog.pg_class c WHERE c.oid = parent;
    SELECT c.relreplident INTO have FROM pg_catalog.pg_class c WHERE c.oid = part;
    IF want = 'i' THEN
        SELECT ic.relname INTO idx
          FROM pg_catalog.pg_index pi
          JOIN pg_catalog.pg_inherits ii ON ii.inhparent = pi.indexrelid
          JOIN pg_catalog.pg_index ci ON ci.indexrelid = ii.inhrelid
          JOIN pg_catalog.pg_class ic ON ic.oid = ci.indexrelid
         WHERE pi.indrelid = parent AND pi.indisreplident AND ci.indrelid = part
           AND NOT ci.indisreplident;
        IF idx IS NULL THEN
            RETURN false;       -- it has it already (or no such index yet)
        END IF;
        PERFORM ingest_internal.owner_ddl(part, pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY USING INDEX %I', part, idx));
        RETURN true;
    END IF;
    IF have = want THEN
        RETURN false;
    END IF;
    PERFORM ingest_internal.owner_ddl(part, pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY %s', part,
                              CASE want WHEN 'f' THEN 'FULL' WHEN 'n' THEN 'NOTHING'
                                        ELSE 'DEFAULT' END));
    RETURN true;
END
$$;

-- Every partition of a managed table takes the table's replica identity,
-- in partition order (the order DDL on the table locks them).
CREATE OR REPLACE FUNCTION ingest_internal.propagate_replica_identity(tbl regclass)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part    regclass;
    changed integer := 0;
BEGIN
    FOR part IN SELECT i.inhrelid::regclass FROM pg_catalog.pg_inherits i
                 WHERE i.inhparent = tbl ORDER BY i.inhrelid LOOP
        IF ingest_internal.inherit_replica_identity(part) THEN
            changed := changed + 1;
        END IF;
    END LOOP;
    RETURN changed;
END
$$;

-- At creation, adoption and upgrade: a table left at DEFAULT with no
-- primary key has no replica identity at all; billing events have no
-- unique key of their own (dedup is the key ledger's), so it gets FULL:
-- the old row in full is the identity.  A setting of the owner's (FULL,
-- NOTHING, USING INDEX, or DEFAULT over a primary key) is kept.  Then the
-- partitions follow.  ACCESS EXCLUSIVE on the table and on each partition
-- that changes, held to the end of the caller's transaction.
CREATE OR REPLACE FUNCTION ingest_internal.start_replica_identity(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF ingest_internal.wants_full_identity(tbl) THEN
        PERFORM ingest_internal.owner_ddl(tbl, pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY FULL', tbl));
    END IF;
    PERFORM ingest_internal.propagate_replica_identity(tbl);
END
$$;

-- The rule of start_replica_identity: DEFAULT with no primary key.
CREATE OR REPLACE FUNCTION ingest_internal.wants_full_identity(tbl regclass)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.relreplident = 'd'
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                            WHERE i.indrelid = c.oid AND i.indisprimary)
      FROM pg_catalog.pg_class c WHERE c.oid = tbl
$$;

-- Might start_replica_identity alter the table or a partition (ACCESS
-- EXCLUSIVE)?  True when it will, or may (an identity USING INDEX).
CREATE OR REPLACE FUNCTION ingest_internal.may_set_identity(tbl regclass)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ingest_internal.wants_full_identity(tbl)
        OR c.relreplident = 'i'
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i
                     JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid
                    WHERE i.inhparent = tbl AND p.relreplident <> c.relreplident)
      FROM pg_catalog.pg_class c WHERE c.oid = tbl
$$;

-- Record that a partition is being retired, before DETACH ... CONCURRENTLY
-- starts (committed separately by the worker).  Its stale hours are
-- recomputed first, while its raw events are there: from the detach on,
-- its rollup hours stay as they are.
CREATE OR REPLACE FUNCTION ingest_internal.mark_retiring(part oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ingest_internal.fold(b.relid, true) FROM ingest_internal.bounds b
     WHERE b.partition_oid = part;
    -- on Citus the nodes fold their shards: the day waits for their folds
    PERFORM ingest_internal.require_folded(b.relid, part, b.lower_bound, b.upper_bound)
       FROM ingest_internal.bounds b
      WHERE b.partition_oid = part AND ingest_internal.on_citus(b.relid);
    INSERT INTO ingest_internal.retired (partition_oid, relid, partition, lower_bound, upper_bound)
    SELECT b.partition_oid, b.relid, b.partition::text, b.lower_bound, b.upper_bound
      FROM ingest_internal.bounds b
     WHERE b.partition_oid = part
    ON CONFLICT (partition_oid) DO NOTHING;
END
$$;

-- Finish a DETACH ... CONCURRENTLY that was interrupted (lock timeout, crash).
CREATE OR REPLACE FUNCTION ingest_internal.finalize_detach(part oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent oid;
BEGIN
    SELECT i.inhparent INTO parent FROM pg_catalog.pg_inherits i
     WHERE i.inhrelid = part AND i.inhdetachpending;
    IF parent IS NOT NULL THEN
        -- the lock the FINALIZE takes, by OID first; then still pending?
        PERFORM ingest_internal.lock_or_fail(parent, 'share update exclusive');
        SELECT i.inhparent INTO parent FROM pg_catalog.pg_inherits i
         WHERE i.inhrelid = part AND i.inhdetachpending;
    END IF;
    IF parent IS NULL THEN
        RAISE EXCEPTION 'partition % has no pending detach', part
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- retention's own DDL, which forget_keys follows (a FINALIZE by hand
    -- is followed by it in the hook)
    PERFORM ingest_internal.retire_ddl(parent, pg_catalog.format('ALTER TABLE %s DETACH PARTITION %s FINALIZE',
                                                                 parent::regclass, part::regclass));
    PERFORM ingest_internal.forget_keys(parent, part);
END
$$;

-- Retire a partition of a table Citus distributes, where Citus refuses
-- DETACH ... CONCURRENTLY: a plain DETACH, which holds ACCESS EXCLUSIVE on
-- the parent (on every node) until the worker's transaction commits, and
-- waits at most lock_timeout for it on every node.
CREATE OR REPLACE FUNCTION ingest_internal.detach_locking(part oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent oid;
BEGIN
    SELECT i.inhparent INTO parent FROM pg_catalog.pg_inherits i
     WHERE i.inhrelid = part AND NOT i.inhdetachpending;
    IF parent IS NULL THEN
        RAISE EXCEPTION 'partition % is not attached', part
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM ingest_internal.set_local_everywhere('lock_timeout', current_setting('lock_timeout'));
    PERFORM ingest_internal.retire_ddl(parent, pg_catalog.format('ALTER TABLE %s DETACH PARTITION %s',
                                                                 parent::regclass, part::regclass));
    PERFORM ingest_internal.forget_keys(parent, part);
END
$$;

-- SET LOCAL a setting here and on the Citus nodes the transaction uses.
-- Citus passes a SET LOCAL on when it runs in a function that a statement
-- called (citus.propagate_set_commands = local).  No SET clause: it would
-- undo the SET LOCAL when the function returns.
CREATE OR REPLACE FUNCTION ingest_internal.set_local_everywhere(setting text, value text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'citus') THEN
        PERFORM pg_catalog.set_config('citus.propagate_set_commands', 'local', true);
    END IF;
    EXECUTE pg_catalog.format('SET LOCAL %I = %L', setting, value);
END
$$;

-- Drop a retired partition once it is detached: a standalone table, so the
-- DROP takes no lock on the parent.
CREATE OR REPLACE FUNCTION ingest_internal.drop_retired(part oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    locked boolean := false;
BEGIN
    -- Locked by OID, so that the name DROP TABLE is given is this table's;
    -- not while attached (its loaders would queue behind the lock), and
    -- still detached once locked.  Gone already: nothing left to drop.
    FOR i IN 1..2 LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = part) THEN
            RAISE EXCEPTION 'partition "%" is still attached', part::regclass
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        EXIT WHEN i = 2;
        locked := ingest_internal.lock_table(part, true, 'access exclusive');
    END LOOP;
    IF locked THEN
        PERFORM ingest_internal.owner_ddl(part, pg_catalog.format('DROP TABLE %s', part::regclass));
    END IF;
    DELETE FROM ingest_internal.retired WHERE partition_oid = part;
END
$$;

-- The maintenance plan for one table at instant "at": what the worker will
-- do, in order.  Pure: it reads the catalogs and changes nothing.
CREATE OR REPLACE FUNCTION ingest_internal.plan(tbl regclass, at timestamptz, max_retire integer)
RETURNS TABLE(event_table regclass, action text, partition text,
              partition_oid oid, day date, detail text, arg text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg      ingest.table_config;
    today    date;
    first    date;
    missed   date;
    cutoff   timestamptz;
    newest   timestamptz;
    lo       timestamptz;
    hi       timestamptz;
    r        record;
    retiring integer := 0;
    excess   integer := 0;
    d        record;
    closing  oid;
    cstep    text;
BEGIN
    SELECT * INTO cfg FROM ingest.table_config c WHERE c.event_table = tbl;
    -- a Citus shard's partitions and indexes are its coordinator's to make
    IF NOT FOUND OR cfg.managed_by = 'citus_shard' THEN
        RETURN;
    END IF;
    event_table := tbl;
    cutoff := ingest_internal.retention_cutoff(cfg, at);

    -- pg_partman makes and retires this table's partitions; indexes and
    -- closing days (5, 6) are still ours.
    IF cfg.managed_by = 'ingest' THEN

    -- 1. Finish detaches that were interrupted.
    FOR r IN SELECT b.* FROM ingest_internal.bounds b
              WHERE b.relid = tbl AND b.detach_pending ORDER BY b.lower_bound
    LOOP
        action := 'finalize'; partition := r.partition::text;
        partition_oid := r.partition_oid; day := NULL;
        detail := 'finish an interrupted DETACH PARTITION CONCURRENTLY';
        RETURN NEXT;
    END LOOP;

    -- 2. Create today and premake days ahead, and catch up days missed
    -- since the newest partition (server down), unless past retention:
    -- those of the last 31 days.  Older ones are left to the owner
    -- (ingest.create_partitions), with a warning: a table whose newest day
    -- is years back (its owner attached it so) holds up no other's run.
    today := pg_catalog.timezone(cfg.time_zone, at)::date;
    SELECT max(b.upper_bound) INTO newest FROM ingest_internal.bounds b
     WHERE b.relid = tbl AND NOT b.is_default AND NOT b.detach_pending;
    first := today;
    IF newest IS NOT NULL THEN
        first := LEAST(today, pg_catalog.timezone(cfg.time_zone, newest)::date);
    END IF;
    IF cutoff IS NOT NULL THEN
        missed := GREATEST(first, pg_catalog.timezone(cfg.time_zone, cutoff)::date);
    ELSE
        missed := first;
    END IF;
    IF missed < today - 31 THEN
        action := 'warning'; partition := NULL; partition_oid := NULL; day := NULL;
        detail := pg_catalog.format('days %s to %s are missing, more than 31 days back: '
                                    'make them with ingest.create_partitions()',
                                    pg_catalog.to_char(missed, 'YYYY-MM-DD'),
                                    pg_catalog.to_char(today - 32, 'YYYY-MM-DD'));
        RETURN NEXT;
    END IF;
    FOR day IN SELECT g::date
                 FROM pg_catalog.generate_series(GREATEST(first, today - 31)::timestamp,
                                                 (today + cfg.premake)::timestamp, interval '1 day') g LOOP
        lo := ingest_internal.day_start(day, cfg.time_zone);
        hi := ingest_internal.day_start(day + 1, cfg.time_zone);
        CONTINUE WHEN cutoff IS NOT NULL AND hi <= cutoff;
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM ingest_internal.bounds b
             WHERE b.relid = tbl AND NOT b.is_default
               AND b.lower_bound < hi AND b.upper_bound > lo);
        action := 'create';
        partition := pg_catalog.format('%I.%I',
                        (SELECT n.nspname FROM pg_catalog.pg_class c
                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                          WHERE c.oid = tbl),
                        ingest_internal.partition_name(tbl, day));
        partition_oid := NULL;
        detail := pg_catalog.format('[%s, %s)', lo, hi);
        RETURN NEXT;
    END LOOP;

    -- 3. Retire partitions whose whole range is older than the cutoff,
    -- oldest first, at most max_retire of them.
    IF cutoff IS NOT NULL THEN
        FOR r IN SELECT b.* FROM ingest_internal.bounds b
                  WHERE b.relid = tbl AND NOT b.is_default AND NOT b.detach_pending
                    AND b.upper_bound <= cutoff
                  ORDER BY b.lower_bound
        LOOP
            IF retiring >= max_retire THEN
                excess := excess + 1;
                CONTINUE;
            END IF;
            retiring := retiring + 1;
            action := 'detach'; partition := r.partition::text;
            partition_oid := r.partition_oid;
            day := pg_catalog.timezone(cfg.time_zone, r.lower_bound)::date;
            detail := pg_catalog.format('[%s, %s) is older than %s', r.lower_bound,
                                        r.upper_bound, cutoff);
            RETURN NEXT;
        END LOOP;
        IF excess > 0 THEN
            action := 'warning'; partition := NULL; partition_oid := NULL; day := NULL;
            detail := pg_catalog.format(
                '%s more partitions are past retention; at most %s are retired per run (ingest.max_drops_per_run)',
                excess, max_retire);
            RETURN NEXT;
        END IF;
    END IF;

    -- 4. Drop detached partitions when the policy says drop, and only
    -- those the retention (as it is now) still retires.
    IF cfg.retention_action = 'drop' AND cutoff IS NOT NULL THEN
        FOR r IN SELECT t.* FROM ingest_internal.retired t
                  WHERE t.relid = tbl AND t.upper_bound <= cutoff
                    AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.partition_oid)
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i
                                     WHERE i.inhrelid = t.partition_oid)
                  ORDER BY t.lower_bound
        LOOP
            action := 'drop'; partition := r.partition_oid::regclass::text;
            partition_oid := r.partition_oid;
            day := pg_catalog.timezone(cfg.time_zone, r.lower_bound)::date;
            detail := 'detached partition is dropped';
            RETURN NEXT;
        END LOOP;
    END IF;
    END IF;							-- managed_by = 'ingest'

    -- 5. Declared indexes by phase: leftovers of interrupted builds and
    -- dropped declarations go; due indexes are built.
    FOR d IN
        SELECT b.partition_oid AS part, b.partition, x.name, x.declared,
               pg_catalog.to_regclass(pg_catalog.format('%I.%I', n.nspname,
                   ingest.partition_index_name(b.partition_oid, x.name))) AS idx,
               x.phase = 'always'
                 OR b.upper_bound + ingest_internal.close_delay() <= at AS due
          FROM ingest_internal.bounds b
          JOIN pg_catalog.pg_class pc ON pc.oid = b.partition_oid
          JOIN pg_catalog.pg_namespace n ON n.oid = pc.relnamespace
          CROSS JOIN (SELECT c.name, c.phase, true AS declared FROM ingest.index_config c
                       WHERE c.event_table = tbl
                      UNION ALL
                      SELECT x.name, NULL, false FROM ingest_internal.index_drops x
                       WHERE x.event_table = tbl) x
         WHERE b.relid = tbl AND NOT b.is_default AND NOT b.detach_pending
           AND (cutoff IS NULL OR b.upper_bound > cutoff)
         ORDER BY b.lower_bound, x.name
    LOOP
        partition_oid := d.part;
        day := NULL;
        IF d.idx IS NOT NULL AND (NOT d.declared OR NOT (SELECT i.indisvalid FROM pg_catalog.pg_index i
                                                         WHERE i.indexrelid = d.idx)) THEN
            action := 'drop_index'; partition := d.idx::text; arg := d.idx::oid::text;
            detail := CASE WHEN d.declared THEN 'invalid index left by an interrupted build'
                           ELSE 'index no longer declared' END;
            RETURN NEXT;
        END IF;
        IF d.declared AND d.due AND (d.idx IS NULL OR NOT (SELECT i.indisvalid FROM pg_catalog.pg_index i
                                                            WHERE i.indexrelid = d.idx)) THEN
            action := 'index'; arg := d.name;
            partition := ingest.partition_index_name(d.part, d.name);
            detail := pg_catalog.format('declared index "%s" on %s', d.name, d.partition);
            RETURN NEXT;
        END IF;
    END LOOP;

    -- 6. Close one day whose closed-phase indexes are all in place:
    -- summarize BRIN ranges, ANALYZE, VACUUM (FREEZE).
    SELECT b.partition_oid INTO closing
      FROM ingest_internal.bounds b
     WHERE b.relid = tbl AND NOT b.is_default AND NOT b.detach_pending
       AND b.upper_bound + ingest_internal.close_delay() <= at
       AND (cutoff IS NULL OR b.upper_bound > cutoff)
       AND (SELECT count(*) FROM ingest_internal.partition_closed pcl
             WHERE pcl.partition_oid = b.partition_oid) < 3
       AND NOT EXISTS (
            SELECT 1 FROM ingest.index_config c
             WHERE c.event_table = tbl
               AND NOT EXISTS (
                    SELECT 1 FROM pg_catalog.pg_index i
                      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                     WHERE i.indrelid = b.partition_oid AND i.indisvalid
                       AND ic.relname = ingest.partition_index_name(b.partition_oid, c.name)))
     ORDER BY b.lower_bound
     LIMIT 1;
    IF closing IS NOT NULL THEN
        FOREACH cstep IN ARRAY ARRAY['summarize', 'analyze', 'freeze'] LOOP
            CONTINUE WHEN EXISTS (SELECT 1 FROM ingest_internal.partition_closed pcl
                                   WHERE pcl.partition_oid = closing AND pcl.step = cstep);
            action := cstep; partition := closing::regclass::text; partition_oid := closing;
            day := NULL; arg := NULL;
            detail := 'closing the day';
            RETURN NEXT;
        END LOOP;
    END IF;
END
$$;

-- Delay before the next attempt after "failures" consecutive failed runs:
-- doubling from the interval, capped at one hour, and tightened to a quarter
-- of the remaining runway of future partitions so that a table about to run
-- out of partitions is retried every interval.
CREATE OR REPLACE FUNCTION ingest_internal.retry_delay(failures integer, interval_s integer,
                                            runway interval)
RETURNS interval
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT GREATEST(
             pg_catalog.make_interval(secs => interval_s),
             LEAST(pg_catalog.make_interval(secs => interval_s * 2.0 ^ LEAST(failures - 1, 20)),
                   interval '1 hour',
                   GREATEST(COALESCE(runway, interval '0'), interval '0') / 4))
$$;

-- Record the outcome of one table's run and schedule its next attempt.
CREATE OR REPLACE FUNCTION ingest_internal.record_outcome(tbl oid, failures integer,
                                               err_state text, err_message text,
                                               interval_s integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n      integer;
    runway interval;
BEGIN
    INSERT INTO ingest_internal.table_state (relid) VALUES (tbl)
    ON CONFLICT (relid) DO NOTHING;
    IF failures = 0 THEN
        UPDATE ingest_internal.table_state
           SET last_run_at = pg_catalog.now(), last_success_at = pg_catalog.now(),
               consecutive_failures = 0, next_attempt_at = NULL
         WHERE relid = tbl;
        RETURN;
    END IF;
    SELECT max(b.upper_bound) - pg_catalog.now() INTO runway
      FROM ingest_internal.bounds b
     WHERE b.relid = tbl AND NOT b.is_default AND NOT b.detach_pending;
    UPDATE ingest_internal.table_state s
       SET last_run_at = pg_catalog.now(), last_error_at = pg_catalog.now(),
           last_sqlstate = err_state, last_error = err_message,
           consecutive_failures = s.consecutive_failures + 1,
           next_attempt_at = pg_catalog.now() +
               ingest_internal.retry_delay(s.consecutive_failures + 1, interval_s, runway)
     WHERE s.relid = tbl;
END
$$;

-- One row of the maintenance log.
CREATE OR REPLACE FUNCTION ingest_internal.log(run_id bigint, tbl oid, action text,
                                    partition text, status text,
                                    sqlstate text, message text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO ingest.maintenance_log
        (run_id, event_table, relid, action, partition, status, sqlstate, message)
    VALUES (run_id, tbl::pg_catalog.regclass::pg_catalog.text,
            tbl, action, partition, status, sqlstate, message)
$$;
