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
-- Partition lifecycle policy: shapes, bounds, the maintenance plan and the
-- steps that carry it out.  The worker (src/maintenance.c) calls these; so
-- does ingest.run_maintenance(dry_run => true), so both see one plan.

-- Every partition of every partitioned table, with its range bounds parsed
-- back from the catalog (NULL for MINVALUE/MAXVALUE and the default).
CREATE VIEW ingest_internal.bounds AS
SELECT i.inhparent AS relid,
       i.inhrelid AS partition_oid,
       i.inhrelid::pg_catalog.regclass AS partition,
       m.b[1]::pg_catalog.timestamptz AS lower_bound,
       m.b[2]::pg_catalog.timestamptz AS upper_bound,
       pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' AS is_default,
       i.inhdetachpending AS detach_pending
  FROM pg_catalog.pg_inherits i
  JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
  LEFT JOIN LATERAL pg_catalog.regexp_match(
        pg_catalog.pg_get_expr(c.relpartbound, c.oid),
        '^FOR VALUES FROM \(''([^'']*)''\) TO \(''([^'']*)''\)$') AS m(b) ON true;

-- Start of a calendar day in a time zone: local midnight, so DST days are
-- 23 or 25 hours long.
CREATE FUNCTION ingest_internal.day_start(d date, tz text)
RETURNS timestamptz
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.timezone(tz, d::pg_catalog.timestamp) $$;

-- Name of the partition for a day: <table>_pYYYYMMDD, the table name cut so
-- the whole fits in NAMEDATALEN.
CREATE FUNCTION ingest_internal.partition_name(tbl regclass, d date)
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
CREATE FUNCTION ingest_internal.check_policy(retention interval, premake integer,
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
CREATE FUNCTION ingest_internal.check_shape(tbl regclass)
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
        SELECT a.atttypid INTO found_t
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attname = col.attname AND NOT a.attisdropped;
        IF found_t IS NULL THEN
            RAISE EXCEPTION 'table "%" has no column "%"', tbl, col.attname
                USING ERRCODE = 'undefined_column';
        ELSIF found_t <> col.atttype THEN
            RAISE EXCEPTION 'column "%" of table "%" has type %, not %',
                col.attname, tbl, found_t::regtype, col.atttype
                USING ERRCODE = 'datatype_mismatch';
        END IF;
    END LOOP;
END
$$;

-- Whether pg_partman 4.x/5.x has this table in its part_config.
CREATE FUNCTION ingest_internal.partman_manages(tbl regclass)
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

-- Make the partition for one day: a standalone table, then ATTACH, which
-- takes only SHARE UPDATE EXCLUSIVE on the parent (CREATE TABLE ... PARTITION
-- OF would take ACCESS EXCLUSIVE and queue every loader behind it).
CREATE FUNCTION ingest_internal.create_partition(tbl regclass, d date)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tz    text;
    nsp   name;
    owner name;
    part  text := ingest_internal.partition_name(tbl, d);
BEGIN
    SELECT c.time_zone INTO tz FROM ingest.table_config c WHERE c.event_table = tbl;
    IF tz IS NULL THEN
        RAISE EXCEPTION 'table "%" is not managed by ingest', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT n.nspname, pg_catalog.pg_get_userbyid(c.relowner) INTO nsp, owner
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl;

    EXECUTE pg_catalog.format(
        'CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
        'INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS)',
        nsp, part, tbl);
    IF owner IS DISTINCT FROM current_user THEN
        EXECUTE pg_catalog.format('ALTER TABLE %I.%I OWNER TO %I', nsp, part, owner);
    END IF;
    PERFORM ingest_internal.create_always_indexes(tbl, pg_catalog.format('%I.%I', nsp, part)::regclass);
    EXECUTE pg_catalog.format(
        'ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
        tbl, nsp, part,
        ingest_internal.day_start(d, tz), ingest_internal.day_start(d + 1, tz));
    RETURN pg_catalog.format('%I.%I', nsp, part);
END
$$;

-- Record that a partition is being retired, before DETACH ... CONCURRENTLY
-- starts (committed separately by the worker).
CREATE FUNCTION ingest_internal.mark_retiring(part oid)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO ingest_internal.retired (partition_oid, relid, partition, lower_bound, upper_bound)
    SELECT b.partition_oid, b.relid, b.partition::text, b.lower_bound, b.upper_bound
      FROM ingest_internal.bounds b
     WHERE b.partition_oid = part
    ON CONFLICT (partition_oid) DO NOTHING
$$;

-- Finish a DETACH ... CONCURRENTLY that was interrupted (lock timeout, crash).
CREATE FUNCTION ingest_internal.finalize_detach(part oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent oid;
BEGIN
    SELECT i.inhparent INTO parent FROM pg_catalog.pg_inherits i
     WHERE i.inhrelid = part AND i.inhdetachpending;
    IF parent IS NULL THEN
        RAISE EXCEPTION 'partition % has no pending detach', part
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    EXECUTE pg_catalog.format('ALTER TABLE %s DETACH PARTITION %s FINALIZE',
                              parent::regclass, part::regclass);
    PERFORM ingest_internal.forget_keys(parent, part);
END
$$;

-- Drop a retired partition once it is detached: a standalone table, so the
-- DROP takes no lock on the parent.
CREATE FUNCTION ingest_internal.drop_retired(part oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = part) THEN
        RAISE EXCEPTION 'partition "%" is still attached', part::regclass
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    EXECUTE pg_catalog.format('DROP TABLE %s', part::regclass);
    DELETE FROM ingest_internal.retired WHERE partition_oid = part;
END
$$;

-- The maintenance plan for one table at instant "at": what the worker will
-- do, in order.  Pure: it reads the catalogs and changes nothing.
CREATE FUNCTION ingest_internal.plan(tbl regclass, at timestamptz, max_retire integer)
RETURNS TABLE(event_table regclass, action text, partition text,
              partition_oid oid, day date, detail text, arg text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg      ingest.table_config;
    today    date;
    first    date;
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
    IF NOT FOUND THEN
        RETURN;
    END IF;
    event_table := tbl;
    IF cfg.retention IS NOT NULL THEN
        -- days and months of retention are the table's days, across DST
        cutoff := pg_catalog.timezone(cfg.time_zone,
                                      pg_catalog.timezone(cfg.time_zone, at) - cfg.retention);
    END IF;

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
    -- since the newest partition (server down), unless past retention.
    today := pg_catalog.timezone(cfg.time_zone, at)::date;
    SELECT max(b.upper_bound) INTO newest FROM ingest_internal.bounds b
     WHERE b.relid = tbl AND NOT b.is_default AND NOT b.detach_pending;
    first := today;
    IF newest IS NOT NULL THEN
        first := LEAST(today, pg_catalog.timezone(cfg.time_zone, newest)::date);
    END IF;
    FOR d IN 0 .. (today + cfg.premake) - first LOOP
        day := first + d;
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

    -- 4. Drop detached partitions when the policy says drop.
    IF cfg.retention_action = 'drop' THEN
        FOR r IN SELECT t.* FROM ingest_internal.retired t
                  WHERE t.relid = tbl
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
            action := 'drop_index'; partition := d.idx::text; arg := d.idx::text;
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
CREATE FUNCTION ingest_internal.retry_delay(failures integer, interval_s integer,
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
CREATE FUNCTION ingest_internal.record_outcome(tbl oid, failures integer,
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
CREATE FUNCTION ingest_internal.log(run_id bigint, tbl oid, action text,
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
-- Public functions that create, adopt, configure and release event tables.

CREATE FUNCTION ingest.create_event_table(table_name text,
                                          retention interval DEFAULT NULL,
                                          premake integer DEFAULT 3,
                                          time_zone text DEFAULT 'UTC')
RETURNS regclass
LANGUAGE plpgsql
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
        nsp := pg_catalog.current_schema();
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

    EXECUTE pg_catalog.format($ddl$
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
        ) PARTITION BY RANGE ("timestamp")$ddl$, nsp, rel);
    tbl := pg_catalog.format('%I.%I', nsp, rel)::regclass;

    INSERT INTO ingest.table_config (event_table, time_zone, retention, premake)
    VALUES (tbl, time_zone, retention, premake);
    PERFORM ingest_internal.start_dedup(tbl);
    PERFORM ingest_internal.start_rollups(tbl);
    PERFORM ingest_internal.add_default_indexes(tbl);

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

CREATE FUNCTION ingest.manage_table(tbl regclass,
                                    retention interval DEFAULT NULL,
                                    premake integer DEFAULT 3,
                                    time_zone text DEFAULT 'UTC')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    partman boolean;
    bad     text;
BEGIN
    IF tbl IS NULL OR premake IS NULL OR time_zone IS NULL THEN
        RAISE EXCEPTION 'tbl, premake and time_zone must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM ingest_internal.check_policy(retention, premake, NULL, time_zone);
    PERFORM ingest_internal.check_shape(tbl);
    IF EXISTS (SELECT 1 FROM ingest.table_config c WHERE c.event_table = tbl) THEN
        RAISE EXCEPTION 'table "%" is already managed by ingest', tbl
            USING ERRCODE = 'duplicate_object';
    END IF;

    partman := ingest_internal.partman_manages(tbl);
    IF partman THEN
        RAISE NOTICE 'table "%" is managed by pg_partman', tbl
            USING DETAIL = 'pg_partman keeps creating and dropping its partitions; ingest''s dedup, loader, index phases and closing of days still apply.';
    ELSE
        IF EXISTS (SELECT 1 FROM ingest_internal.bounds b
                    WHERE b.relid = tbl AND b.is_default) THEN
            RAISE EXCEPTION 'table "%" has a default partition', tbl
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'ingest attaches and detaches partitions concurrently, which PostgreSQL refuses while a default partition exists.',
                      HINT = 'Move the rows of the default partition into day partitions and detach it.';
        END IF;
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
    PERFORM ingest_internal.start_dedup(tbl);
    PERFORM ingest_internal.start_rollups(tbl);
END
$$;
COMMENT ON FUNCTION ingest.manage_table(regclass, interval, integer, text) IS
    'Adopt an existing table partitioned by day on "timestamp"; maintenance creates its missing partitions';

CREATE FUNCTION ingest.configure(tbl regclass,
                                 retention interval DEFAULT NULL,
                                 premake integer DEFAULT NULL,
                                 retention_action text DEFAULT NULL,
                                 on_error text DEFAULT NULL,
                                 rollup_retention interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
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

CREATE FUNCTION ingest.unmanage_table(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM ingest.table_config c WHERE c.event_table = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table "%" is not managed by ingest', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    DELETE FROM ingest_internal.table_state s WHERE s.relid = tbl;
    DELETE FROM ingest_internal.retired r WHERE r.relid = tbl;
    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS ingest_dedup ON %s', tbl);
    DELETE FROM ingest_internal.event_keys k WHERE k.relid = tbl;
    DELETE FROM ingest.index_config c WHERE c.event_table = tbl;
    DELETE FROM ingest_internal.index_drops x WHERE x.event_table = tbl;
    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS ingest_rollup ON %s', tbl);
    EXECUTE pg_catalog.format('DROP VIEW IF EXISTS %I.%I',
        (SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = tbl),
        pg_catalog.left((SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = tbl), 49) || '_usage_hourly');
    DELETE FROM ingest_internal.rollup_hours r WHERE r.relid = tbl;
    DELETE FROM ingest_internal.rollup_deltas d WHERE d.relid = tbl;
    DELETE FROM ingest.rollup_config rc WHERE rc.event_table = tbl;
END
$$;
COMMENT ON FUNCTION ingest.unmanage_table(regclass) IS
    'Stop all maintenance of a table; its partitions and rows stay as they are';

-- Keep the configuration in step with DROP TABLE.  SECURITY DEFINER so that
-- a user's DROP never fails on our bookkeeping.
CREATE FUNCTION ingest_internal.on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text;
BEGIN
    DELETE FROM ingest.table_config c
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.event_table::oid;
    DELETE FROM ingest_internal.table_state s
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = s.relid;
    DELETE FROM ingest_internal.retired r
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass
       AND d.objid IN (r.partition_oid, r.relid);
    DELETE FROM ingest_internal.event_keys k
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
       AND d.objid = k.relid;
    DELETE FROM ingest.index_config c
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.event_table::oid;
    DELETE FROM ingest_internal.index_drops x
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = x.event_table::oid;
    DELETE FROM ingest_internal.partition_closed x
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = x.partition_oid;
    DELETE FROM ingest_internal.rollup_hours r
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0 AND d.objid = r.relid;
    -- the usage view of a dropped table goes with it
    FOR v IN SELECT format('%I.%I', w.schemaname, w.viewname)
               FROM pg_catalog.pg_event_trigger_dropped_objects() d
               JOIN pg_catalog.pg_views w
                 ON w.schemaname = d.schema_name
                AND w.viewname = left(d.object_name, 49) || '_usage_hourly'
              WHERE d.object_type = 'table'
                AND w.definition LIKE '%ingest_internal.rollup_hours%'
    LOOP
        EXECUTE 'DROP VIEW IF EXISTS ' || v;
    END LOOP;
    DELETE FROM ingest_internal.rollup_deltas r
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0 AND d.objid = r.relid;
    DELETE FROM ingest.rollup_config r
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0 AND d.objid = r.event_table::oid;
END
$$;
-- Only commands that can drop tables: the worker's DROP INDEX CONCURRENTLY
-- must not run SQL after its internal commits.
CREATE EVENT TRIGGER ingest_sql_drop ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION ingest_internal.on_sql_drop();
-- Maintenance by hand: the same code the background worker runs.

CREATE FUNCTION ingest.run_maintenance(tbl regclass DEFAULT NULL,
                                       dry_run boolean DEFAULT false)
RETURNS TABLE(event_table regclass, action text, partition text, detail text)
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'ingest_run_maintenance';
COMMENT ON FUNCTION ingest.run_maintenance(regclass, boolean) IS
    'Run partition maintenance now (one table, or all when NULL) and return its actions; dry_run returns the plan without acting';

-- Views: policy and health per table, and every partition.

CREATE VIEW ingest.partitions AS
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

CREATE VIEW ingest.event_tables AS
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
       s.last_error,
       COALESCE(s.consecutive_failures, 0) AS consecutive_failures,
       s.next_attempt_at
  FROM ingest.table_config c
  LEFT JOIN LATERAL (
        SELECT pg_catalog.count(*) AS partitions,
               pg_catalog.min(v.day) AS oldest_day,
               pg_catalog.max(v.day) AS newest_day
          FROM ingest.partitions v
         WHERE v.event_table = c.event_table AND v.state = 'attached') p ON true
  LEFT JOIN ingest_internal.table_state s ON s.relid = c.event_table;
COMMENT ON VIEW ingest.event_tables IS
    'Managed tables: policy, partition count, oldest and newest day, last successful maintenance and last error';

GRANT USAGE ON SCHEMA ingest TO PUBLIC;
GRANT SELECT ON ingest.event_tables, ingest.partitions, ingest.maintenance_log,
                ingest.table_config TO PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ingest_internal FROM PUBLIC;
-- The bulk loader: key ledger, rejects, ingest.load, and the INSERT trigger.

-- One row per stored event key, written in the event's transaction.  The
-- "C" collation makes the index order the order the loader sorts keys in.
CREATE TABLE ingest_internal.event_keys (
    relid           oid NOT NULL,
    organization_id uuid NOT NULL,
    transaction_id  text COLLATE "C" NOT NULL,
    payload_hash    bigint NOT NULL,
    PRIMARY KEY (relid, organization_id, transaction_id)
) WITH (autovacuum_vacuum_insert_threshold = -1);
-- Only index probes read the ledger, so vacuums for inserts buy nothing but
-- a scan of the whole ledger each time it grows by a fifth, competing with
-- the loaders.  Retention's deletes still trigger vacuum; freezing is left
-- to anti-wraparound vacuum.

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
    'Rows the loader set aside (kind rejected) and duplicates whose payload differed from the stored event (kind conflict)';
-- Everyone sees the rejects of the tables they can read.
ALTER TABLE ingest.rejects ENABLE ROW LEVEL SECURITY;
CREATE POLICY rejects_readable ON ingest.rejects FOR SELECT
    USING (pg_catalog.has_table_privilege(event_table, 'SELECT'));
GRANT SELECT ON ingest.rejects TO PUBLIC;

CREATE FUNCTION ingest_internal.payload_hash(record)
RETURNS bigint
LANGUAGE C STRICT STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_payload_hash';

CREATE FUNCTION ingest_internal.dedup_row()
RETURNS trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_dedup_row';

-- Give a table the dedup trigger and put its stored events in the ledger.
CREATE FUNCTION ingest_internal.start_dedup(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER ingest_dedup BEFORE INSERT ON %s '
        'FOR EACH ROW EXECUTE FUNCTION ingest_internal.dedup_row()', tbl);
    EXECUTE pg_catalog.format(
        'INSERT INTO ingest_internal.event_keys '
        'SELECT $1, t.organization_id, t.transaction_id, ingest_internal.payload_hash(t) '
        '  FROM %s t ORDER BY 2, 3 ON CONFLICT DO NOTHING', tbl) USING tbl;
END
$$;

-- Forget the keys of a retired partition: its day is set aside from now on.
CREATE FUNCTION ingest_internal.forget_keys(tbl oid, part oid)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE pg_catalog.format(
        'DELETE FROM ingest_internal.event_keys k USING %s p '
        ' WHERE k.relid = $1 AND k.organization_id = p.organization_id '
        '   AND k.transaction_id = p.transaction_id COLLATE "C"', part::regclass)
      USING tbl;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE FUNCTION ingest.load(tbl regclass, data text, format text DEFAULT 'csv',
                            header boolean DEFAULT false, columns text[] DEFAULT NULL,
                            on_error text DEFAULT NULL)
RETURNS TABLE(loaded bigint, duplicates bigint, rejected bigint, conflicts bigint)
LANGUAGE C CALLED ON NULL INPUT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_load_text';
COMMENT ON FUNCTION ingest.load(regclass, text, text, boolean, text[], text) IS
    'Load csv, text or jsonl events with exact (organization_id, transaction_id) dedup; bad rows go to ingest.rejects';

CREATE FUNCTION ingest.load(tbl regclass, data bytea, format text DEFAULT 'csv',
                            header boolean DEFAULT false, columns text[] DEFAULT NULL,
                            on_error text DEFAULT NULL)
RETURNS TABLE(loaded bigint, duplicates bigint, rejected bigint, conflicts bigint)
LANGUAGE C CALLED ON NULL INPUT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_load_bytea';
COMMENT ON FUNCTION ingest.load(regclass, bytea, text, boolean, text[], text) IS
    'Load events from bytes in the database encoding (csv, text or jsonl), like ingest.load(regclass, text, ...)';

CREATE FUNCTION ingest.load_file(tbl regclass, path text, format text DEFAULT 'csv',
                                 header boolean DEFAULT false, columns text[] DEFAULT NULL,
                                 on_error text DEFAULT NULL)
RETURNS TABLE(loaded bigint, duplicates bigint, rejected bigint, conflicts bigint)
LANGUAGE C CALLED ON NULL INPUT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_load_file';
COMMENT ON FUNCTION ingest.load_file(regclass, text, text, boolean, text[], text) IS
    'Load events from a server-side file (members of pg_read_server_files), like ingest.load';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ingest_internal FROM PUBLIC;
-- Index management: indexes declared once per table, applied to each
-- partition by phase.  "always" indexes exist on every partition from its
-- creation; "closed" ones are built when the partition's day has closed,
-- in one sorted pass (CREATE INDEX CONCURRENTLY, run by the worker).

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

-- Name of a declared index on one partition: <partition>_<name>, with a
-- hash suffix when that would not fit in NAMEDATALEN.
CREATE FUNCTION ingest.partition_index_name(part regclass, name text)
RETURNS text
LANGUAGE plpgsql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    base text;
BEGIN
    SELECT c.relname || '_' || name INTO base FROM pg_catalog.pg_class c WHERE c.oid = part;
    IF octet_length(base) <= 63 THEN
        RETURN base;
    END IF;
    name := substr(md5(base), 1, 8);
    WHILE octet_length(base) > 54 LOOP
        base := left(base, -1);
    END LOOP;
    RETURN base || '_' || name;
END
$$;
COMMENT ON FUNCTION ingest.partition_index_name(regclass, text) IS
    'Name of the index that a declared index of a table has on one of its partitions';

-- Seconds after its day's end at which a partition is closed.
CREATE FUNCTION ingest_internal.close_delay()
RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT make_interval(secs => COALESCE(
        (SELECT setting::int FROM pg_settings WHERE name = 'ingest.close_delay'), 3600))
$$;

-- CREATE INDEX for a declared index on a relation (a partition, or a scratch
-- table to check the declaration).  Column entries are names, or
-- parenthesized expressions.
CREATE FUNCTION ingest_internal.index_ddl(rel regclass, index_name text, columns text[],
                                          method text, where_clause text,
                                          with_options text, concurrent boolean)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('CREATE INDEX %s%I ON %s USING %s (%s)%s%s',
                  CASE WHEN concurrent THEN 'CONCURRENTLY ' ELSE '' END,
                  index_name, rel, method,
                  (SELECT string_agg(CASE WHEN c LIKE '(%' THEN c ELSE quote_ident(c) END, ', '
                                     ORDER BY o)
                     FROM unnest(columns) WITH ORDINALITY AS u(c, o)),
                  CASE WHEN with_options IS NOT NULL THEN ' WITH (' || with_options || ')' ELSE '' END,
                  CASE WHEN where_clause IS NOT NULL THEN ' WHERE ' || where_clause ELSE '' END)
$$;

-- The CREATE INDEX CONCURRENTLY statement the worker runs for one index of
-- one partition.
CREATE FUNCTION ingest_internal.partition_index_ddl(part oid, name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ingest_internal.index_ddl(part::regclass,
                                     ingest.partition_index_name(part, d.name),
                                     d.columns, d.method, d.where_clause, d.with_options, true)
      FROM ingest.index_config d
      JOIN pg_catalog.pg_inherits i ON i.inhparent = d.event_table::oid
     WHERE i.inhrelid = part AND d.name = partition_index_ddl.name
$$;

-- The "always" indexes of a new partition, made before it is attached.
CREATE FUNCTION ingest_internal.create_always_indexes(tbl regclass, part regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ingest.index_config;
BEGIN
    FOR d IN SELECT * FROM ingest.index_config c
              WHERE c.event_table = tbl AND c.phase = 'always' ORDER BY c.name
    LOOP
        EXECUTE ingest_internal.index_ddl(part, ingest.partition_index_name(part, d.name),
                                          d.columns, d.method, d.where_clause, d.with_options, false);
    END LOOP;
END
$$;

CREATE FUNCTION ingest.add_index(tbl regclass, columns text[], method text DEFAULT 'btree',
                                 phase text DEFAULT 'closed', where_clause text DEFAULT NULL,
                                 with_options text DEFAULT NULL, name text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    scratch text;
BEGIN
    IF tbl IS NULL OR columns IS NULL OR method IS NULL OR phase IS NULL THEN
        RAISE EXCEPTION 'tbl, columns, method and phase must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ingest.table_config c WHERE c.event_table = tbl) THEN
        RAISE EXCEPTION 'table "%" is not managed by ingest', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Use ingest.create_event_table() or ingest.manage_table() first.';
    END IF;
    IF method NOT IN ('btree', 'brin') THEN
        RAISE EXCEPTION 'index method "%" is not supported', method
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Use "btree" or "brin".';
    END IF;
    IF phase NOT IN ('always', 'closed') THEN
        RAISE EXCEPTION 'unrecognized phase "%"', phase
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "always" or "closed".';
    END IF;
    IF cardinality(columns) = 0 OR array_position(columns, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'columns must name at least one column and no nulls'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF name IS NULL THEN
        name := method || '_' || (SELECT string_agg(regexp_replace(c, '[^a-zA-Z0-9_]+', '', 'g'), '_')
                                    FROM unnest(columns) c);
        name := left(name, 40);
    END IF;
    IF EXISTS (SELECT 1 FROM ingest.index_config c WHERE c.event_table = tbl AND c.name = add_index.name) THEN
        RAISE EXCEPTION 'table "%" already has an index named "%"', tbl, name
            USING ERRCODE = 'duplicate_object';
    END IF;

    -- Check the declaration the way CREATE INDEX itself does, on an empty
    -- scratch copy of the table; nothing is left behind.
    scratch := 'ingest_check_' || pg_backend_pid();
    EXECUTE format('CREATE TEMP TABLE %I (LIKE %s) ON COMMIT DROP', scratch, tbl);
    BEGIN
        EXECUTE ingest_internal.index_ddl(format('pg_temp.%I', scratch)::regclass, 'ingest_check',
                                          columns, method, where_clause, with_options, false);
    EXCEPTION WHEN OTHERS THEN
        EXECUTE format('DROP TABLE pg_temp.%I', scratch);
        RAISE;
    END;
    EXECUTE format('DROP TABLE pg_temp.%I', scratch);

    INSERT INTO ingest.index_config (event_table, name, columns, method, phase, where_clause, with_options)
    VALUES (tbl, name, columns, method, phase, where_clause, with_options);
    DELETE FROM ingest_internal.index_drops d WHERE d.event_table = tbl AND d.name = add_index.name;
    RETURN name;
END
$$;
COMMENT ON FUNCTION ingest.add_index(regclass, text[], text, text, text, text, text) IS
    'Declare a btree or brin index on a managed table, applied to partitions always or once their day has closed';

CREATE FUNCTION ingest.drop_index(tbl regclass, name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM ingest.index_config c WHERE c.event_table = tbl AND c.name = drop_index.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table "%" has no declared index "%"', tbl, name
            USING ERRCODE = 'undefined_object';
    END IF;
    INSERT INTO ingest_internal.index_drops (event_table, name) VALUES (tbl, name)
    ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION ingest.drop_index(regclass, text) IS
    'Remove a declared index; maintenance drops it from every partition (DROP INDEX CONCURRENTLY)';

-- The state of every declared index on every partition.
CREATE VIEW ingest.indexes AS
WITH parts AS (
    SELECT b.relid, b.partition_oid, b.lower_bound, b.upper_bound
      FROM ingest_internal.bounds b
     WHERE NOT b.is_default AND NOT b.detach_pending
), cells AS (
    SELECT d.event_table, d.name, d.method, d.phase, p.partition_oid,
           pg_catalog.to_regclass(pg_catalog.format('%I.%I', n.nspname,
               ingest.partition_index_name(p.partition_oid, d.name))) AS idx,
           d.phase = 'always'
             OR p.upper_bound + pg_catalog.make_interval(secs => COALESCE(
                    (SELECT s.setting::int FROM pg_catalog.pg_settings s
                      WHERE s.name = 'ingest.close_delay'), 3600)) <= pg_catalog.now() AS due
      FROM ingest.index_config d
      JOIN parts p ON p.relid = d.event_table
      JOIN pg_catalog.pg_class pc ON pc.oid = p.partition_oid
      JOIN pg_catalog.pg_namespace n ON n.oid = pc.relnamespace
)
SELECT c.event_table,
       c.name,
       c.partition_oid::regclass AS partition,
       c.method,
       c.phase,
       c.idx AS index,
       CASE
         WHEN i.indisvalid THEN 'present'
         WHEN i.indexrelid IS NOT NULL AND EXISTS (
                SELECT 1 FROM pg_catalog.pg_stat_progress_create_index s
                 WHERE s.index_relid = i.indexrelid) THEN 'building'
         WHEN i.indexrelid IS NOT NULL THEN 'failed'
         WHEN NOT c.due THEN 'deferred'
         WHEN e.status = 'error' THEN 'failed'
         ELSE 'pending'
       END AS status,
       CASE WHEN e.status = 'error' AND (i.indisvalid IS NOT TRUE)
            THEN e.sqlstate || ': ' || e.message END AS error
  FROM cells c
  LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.idx
  LEFT JOIN LATERAL (
        SELECT l.status, l.sqlstate, l.message FROM ingest.maintenance_log l
         WHERE l.relid = c.event_table AND l.action = 'index'
           AND l.partition = ingest.partition_index_name(c.partition_oid, c.name)
         ORDER BY l.id DESC LIMIT 1) e ON true;
COMMENT ON VIEW ingest.indexes IS
    'Each declared index on each partition: present, building, pending, deferred (closed phase, day not closed yet) or failed (with the error)';
GRANT SELECT ON ingest.indexes, ingest.index_config TO PUBLIC;

-- Steps of closing a partition, run by maintenance.
CREATE FUNCTION ingest_internal.close_step(part oid, step text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i regclass;
BEGIN
    IF step = 'summarize' THEN
        FOR i IN SELECT x.indexrelid::regclass FROM pg_index x
                   JOIN pg_class c ON c.oid = x.indexrelid
                   JOIN pg_am a ON a.oid = c.relam
                  WHERE x.indrelid = part AND a.amname = 'brin' AND x.indisvalid
        LOOP
            PERFORM brin_summarize_new_values(i);
        END LOOP;
    ELSIF step = 'analyze' THEN
        EXECUTE format('ANALYZE %s', part::regclass);
    END IF;
    -- "freeze" runs VACUUM at top level before this records it.
    INSERT INTO ingest_internal.partition_closed (partition_oid, step) VALUES (part, step)
    ON CONFLICT DO NOTHING;
END
$$;

-- Forget index drops that no partition needs any more.
CREATE FUNCTION ingest_internal.tidy_index_drops(tbl regclass)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM ingest_internal.index_drops x
     WHERE x.event_table = tbl
       AND NOT EXISTS (
            SELECT 1 FROM pg_inherits i
              JOIN pg_class p ON p.oid = i.inhrelid
              JOIN pg_namespace n ON n.oid = p.relnamespace
             WHERE i.inhparent = tbl
               AND to_regclass(format('%I.%I', n.nspname,
                                      ingest.partition_index_name(i.inhrelid, x.name))) IS NOT NULL)
$$;

-- The default index set of a new event table.
CREATE FUNCTION ingest_internal.add_default_indexes(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ingest.add_index(tbl, ARRAY['timestamp'], 'brin', 'always',
                             with_options => 'autosummarize = on', name => 'brin_timestamp');
    PERFORM ingest.add_index(tbl, ARRAY['organization_id', 'code', 'timestamp'], 'btree', 'closed',
                             name => 'org_code_ts');
    PERFORM ingest.add_index(tbl, ARRAY['external_customer_id', 'timestamp'], 'btree', 'closed',
                             name => 'customer_ts');
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ingest_internal FROM PUBLIC;
-- Hourly usage rollups, exact at every snapshot.
--
-- Every write path appends pre-aggregated deltas, one row per (organization,
-- code, customer, hour) its rows touched, in its own transaction: the loader
-- from C, INSERT and plain COPY through a statement trigger.  One folder at
-- a time merges committed deltas into rollup_hours, deleting them in the
-- same statement.  A reader adds folded rows and unfolded deltas in one
-- statement, so any snapshot sees each event exactly once.  Loaders only
-- append, so they never wait on the folder or on each other.

-- The rollups of each table: "default" (no dimensions, made with the table)
-- and those of ingest.create_rollup().  Hours before known_from are unknown.
CREATE TABLE ingest.rollup_config (
    event_table regclass NOT NULL,
    name        text NOT NULL,
    dimensions  text[] NOT NULL DEFAULT '{}',
    known_from  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (event_table, name)
);
SELECT pg_catalog.pg_extension_config_dump('ingest.rollup_config', '');
COMMENT ON TABLE ingest.rollup_config IS
    'Hourly rollups of each managed table: "default", and those grouped by property keys (ingest.create_rollup)';
GRANT SELECT ON ingest.rollup_config TO PUBLIC;

CREATE TABLE ingest_internal.rollup_hours (
    relid                oid NOT NULL,
    rollup               text NOT NULL,
    organization_id      uuid NOT NULL,
    hour                 timestamptz NOT NULL,
    code                 text NOT NULL,
    external_customer_id text NOT NULL,
    dims                 jsonb NOT NULL,
    events               bigint NOT NULL,
    value_sum            numeric,
    decimal_sum          numeric,
    value_min            double precision,
    value_max            double precision,
    latest_value         double precision,
    latest_at            timestamptz NOT NULL,
    latest_tx            text COLLATE "C" NOT NULL,
    PRIMARY KEY (relid, organization_id, hour, rollup, code, external_customer_id, dims)
);

CREATE TABLE ingest_internal.rollup_deltas (LIKE ingest_internal.rollup_hours);
CREATE INDEX ON ingest_internal.rollup_deltas (relid, organization_id, hour);

-- The dimensions of an event for a rollup: each key's value, JSON null for
-- a missing key or JSON null alike.
CREATE FUNCTION ingest_internal.dims_of(properties jsonb, dimensions text[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(jsonb_object_agg(k, COALESCE(properties -> k, 'null'::jsonb)), '{}'::jsonb)
      FROM unnest(dimensions) k
$$;

-- Rows of a statement's transition table as deltas (INSERT, plain COPY).
-- SECURITY DEFINER: writers need no grants on the internals.
CREATE FUNCTION ingest_internal.rollup_after_insert()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO ingest_internal.rollup_deltas
    SELECT TG_RELID, rc.name, n.organization_id, date_trunc('hour', n."timestamp", 'UTC'),
           n.code, n.external_customer_id, dd.dims, count(*), sum(n.value::numeric),
           sum(n.decimal_value), min(n.value), max(n.value),
           (array_agg(n.value ORDER BY n."timestamp" DESC, n.transaction_id COLLATE "C" DESC))[1],
           max(n."timestamp"),
           (array_agg(n.transaction_id ORDER BY n."timestamp" DESC, n.transaction_id COLLATE "C" DESC))[1]
      FROM ingest_new n
      JOIN ingest.rollup_config rc ON rc.event_table = TG_RELID
     CROSS JOIN LATERAL ingest_internal.dims_of(n.properties, rc.dimensions) dd(dims)
     GROUP BY 2, 3, 4, 5, 6, 7;
    RETURN NULL;
END
$$;

-- Merge committed deltas of a table into the rollup, in one statement.
CREATE FUNCTION ingest_internal.fold(tbl oid)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    -- one folder per table at a time; others skip, loaders never wait
    IF NOT pg_try_advisory_xact_lock(1768843009, tbl::int4) THEN
        RETURN 0;
    END IF;
    WITH moved AS (
        DELETE FROM ingest_internal.rollup_deltas d WHERE d.relid = tbl RETURNING d.*
    ), agg AS (
        SELECT m.relid, m.rollup, m.organization_id, m.hour, m.code, m.external_customer_id, m.dims,
               sum(m.events)::bigint AS events, sum(m.value_sum) AS value_sum,
               sum(m.decimal_sum) AS decimal_sum, min(m.value_min) AS value_min,
               max(m.value_max) AS value_max,
               (array_agg(m.latest_value ORDER BY m.latest_at DESC, m.latest_tx DESC))[1] AS latest_value,
               max(m.latest_at) AS latest_at,
               (array_agg(m.latest_tx ORDER BY m.latest_at DESC, m.latest_tx DESC))[1] AS latest_tx
          FROM moved m
         GROUP BY 1, 2, 3, 4, 5, 6, 7
    )
    INSERT INTO ingest_internal.rollup_hours AS r
    SELECT * FROM agg
    ON CONFLICT (relid, organization_id, hour, rollup, code, external_customer_id, dims) DO UPDATE SET
        events = r.events + excluded.events,
        value_sum = CASE WHEN r.value_sum IS NULL THEN excluded.value_sum
                         WHEN excluded.value_sum IS NULL THEN r.value_sum
                         ELSE r.value_sum + excluded.value_sum END,
        decimal_sum = CASE WHEN r.decimal_sum IS NULL THEN excluded.decimal_sum
                           WHEN excluded.decimal_sum IS NULL THEN r.decimal_sum
                           ELSE r.decimal_sum + excluded.decimal_sum END,
        value_min = LEAST(r.value_min, excluded.value_min),
        value_max = GREATEST(r.value_max, excluded.value_max),
        latest_value = CASE WHEN (excluded.latest_at, excluded.latest_tx) > (r.latest_at, r.latest_tx)
                            THEN excluded.latest_value ELSE r.latest_value END,
        latest_tx = CASE WHEN (excluded.latest_at, excluded.latest_tx) > (r.latest_at, r.latest_tx)
                         THEN excluded.latest_tx ELSE r.latest_tx END,
        latest_at = GREATEST(r.latest_at, excluded.latest_at);
    GET DIAGNOSTICS n = ROW_COUNT;
    -- rollups have their own retention
    DELETE FROM ingest_internal.rollup_hours r
     USING ingest.table_config c
     WHERE c.event_table = tbl AND r.relid = tbl AND c.rollup_retention IS NOT NULL
       AND r.hour < now() - c.rollup_retention;
    RETURN n;
END
$$;

CREATE FUNCTION ingest.fold_rollups(tbl regclass DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    total bigint := 0;
    t     regclass;
BEGIN
    FOR t IN SELECT c.event_table FROM ingest.table_config c
              WHERE tbl IS NULL OR c.event_table = tbl ORDER BY 1
    LOOP
        total := total + ingest_internal.fold(t);
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION ingest.fold_rollups(regclass) IS
    'Merge committed rollup deltas into the hourly rollups now (the worker does it every ingest.rollup_fold_interval); returns the rollup rows written';

-- Aggregated raw events per (key, hour) of [from_ts, to_ts), as rollup rows.
CREATE FUNCTION ingest_internal.raw_hours_sql(tbl regclass, rollup text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        SELECT %s::oid AS relid, %L::text AS rollup, e.organization_id,
               date_trunc('hour', e."timestamp", 'UTC') AS hour, e.code, e.external_customer_id,
               ingest_internal.dims_of(e.properties, %L::text[]) AS dims, count(*)::bigint AS events,
               sum(e.value::numeric) AS value_sum, sum(e.decimal_value) AS decimal_sum,
               min(e.value) AS value_min, max(e.value) AS value_max,
               (array_agg(e.value ORDER BY e."timestamp" DESC, e.transaction_id COLLATE "C" DESC))[1] AS latest_value,
               max(e."timestamp") AS latest_at,
               (array_agg(e.transaction_id COLLATE "C" ORDER BY e."timestamp" DESC, e.transaction_id COLLATE "C" DESC))[1] AS latest_tx
          FROM %s e
         WHERE e."timestamp" >= $1 AND e."timestamp" < $2 AND ($3::uuid IS NULL OR e.organization_id = $3)
         GROUP BY 3, 4, 5, 6, 7$q$, tbl::oid, rollup,
        (SELECT rc.dimensions FROM ingest.rollup_config rc WHERE rc.event_table = tbl AND rc.name = rollup),
        tbl)
$$;

-- The earliest instant whose raw events are still retained.
CREATE FUNCTION ingest_internal.raw_since(tbl regclass)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT min(b.lower_bound) FROM ingest_internal.bounds b
     WHERE b.relid = tbl AND NOT b.is_default AND NOT b.detach_pending
$$;

-- The rows of ingest.usage() (a C function that checks the caller's SELECT
-- privilege, then runs this as the extension owner).
CREATE FUNCTION ingest_internal.usage_rows(tbl regclass, organization_id uuid, from_ts timestamptz,
                                           to_ts timestamptz, code text,
                                           external_customer_id text, rollup text,
                                           granularity text, time_zone text)
RETURNS TABLE(u_code text, u_customer text, u_dimensions jsonb, u_bucket timestamptz,
              u_events bigint, u_value_sum numeric, u_decimal_sum numeric,
              u_value_min double precision, u_value_max double precision,
              u_latest_value double precision, u_latest_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h_from timestamptz;
    h_to   timestamptz;
    since  timestamptz;
    known  timestamptz;
    bucket_expr text;
BEGIN
    IF tbl IS NULL OR organization_id IS NULL OR from_ts IS NULL OR to_ts IS NULL
       OR granularity IS NULL OR time_zone IS NULL THEN
        RAISE EXCEPTION 'tbl, organization_id, from_ts, to_ts, granularity and time_zone must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ingest.table_config c WHERE c.event_table = tbl) THEN
        RAISE EXCEPTION 'table "%" is not managed by ingest', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    rollup := COALESCE(rollup, 'default');
    known := ingest_internal.rollup_known_from(tbl, rollup);
    IF known IS NOT NULL AND from_ts < known THEN
        RAISE EXCEPTION 'rollup "%" is not known before %', rollup, known
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'It was created when raw events were retained from that instant only.';
    END IF;
    IF from_ts >= to_ts THEN
        RAISE EXCEPTION 'from_ts must be before to_ts' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM timezone(time_zone, now());
    bucket_expr := CASE granularity
        WHEN 'total' THEN '$4'
        WHEN 'hour' THEN 's.hour'
        WHEN 'day' THEN 'date_trunc(''day'', s.hour, $5)'
    END;
    IF bucket_expr IS NULL THEN
        RAISE EXCEPTION 'unrecognized granularity "%"', granularity
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use "total", "hour" or "day".';
    END IF;

    -- Whole hours come from the rollup; partial hours at the edges from raw
    -- events, while they are retained.
    h_from := date_trunc('hour', from_ts, 'UTC');
    IF h_from < from_ts THEN
        h_from := h_from + interval '1 hour';
    END IF;
    h_to := GREATEST(date_trunc('hour', to_ts, 'UTC'), h_from);
    since := ingest_internal.raw_since(tbl);
    IF (from_ts < LEAST(h_from, to_ts) OR h_to < to_ts) AND (since IS NULL OR from_ts < since) THEN
        RAISE EXCEPTION 'raw events of the partial hours of this range are no longer retained'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Raw events are retained from %s.', since),
                  HINT = 'Use bounds on whole hours.';
    END IF;

    RETURN QUERY EXECUTE format($q$
        WITH src AS (
            SELECT r.* FROM ingest_internal.rollup_hours r
             WHERE r.relid = $1 AND r.organization_id = $2 AND r.hour >= $6 AND r.hour < $7
               AND r.rollup = $3
            UNION ALL
            SELECT d.* FROM ingest_internal.rollup_deltas d
             WHERE d.relid = $1 AND d.organization_id = $2 AND d.hour >= $6 AND d.hour < $7
               AND d.rollup = $3
            UNION ALL
            SELECT * FROM (%1$s) edge_lo WHERE $4 < LEAST($6, $8)
            UNION ALL
            SELECT * FROM (%2$s) edge_hi WHERE $7 < $8
        )
        SELECT s.code, s.external_customer_id, s.dims, %3$s AS bucket,
               sum(s.events)::bigint, sum(s.value_sum), sum(s.decimal_sum),
               min(s.value_min), max(s.value_max),
               (array_agg(s.latest_value ORDER BY s.latest_at DESC, s.latest_tx DESC))[1],
               max(s.latest_at)
          FROM src s
         WHERE ($9::text IS NULL OR s.code = $9) AND ($10::text IS NULL OR s.external_customer_id = $10)
         GROUP BY 1, 2, 3, 4
         ORDER BY 4, 1, 2, 3$q$,
        replace(replace(replace(ingest_internal.raw_hours_sql(tbl, rollup), '$1', '$4'), '$2', 'LEAST($6, $8)'), '$3', '$2'),
        replace(replace(replace(ingest_internal.raw_hours_sql(tbl, rollup), '$1', '$7'), '$2', '$8'), '$3', '$2'),
        bucket_expr)
    USING tbl::oid, organization_id, rollup, from_ts, time_zone, h_from, h_to, to_ts, code,
          external_customer_id;
END
$$;
CREATE FUNCTION ingest.usage(tbl regclass, organization_id uuid, from_ts timestamptz,
                             to_ts timestamptz, code text DEFAULT NULL,
                             external_customer_id text DEFAULT NULL, rollup text DEFAULT NULL,
                             granularity text DEFAULT 'total', time_zone text DEFAULT 'UTC')
RETURNS TABLE(code text, external_customer_id text, dimensions jsonb, bucket timestamptz,
              events bigint, value_sum numeric, decimal_sum numeric,
              value_min double precision, value_max double precision,
              latest_value double precision, latest_at timestamptz)
LANGUAGE C CALLED ON NULL INPUT STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_usage';
COMMENT ON FUNCTION ingest.usage(regclass, uuid, timestamptz, timestamptz, text, text, text, text, text) IS
    'Usage of one organization in [from_ts, to_ts) by code and customer, per total, hour or day: exact at every snapshot, also after raw partitions are retired';

-- When a rollup's data starts (NULL: from the first event); 42704 for an
-- unknown rollup.
CREATE FUNCTION ingest_internal.rollup_known_from(tbl regclass, rollup text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    known timestamptz;
BEGIN
    SELECT rc.known_from INTO known FROM ingest.rollup_config rc
     WHERE rc.event_table = tbl AND rc.name = rollup;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rollup "%" of table "%" does not exist', rollup, tbl
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN known;
END
$$;

-- The first hour from which a rollup can be checked against raw events:
-- retained, and known to the rollup.  Raises 42704 for an unknown rollup.
CREATE FUNCTION ingest_internal.rollup_horizon(tbl regclass, rollup text, from_ts timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN GREATEST(date_trunc('hour', from_ts, 'UTC'), ingest_internal.raw_since(tbl),
                    ingest_internal.rollup_known_from(tbl, rollup));
END
$$;

-- Every (key, hour, measure) where the rollup (folded plus deltas) and the
-- raw events disagree, for the hours of [from_ts, to_ts) still retained.
CREATE FUNCTION ingest.rollup_verify(tbl regclass, from_ts timestamptz, to_ts timestamptz,
                                     rollup text DEFAULT NULL)
RETURNS TABLE(organization_id uuid, code text, external_customer_id text, dimensions jsonb,
              hour timestamptz, measure text, rollup_value text, raw_value text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lo timestamptz;
BEGIN
    rollup := COALESCE(rollup, 'default');
    lo := ingest_internal.rollup_horizon(tbl, rollup, from_ts);
    RETURN QUERY EXECUTE format($q$
        WITH ro AS (
            SELECT s.organization_id, s.hour, s.code, s.external_customer_id, s.dims,
                   sum(s.events)::bigint AS events, sum(s.value_sum) AS value_sum,
                   sum(s.decimal_sum) AS decimal_sum, min(s.value_min) AS value_min,
                   max(s.value_max) AS value_max,
                   (array_agg(s.latest_value ORDER BY s.latest_at DESC, s.latest_tx DESC))[1] AS latest_value,
                   max(s.latest_at) AS latest_at
              FROM (SELECT * FROM ingest_internal.rollup_hours r WHERE r.relid = $1 AND r.rollup = $5
                    UNION ALL
                    SELECT * FROM ingest_internal.rollup_deltas d WHERE d.relid = $1 AND d.rollup = $5) s
             WHERE s.hour >= $4 AND s.hour < $2
             GROUP BY 1, 2, 3, 4, 5
        ), raw AS (%s)
        SELECT COALESCE(ro.organization_id, raw.organization_id), COALESCE(ro.code, raw.code),
               COALESCE(ro.external_customer_id, raw.external_customer_id), COALESCE(ro.dims, raw.dims),
               COALESCE(ro.hour, raw.hour), m.measure, m.a, m.b
          FROM ro FULL JOIN raw
            ON ro.organization_id = raw.organization_id AND ro.hour = raw.hour
           AND ro.code = raw.code AND ro.external_customer_id = raw.external_customer_id
           AND ro.dims = raw.dims
         CROSS JOIN LATERAL (VALUES
               ('events', ro.events::text, raw.events::text),
               ('value_sum', ro.value_sum::text, raw.value_sum::text),
               ('decimal_sum', ro.decimal_sum::text, raw.decimal_sum::text),
               ('value_min', ro.value_min::text, raw.value_min::text),
               ('value_max', ro.value_max::text, raw.value_max::text),
               ('latest_value', ro.latest_value::text, raw.latest_value::text),
               ('latest_at', ro.latest_at::text, raw.latest_at::text)) AS m(measure, a, b)
         WHERE m.a IS DISTINCT FROM m.b
         ORDER BY 5, 1, 2, 3, 4, 6$q$,
        replace(ingest_internal.raw_hours_sql(tbl, rollup), '$1', '$4'))
    USING tbl::oid, to_ts, NULL::uuid, lo, rollup;
END
$$;
COMMENT ON FUNCTION ingest.rollup_verify(regclass, timestamptz, timestamptz, text) IS
    'Every (key, hour, measure) where the rollup and the raw events disagree in [from_ts, to_ts), for hours whose raw events are retained; empty when exact';

-- Recompute the rollup of the retained hours of [from_ts, to_ts) from raw
-- events, in one statement: deltas and rollup rows of those hours that this
-- snapshot sees go, the raw aggregation this snapshot sees comes in; deltas
-- of loaders still running stay for the folder.
CREATE FUNCTION ingest.rollup_rebuild(tbl regclass, from_ts timestamptz, to_ts timestamptz,
                                      rollup text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lo timestamptz;
    n  bigint;
BEGIN
    rollup := COALESCE(rollup, 'default');
    lo := ingest_internal.rollup_horizon(tbl, rollup, from_ts);
    -- the folder's lock: no fold moves deltas of these hours meanwhile
    PERFORM pg_advisory_xact_lock(1768843009, tbl::oid::int4);
    EXECUTE format($q$
        WITH gone_deltas AS (
            DELETE FROM ingest_internal.rollup_deltas d
             WHERE d.relid = $1 AND d.rollup = $5 AND d.hour >= $4 AND d.hour < $2 RETURNING 1
        ), gone_rollup AS (
            DELETE FROM ingest_internal.rollup_hours r
             WHERE r.relid = $1 AND r.rollup = $5 AND r.hour >= $4 AND r.hour < $2 RETURNING 1
        ), raw AS (%s)
        INSERT INTO ingest_internal.rollup_hours
        SELECT raw.* FROM raw,
               (SELECT count(*) FROM gone_deltas) gd, (SELECT count(*) FROM gone_rollup) gr$q$,
        replace(ingest_internal.raw_hours_sql(tbl, rollup), '$1', '$4'))
    USING tbl::oid, to_ts, NULL::uuid, lo, rollup;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION ingest.rollup_rebuild(regclass, timestamptz, timestamptz, text) IS
    'Recompute the hourly rollup of the retained hours in [from_ts, to_ts) from raw events, safely while loaders run';

CREATE FUNCTION ingest.create_rollup(tbl regclass, name text, dimensions text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    since timestamptz;
BEGIN
    IF tbl IS NULL OR name IS NULL OR dimensions IS NULL THEN
        RAISE EXCEPTION 'tbl, name and dimensions must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ingest.table_config c WHERE c.event_table = tbl) THEN
        RAISE EXCEPTION 'table "%" is not managed by ingest', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF cardinality(dimensions) = 0 OR array_position(dimensions, NULL) IS NOT NULL
       OR (SELECT count(DISTINCT d) FROM unnest(dimensions) d) <> cardinality(dimensions) THEN
        RAISE EXCEPTION 'dimensions must name distinct property keys'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM ingest.rollup_config rc WHERE rc.event_table = tbl AND rc.name = create_rollup.name) THEN
        RAISE EXCEPTION 'rollup "%" of table "%" already exists', name, tbl USING ERRCODE = 'duplicate_object';
    END IF;
    -- Writers started before this rollup existed feed no deltas for it: wait
    -- for them, and hold new ones, while the backfill reads the raw events.
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', tbl);
    since := ingest_internal.raw_since(tbl);
    INSERT INTO ingest.rollup_config (event_table, name, dimensions, known_from)
    VALUES (tbl, name, dimensions, since);
    EXECUTE 'INSERT INTO ingest_internal.rollup_deltas ' || ingest_internal.raw_hours_sql(tbl, name)
      USING '-infinity'::timestamptz, 'infinity'::timestamptz, NULL::uuid;
END
$$;
COMMENT ON FUNCTION ingest.create_rollup(regclass, text, text[]) IS
    'Add an hourly rollup grouped also by property keys, backfilled from the raw events still retained (earlier hours are unknown)';

CREATE FUNCTION ingest.drop_rollup(tbl regclass, name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name = 'default' THEN
        RAISE EXCEPTION 'the default rollup cannot be dropped' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    DELETE FROM ingest.rollup_config rc WHERE rc.event_table = tbl AND rc.name = drop_rollup.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rollup "%" of table "%" does not exist', name, tbl USING ERRCODE = 'undefined_object';
    END IF;
    DELETE FROM ingest_internal.rollup_hours r WHERE r.relid = tbl AND r.rollup = drop_rollup.name;
    DELETE FROM ingest_internal.rollup_deltas d WHERE d.relid = tbl AND d.rollup = drop_rollup.name;
END
$$;
COMMENT ON FUNCTION ingest.drop_rollup(regclass, text) IS
    'Remove a rollup made by ingest.create_rollup() and its data';

-- The rollup triggers and a view of the folded rollup, per table.
CREATE FUNCTION ingest_internal.start_rollups(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nsp  name;
    rel  name;
    view text;
BEGIN
    SELECT n.nspname, c.relname INTO nsp, rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    EXECUTE format('CREATE TRIGGER ingest_rollup AFTER INSERT ON %s REFERENCING NEW TABLE AS ingest_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ingest_internal.rollup_after_insert()', tbl);
    view := left(rel, 49) || '_usage_hourly';
    -- OR REPLACE: the view of an earlier table of this name may remain
    EXECUTE format($v$CREATE OR REPLACE VIEW %I.%I AS
        SELECT rollup, organization_id, hour, code, external_customer_id, dims AS dimensions,
               events, value_sum, decimal_sum, value_min, value_max, latest_value, latest_at
          FROM ingest_internal.rollup_hours
         WHERE relid = pg_catalog.to_regclass(%L)::pg_catalog.oid$v$,
        nsp, view, format('%I.%I', nsp, rel));
    EXECUTE format('COMMENT ON VIEW %I.%I IS %L', nsp, view,
                   'Folded hourly usage of ' || tbl::text || '; exact only together with unfolded deltas: use ingest.usage()');
    EXECUTE format('ALTER VIEW %I.%I OWNER TO %I', nsp, view,
                   (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = tbl));
    INSERT INTO ingest.rollup_config (event_table, name) VALUES (tbl, 'default')
    ON CONFLICT DO NOTHING;
    -- Rows already stored count from the start.
    EXECUTE 'INSERT INTO ingest_internal.rollup_deltas ' || ingest_internal.raw_hours_sql(tbl, 'default')
      USING '-infinity'::timestamptz, 'infinity'::timestamptz, NULL::uuid;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ingest_internal FROM PUBLIC;
