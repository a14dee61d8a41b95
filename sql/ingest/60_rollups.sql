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
