-- Hourly usage rollups, exact at every snapshot.
--
-- Rows added (the loader, INSERT, COPY, MERGE, ATTACH) append
-- pre-aggregated deltas to the table's <name>_deltas, one row per
-- (rollup, organization, hour, code, customer, dimensions), in the writer's
-- transaction.  Rows removed or changed (DELETE, UPDATE, TRUNCATE, DETACH)
-- mark their hours stale in <name>_stale instead: min, max and latest do not
-- subtract.  One folder at a time merges committed deltas into <name>_rollup
-- and recomputes stale hours from the raw events of one snapshot.  A reader
-- takes folded rows and deltas where the hour is not stale, raw events where
-- it is, in one statement, so any snapshot sees each event exactly once.
-- Writers only append, so they never wait on the folder or on each other.
--
-- The fold also keeps <name>_daily, per UTC day, equal to the merge of the
-- day's folded hourly rows, in the transaction that changes them: readers
-- of whole days whose hours are not stale take one row per key and day.

-- The dimensions of an event for a rollup: each key's value, JSON null for
-- a missing key or JSON null alike.
CREATE OR REPLACE FUNCTION ingest_side.dims_of(properties jsonb, dimensions text[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- wider than 400 bytes, the values are grouped by their SHA-256: they
    -- are part of the rollup tables' primary keys, whose B-tree entries have
    -- room for about 2,700 bytes (one wider value stopped every fold)
    SELECT CASE WHEN pg_column_size(s.d) <= 400 THEN s.d
                ELSE jsonb_build_object('sha256', encode(sha256(convert_to(s.d::text, 'UTF8')), 'hex')) END
      FROM (SELECT COALESCE(jsonb_object_agg(k, COALESCE(properties -> k, 'null'::jsonb)), '{}'::jsonb) AS d
              FROM unnest(dimensions) k) s
$$;
GRANT EXECUTE ON FUNCTION ingest_side.dims_of(jsonb, text[]) TO PUBLIC;

-- The rollup arithmetic: rollup rows of the raw events in "src" (a FROM
-- item, aliased e) that satisfy "cond", for every rollup of table $1.  The
-- one definition every feed, check, rebuild and fold uses; the loader's C
-- feed of the default rollup (src/rollup.c) computes the same.
CREATE OR REPLACE FUNCTION ingest_internal.rollup_agg_sql(src text, cond text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        SELECT rc.name AS rollup, e.organization_id,
               pg_catalog.date_trunc('hour', e."timestamp", 'UTC') AS hour,
               e.code, e.external_customer_id,
               ingest_side.dims_of(e.properties, rc.dimensions) AS dims,
               pg_catalog.count(*)::bigint AS events,
               pg_catalog.sum(e.value::pg_catalog.numeric) AS value_sum,
               pg_catalog.sum(e.decimal_value) AS decimal_sum,
               pg_catalog.min(e.value) AS value_min, pg_catalog.max(e.value) AS value_max,
               (pg_catalog.array_agg(e.value ORDER BY e."timestamp" DESC,
                                     e.transaction_id COLLATE "C" DESC))[1] AS latest_value,
               pg_catalog.max(e."timestamp") AS latest_at,
               (pg_catalog.array_agg(e.transaction_id COLLATE "C" ORDER BY e."timestamp" DESC,
                                     e.transaction_id COLLATE "C" DESC))[1] AS latest_tx
          FROM %s e
          JOIN ingest.rollup_config rc ON rc.event_table OPERATOR(pg_catalog.=) $1
         WHERE %s
         GROUP BY 1, 2, 3, 4, 5, 6$q$, src, cond)
$$;

-- A FROM item (alias e) of the rollup rows that query "agg" (rollup_agg_sql
-- over the events of table $1, with parameters $1..$nparams) returns, read
-- as the table's owner: raw events are read with no more privilege than
-- their owner has, and in the caller's snapshot.
CREATE OR REPLACE FUNCTION ingest_internal.owner_agg_sql(agg text, nparams int)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$ingest_internal.owner_query($1, %L, %s) AS e(
               rollup text, organization_id uuid, hour timestamptz, code text,
               external_customer_id text, dims jsonb, events bigint, value_sum numeric,
               decimal_sum numeric, value_min double precision, value_max double precision,
               latest_value double precision, latest_at timestamptz, latest_tx text)$q$,
           agg, (SELECT string_agg('$' || i, ', ' ORDER BY i) FROM generate_series(1, nparams) i))
$$;

-- The merge of rollup rows (alias s) of one key: the measures' select list.
CREATE OR REPLACE FUNCTION ingest_internal.rollup_merge_sql()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT $q$pg_catalog.sum(s.events)::bigint AS events,
               pg_catalog.sum(s.value_sum) AS value_sum,
               pg_catalog.sum(s.decimal_sum) AS decimal_sum,
               pg_catalog.min(s.value_min) AS value_min,
               pg_catalog.max(s.value_max) AS value_max,
               ingest_internal.latest_value(s.latest_value, s.latest_at, s.latest_tx) AS latest_value,
               pg_catalog.max(s.latest_at) AS latest_at,
               ingest_internal.latest_tx(s.latest_value, s.latest_at, s.latest_tx) AS latest_tx$q$
$$;

-- The latest of the merged rows' latest events (src/rollupmerge.c): the
-- greatest (latest_at, latest_tx in the "C" collation), NULLs first, as an
-- array_agg ordered DESC would pick it, without sorting each group.  The
-- two aggregates share one transition state (about 80 bytes, which SSPACE
-- tells the planner so that it may hash the groups); parallel safe, as
-- array_agg, so that scans under them may still be parallel.
CREATE OR REPLACE FUNCTION ingest_internal.latest_trans(internal, double precision, timestamptz, text)
RETURNS internal
LANGUAGE C CALLED ON NULL INPUT IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'ingest_latest_trans';
CREATE OR REPLACE FUNCTION ingest_internal.latest_value_final(internal)
RETURNS double precision
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'ingest_latest_value_final';
CREATE OR REPLACE FUNCTION ingest_internal.latest_tx_final(internal)
RETURNS text
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'ingest_latest_tx_final';
CREATE OR REPLACE AGGREGATE ingest_internal.latest_value(double precision, timestamptz, text) (
    SFUNC = ingest_internal.latest_trans, STYPE = internal, SSPACE = 80,
    FINALFUNC = ingest_internal.latest_value_final, PARALLEL = SAFE);
CREATE OR REPLACE AGGREGATE ingest_internal.latest_tx(double precision, timestamptz, text) (
    SFUNC = ingest_internal.latest_trans, STYPE = internal, SSPACE = 80,
    FINALFUNC = ingest_internal.latest_tx_final, PARALLEL = SAFE);

-- Stale marks of "src" (columns organization_id, NULL for all, lo, hi) as
-- disjoint (org, range) pieces within "retained" (an SQL expression: the
-- whole hours whose raw events are all retained, raw_hours).  Other hours'
-- raw events are retired, so their rollup rows stand as they were: a day
-- retired by the worker, the oldest day dropped or detached by hand, a
-- hole of retired days (raw_ranges).
CREATE OR REPLACE FUNCTION ingest_internal.stale_pieces_sql(src text, retained text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        WITH st AS (
            SELECT x.organization_id AS org, pg_catalog.tstzrange(x.lo, x.hi) AS r
              FROM %1$s x
             WHERE pg_catalog.tstzrange(x.lo, x.hi) OPERATOR(pg_catalog.&&) %2$s
        ), every_org AS (
            SELECT COALESCE(pg_catalog.range_agg(st.r), '{}'::pg_catalog.tstzmultirange)
                       OPERATOR(pg_catalog.*) %2$s AS m
              FROM st WHERE st.org IS NULL
        )
        SELECT NULL::pg_catalog.uuid AS org, pg_catalog.unnest(a.m) AS r FROM every_org a
        UNION ALL
        SELECT o.org, pg_catalog.unnest(o.m) FROM (
            SELECT st.org, (pg_catalog.range_agg(st.r) OPERATOR(pg_catalog.*) %2$s)
                               OPERATOR(pg_catalog.-) (SELECT a.m FROM every_org a) AS m
              FROM st WHERE st.org IS NOT NULL GROUP BY st.org) o$q$, src, retained)
$$;

-- The raw events of table "tbl" in the stale pieces "pieces" (a FROM item
-- of stale_pieces_sql rows), as a FROM item aliased e: every organization's
-- ranges by time; one organization's hours as a hashed set, in one scan of
-- each stretch of hours that some organization's pieces cover, however
-- many organizations an UPDATE or DELETE touched (not one scan from the
-- first marked hour to the last: a correction long ago and one today read
-- every event between them).
CREATE OR REPLACE FUNCTION ingest_internal.stale_events_sql(tbl regclass, pieces text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$(
        SELECT e.* FROM (SELECT p.r FROM %2$s p WHERE p.org IS NULL) p
         CROSS JOIN LATERAL (SELECT e.* FROM %1$s e
                              WHERE e."timestamp" >= lower(p.r) AND e."timestamp" < upper(p.r)) e
        UNION ALL
        SELECT e.* FROM (SELECT pg_catalog.unnest(pg_catalog.range_agg(p.r)) AS r
                           FROM %2$s p WHERE p.org IS NOT NULL) s
         -- OFFSET 0: a scan per stretch (the planner would pull the range
         -- test up into a join filter over one scan of every partition)
         CROSS JOIN LATERAL (SELECT e.* FROM %1$s e
                              WHERE e."timestamp" >= lower(s.r) AND e."timestamp" < upper(s.r) OFFSET 0) e
         WHERE (e.organization_id, pg_catalog.date_trunc('hour', e."timestamp", 'UTC')) IN (
                SELECT p.org, h FROM %2$s p,
                       pg_catalog.generate_series(lower(p.r), upper(p.r) - interval '1 hour', interval '1 hour') h
                 WHERE p.org IS NOT NULL))$q$, tbl, pieces)
$$;

-- The instants whose raw events are retained: from the start of the first
-- partition (not the default one, nor one being detached) on, but for the
-- table's retired holes (table_config.retired) where no partition is now.
-- Before it, events are retired (retention's, or the oldest partition
-- dropped by hand); a partition dropped by hand after it takes its events
-- out, and the rollups follow.
CREATE OR REPLACE FUNCTION ingest_internal.raw_ranges(tbl regclass)
RETURNS tstzmultirange
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.tstzmultirange(pg_catalog.tstzrange(min(b.lower_bound), NULL))
                    OPERATOR(pg_catalog.-)
                    (COALESCE((SELECT c.retired FROM ingest.table_config c WHERE c.event_table = tbl), '{}')
                     OPERATOR(pg_catalog.-)
                     pg_catalog.range_agg(pg_catalog.tstzrange(b.lower_bound, b.upper_bound))),
                    '{}')
      FROM ingest_internal.bounds b
     WHERE b.relid = tbl AND NOT b.is_default AND NOT b.detach_pending
$$;

-- The earliest instant whose raw events are still retained.
CREATE OR REPLACE FUNCTION ingest_internal.raw_since(tbl regclass)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lower(ingest_internal.raw_ranges(tbl))
$$;

-- The whole UTC hours whose raw events are all retained: raw_ranges, each
-- range cut to the whole hours in it.
CREATE OR REPLACE FUNCTION ingest_internal.raw_hours(tbl regclass)
RETURNS tstzmultirange
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.range_agg(pg_catalog.tstzrange(h.lo, h.hi)), '{}')
      FROM pg_catalog.unnest(ingest_internal.raw_ranges(tbl)) r,
           LATERAL (SELECT date_trunc('hour', lower(r) - interval '1 microsecond', 'UTC')
                           + interval '1 hour' AS lo,
                           CASE WHEN NOT upper_inf(r) THEN date_trunc('hour', upper(r), 'UTC') END AS hi) h
     WHERE h.hi IS NULL OR h.lo < h.hi
$$;

-- Rollup retention: the hours whose rollup rows are gone, or go at the
-- next fold: those older than rollup_retention whose raw events are not
-- all retained (a retired day, a hole of retired days among retained ones
-- included), '{}' when all are kept.  A day made again later does not
-- bring a gone hour back, and it is not gone by this rule either: its raw
-- events are there, and its rollup rows follow them from then on.  By the
-- clock, not the statement's time: a fold that a reader's snapshot sees
-- committed before the reader asks, so the hours the reader finds gone
-- cover what that fold deleted, even in a statement (a function, a
-- procedure) that began before the fold.
CREATE OR REPLACE FUNCTION ingest_internal.rollup_gone(cfg ingest.table_config)
RETURNS tstzmultirange
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN cfg.rollup_retention IS NULL THEN '{}'::tstzmultirange
                ELSE tstzmultirange(tstzrange(NULL, date_trunc('hour', clock_timestamp() - cfg.rollup_retention, 'UTC')))
                     - ingest_internal.raw_hours(cfg.event_table) END
$$;

-- The start of the last range of a multirange of hours: of the retained
-- hours (raw_hours), the first from which every hour is retained (after
-- the last hole), which is what a rollup built now knows from.
CREATE OR REPLACE FUNCTION ingest_internal.last_stretch(hours tstzmultirange)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT max(lower(r)) FROM pg_catalog.unnest(hours) r
$$;

-- Can a rollup created by transaction "created" be built now?  Only when
-- every writer that could have missed it has ended: no other session holds
-- a snapshot that may not see "created" as committed, and no transaction
-- that had an xid before "horizon" (the next xid when a fold first saw
-- "created" committed) is running: it may have written before the rollup
-- existed, in a statement that fed only the rollups it knew.
CREATE OR REPLACE FUNCTION ingest_internal.rollup_build_ready(created xid8, horizon xid8)
RETURNS boolean
LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_rollup_build_ready';

-- The horizon of a rollup created by transaction "created", which the
-- caller sees committed: the next transaction id to be assigned, above
-- every writer's that may have missed it (pg_current_xact_id() is not
-- that, once the caller has an xid).  NULL while "created" is the caller's
-- own transaction: no other sees the rollup yet.
CREATE OR REPLACE FUNCTION ingest_internal.rollup_build_horizon(created xid8)
RETURNS xid8
LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_rollup_build_horizon';

-- Recompute the daily rows of the UTC days that [lo, hi) ranges overlap,
-- one organization's (orgs[i]) or every organization's (NULL), of every
-- rollup or of one, from the folded hourly rows: for the fold, after it has
-- rewritten hours other than by merging deltas.  The ranges, rounded out to
-- days, are made disjoint as stale marks are, so each hour counts once.
CREATE OR REPLACE FUNCTION ingest_internal.refresh_days(tbl regclass, orgs uuid[], los timestamptz[],
                                                       his timestamptz[], only_rollup text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg ingest.table_config := ingest_internal.require_managed(tbl);
BEGIN
    -- days are 24 hours from a UTC midnight, whatever the session's zone
    EXECUTE format($q$
        WITH pieces AS (%3$s),
        rc AS (SELECT rc.name FROM ingest.rollup_config rc
                WHERE rc.event_table = $4 AND ($5::text IS NULL OR rc.name = $5)),
        gone_o AS (DELETE FROM %1$s y USING pieces p, rc
                    WHERE p.org IS NOT NULL AND y.rollup = rc.name AND y.organization_id = p.org
                      AND y.day >= lower(p.r) AND y.day < upper(p.r) RETURNING 1),
        gone_a AS (DELETE FROM %1$s y USING pieces p, rc
                    WHERE p.org IS NULL AND y.rollup = rc.name
                      AND y.day >= lower(p.r) AND y.day < upper(p.r) RETURNING 1)
        INSERT INTO %1$s
        SELECT s.rollup, s.organization_id, pg_catalog.date_trunc('day', s.hour, 'UTC'), s.code,
               s.external_customer_id, s.dims, %4$s
          FROM (SELECT h.* FROM pieces p JOIN %2$s h ON h.organization_id = p.org
                 WHERE h.hour >= lower(p.r) AND h.hour < upper(p.r)
                UNION ALL
                SELECT h.* FROM pieces p JOIN %2$s h ON p.org IS NULL
                 WHERE h.hour >= lower(p.r) AND h.hour < upper(p.r)) s
         WHERE s.rollup IN (SELECT rc.name FROM rc)
           -- the old rows go first: the new ones take their keys
           AND (SELECT count(*) FROM gone_o) + (SELECT count(*) FROM gone_a) >= 0
         GROUP BY 1, 2, 3, 4, 5, 6
         ORDER BY 1, 2, 3, 4, 5, 6$q$,
        cfg.rollup_days, cfg.rollup_hours,
        ingest_internal.stale_pieces_sql(
            $s$(SELECT m.org AS organization_id,
                       pg_catalog.date_trunc('day', m.lo, 'UTC') AS lo,
                       pg_catalog.date_trunc('day', m.hi - interval '1 microsecond', 'UTC')
                           + interval '24 hours' AS hi
                  FROM unnest($1::pg_catalog.uuid[], $2::pg_catalog.timestamptz[],
                              $3::pg_catalog.timestamptz[]) m(org, lo, hi))$s$,
            $s$'{(,)}'::pg_catalog.tstzmultirange$s$),
        ingest_internal.rollup_merge_sql())
      USING orgs, los, his, tbl, only_rollup;
END
$$;

-- Is a table's rollup being built?  42704 for an unknown rollup.
CREATE OR REPLACE FUNCTION ingest_internal.rollup_building(tbl regclass, rollup_name text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    building boolean;
BEGIN
    SELECT rc.building_xid IS NOT NULL INTO building
      FROM ingest.rollup_config rc WHERE rc.event_table = tbl AND rc.name = rollup_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rollup "%" of table "%" does not exist', rollup_name, tbl
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN building;
END
$$;

-- The rollup rows of one rollup over whole hours [lo, hi) (one organization
-- or all, NULL), as a reader must take them: folded rows and deltas where
-- the hour is not stale, raw events where it is, raw events throughout for
-- a rollup being built.  Rows are not merged: callers merge them by key.
CREATE OR REPLACE FUNCTION ingest_internal.rollup_rows(tbl regclass, rollup_name text, org uuid,
                                                      lo timestamptz, hi timestamptz)
RETURNS TABLE(rollup text, organization_id uuid, hour timestamptz, code text,
              external_customer_id text, dims jsonb, events bigint, value_sum numeric,
              decimal_sum numeric, value_min double precision, value_max double precision,
              latest_value double precision, latest_at timestamptz, latest_tx text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- (usage_rows turns it off for its own statement)
SET enable_sort = on
AS $$
#variable_conflict use_column
DECLARE
    cfg      ingest.table_config := ingest_internal.require_managed(tbl);
    building boolean;
    retained tstzmultirange := ingest_internal.raw_hours(tbl);
    scope    text := '($3::pg_catalog.uuid IS NULL OR e.organization_id = $3) '
                     'AND e."timestamp" >= $4 AND e."timestamp" < $5';
    pieces   text;
BEGIN
    building := ingest_internal.rollup_building(tbl, rollup_name);
    IF building THEN
        RETURN QUERY EXECUTE 'SELECT e.* FROM ' || ingest_internal.owner_agg_sql(
            ingest_internal.rollup_agg_sql(tbl::text,
                'rc.name = $2 AND e."timestamp" OPERATOR(pg_catalog.<@) $6 AND ' || scope), 6)
          USING tbl, rollup_name, org, lo, hi, retained;
        RETURN;
    END IF;
    pieces := ingest_internal.stale_pieces_sql(
        format('(SELECT x.* FROM %s x WHERE ($3::pg_catalog.uuid IS NULL OR x.organization_id IS NULL '
               'OR x.organization_id = $3) AND x.hi > $4 AND x.lo < $5)', cfg.rollup_stale),
        '$6');
    RETURN QUERY EXECUTE format($q$
        WITH pieces AS (%4$s)
        SELECT r.* FROM %1$s r
         WHERE r.rollup = $2 AND ($3::pg_catalog.uuid IS NULL OR r.organization_id = $3)
           AND r.hour >= $4 AND r.hour < $5
           AND NOT EXISTS (SELECT 1 FROM pieces p WHERE (p.org IS NULL OR p.org = r.organization_id)
                                                    AND r.hour <@ p.r)
        UNION ALL
        SELECT d.* FROM %2$s d
         WHERE d.rollup = $2 AND ($3::pg_catalog.uuid IS NULL OR d.organization_id = $3)
           AND d.hour >= $4 AND d.hour < $5
           AND NOT EXISTS (SELECT 1 FROM pieces p WHERE (p.org IS NULL OR p.org = d.organization_id)
                                                    AND d.hour <@ p.r)
        UNION ALL
        SELECT e.* FROM %3$s$q$,
        cfg.rollup_hours, cfg.rollup_deltas,
        -- the raw events of the stale pieces, read as the owner (the pieces
        -- again, in the same snapshot)
        ingest_internal.owner_agg_sql(format('WITH pieces AS (%s) %s', pieces,
            ingest_internal.rollup_agg_sql(ingest_internal.stale_events_sql(tbl, 'pieces'),
                                           'rc.name = $2 AND ' || scope)), 6),
        pieces)
      USING tbl, rollup_name, org, lo, hi, retained;
END
$$;

-- Are the days [lo, hi) of a rollup of the table configured by cfg (one
-- organization's or all, NULL) each
-- exactly the merge of its daily rows and deltas?  When the rollup is built
-- and no hour in the range is marked stale: the stale pieces are those
-- rollup_rows sees.  Called within a reader's statement (STABLE), it reads
-- that statement's snapshot, as the reader's read of the rows must.
CREATE OR REPLACE FUNCTION ingest_internal.days_plain(cfg ingest.table_config, rollup_name text, org uuid,
                                                     lo timestamptz, hi timestamptz)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    marked boolean;
BEGIN
    IF ingest_internal.rollup_building(cfg.event_table, rollup_name) THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s x WHERE ($1::pg_catalog.uuid IS NULL OR x.organization_id IS NULL '
                   'OR x.organization_id = $1) AND x.hi > $2 AND x.lo < $3)', cfg.rollup_stale)
       INTO marked
      USING org, lo, hi;
    RETURN NOT marked;
END
$$;

-- The daily rows of rollup $rollup_p, organization $org_p (all, NULL),
-- days [$lo_p, $hi_p) (of the days in array $days_p only, when given),
-- merged per key into one row carrying day $lo_p (each argument the number
-- of a parameter of the statement it goes in);
-- merged_dims is the dims of a merged row: "s.dims", or a constant for a
-- rollup without dimensions, which spares hashing a jsonb per row.  A total
-- over a month reads one row per key and day: merged in the scan's own
-- aggregate, before deltas and edges join them, they took a quarter less
-- time than merged all at once (about 40,000 rows into 4,000).
CREATE OR REPLACE FUNCTION ingest_internal.days_merged_sql(cfg ingest.table_config, rollup_p int, org_p int,
                                                          lo_p int, hi_p int, merged_dims text,
                                                          days_p int DEFAULT NULL)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        SELECT s.rollup, s.organization_id, $%4$s::pg_catalog.timestamptz AS day, s.code,
               s.external_customer_id, %6$s AS dims, %7$s
          FROM %1$s s
         WHERE s.rollup = $%2$s AND ($%3$s::pg_catalog.uuid IS NULL OR s.organization_id = $%3$s)
           AND s.day >= $%4$s AND s.day < $%5$s%9$s
         GROUP BY 1, 2, 4, 5%8$s$q$,
        cfg.rollup_days, rollup_p, org_p, lo_p, hi_p, merged_dims, ingest_internal.rollup_merge_sql(),
        CASE WHEN merged_dims = 's.dims' THEN ', 6' END,
        CASE WHEN days_p IS NOT NULL THEN format(' AND s.day = ANY ($%s)', days_p) END)
$$;

-- The statement that reads plain days (days_plain): the daily rows and
-- deltas of rollup $rollup_p, organization $org_p (all, NULL), days
-- [$lo_p, $hi_p) (daily rows of the days in array $days_p only, when
-- given), each argument the number of a parameter of the statement it goes
-- in.  A daily row carries its day in column "hour".  With merged_dims, the
-- daily rows come merged per key (days_merged_sql).
CREATE OR REPLACE FUNCTION ingest_internal.plain_days_sql(cfg ingest.table_config, rollup_p int, org_p int,
                                                         lo_p int, hi_p int, days_p int DEFAULT NULL,
                                                         merged_dims text DEFAULT NULL)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        %7$s
        UNION ALL
        SELECT d.* FROM %2$s d
         WHERE d.rollup = $%3$s AND ($%4$s::pg_catalog.uuid IS NULL OR d.organization_id = $%4$s)
           AND d.hour >= $%5$s AND d.hour < $%6$s$q$,
        cfg.rollup_days, cfg.rollup_deltas, rollup_p, org_p, lo_p, hi_p,
        CASE WHEN merged_dims IS NOT NULL
             THEN ingest_internal.days_merged_sql(cfg, rollup_p, org_p, lo_p, hi_p, merged_dims, days_p)
             ELSE format($q$
        SELECT y.rollup, y.organization_id, y.day, y.code, y.external_customer_id, y.dims, y.events,
               y.value_sum, y.decimal_sum, y.value_min, y.value_max, y.latest_value, y.latest_at,
               y.latest_tx
          FROM %1$s y
         WHERE y.rollup = $%2$s AND ($%3$s::pg_catalog.uuid IS NULL OR y.organization_id = $%3$s)
           AND y.day >= $%4$s AND y.day < $%5$s%6$s$q$,
                         cfg.rollup_days, rollup_p, org_p, lo_p, hi_p,
                         CASE WHEN days_p IS NOT NULL THEN format(' AND y.day = ANY ($%s)', days_p) END) END)
$$;

-- The rollup rows of one rollup over whole UTC days [lo, hi) (one
-- organization or all, NULL), as a reader must take them: a day's daily
-- rows and deltas where no hour of the day is stale, its rows of
-- rollup_rows where one is (rollup_rows throughout for a rollup being
-- built).  A daily row carries its day in column "hour".  Called within a
-- reader's statement, it reads that statement's snapshot.
CREATE OR REPLACE FUNCTION ingest_internal.daily_rows(tbl regclass, rollup_name text, org uuid,
                                                     lo timestamptz, hi timestamptz)
RETURNS TABLE(rollup text, organization_id uuid, hour timestamptz, code text,
              external_customer_id text, dims jsonb, events bigint, value_sum numeric,
              decimal_sum numeric, value_min double precision, value_max double precision,
              latest_value double precision, latest_at timestamptz, latest_tx text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- (usage_rows turns it off for its own statement)
SET enable_sort = on
-- the estimates of its day series would have JIT compile a plan that runs
-- in a millisecond
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    cfg      ingest.table_config := ingest_internal.require_managed(tbl);
    retained tstzmultirange;
BEGIN
    IF ingest_internal.rollup_building(tbl, rollup_name) THEN
        RETURN QUERY SELECT * FROM ingest_internal.rollup_rows(tbl, rollup_name, org, lo, hi);
        RETURN;
    END IF;
    -- Where the range has no mark, every day is plain, in a statement
    -- cheaper to plan, and the retained hours (costly to find, and a bound
    -- on marks only) are not needed.
    IF ingest_internal.days_plain(cfg, rollup_name, org, lo, hi) THEN
        RETURN QUERY EXECUTE ingest_internal.plain_days_sql(cfg, 2, 3, 4, 5)
          USING tbl, rollup_name, org, lo, hi;
        RETURN;
    END IF;
    retained := ingest_internal.raw_hours(tbl);
    RETURN QUERY EXECUTE format($q$
        WITH pieces AS (%3$s),
        -- the UTC days of the stale pieces, as ranges (a TRUNCATE's mark
        -- has no end): each (organization, day) once, a day stale for
        -- every organization covering one organization's mark on it
        days AS (SELECT p.org, pg_catalog.tstzrange(date_trunc('day', lower(p.r), 'UTC'),
                                                    date_trunc('day', upper(p.r) - interval '1 microsecond', 'UTC')
                                                        + interval '24 hours') AS r
                   FROM pieces p),
        every_org AS (SELECT COALESCE(pg_catalog.range_agg(d.r), '{}'::pg_catalog.tstzmultirange) AS m
                        FROM days d WHERE d.org IS NULL),
        stale_days AS (
            SELECT NULL::pg_catalog.uuid AS org, pg_catalog.unnest(a.m) AS r FROM every_org a
            UNION ALL
            SELECT o.org, pg_catalog.unnest(o.m) FROM (
                SELECT d.org, pg_catalog.range_agg(d.r) OPERATOR(pg_catalog.-) (SELECT a.m FROM every_org a) AS m
                  FROM days d WHERE d.org IS NOT NULL GROUP BY d.org) o)
        SELECT y.rollup, y.organization_id, y.day, y.code, y.external_customer_id, y.dims, y.events,
               y.value_sum, y.decimal_sum, y.value_min, y.value_max, y.latest_value, y.latest_at,
               y.latest_tx
          FROM %1$s y
         WHERE y.rollup = $2 AND ($3::pg_catalog.uuid IS NULL OR y.organization_id = $3)
           AND y.day >= $4 AND y.day < $5
           AND NOT EXISTS (SELECT 1 FROM stale_days s WHERE (s.org IS NULL OR s.org = y.organization_id)
                                                        AND y.day <@ s.r)
        UNION ALL
        SELECT d.* FROM %2$s d
         WHERE d.rollup = $2 AND ($3::pg_catalog.uuid IS NULL OR d.organization_id = $3)
           AND d.hour >= $4 AND d.hour < $5
           AND NOT EXISTS (SELECT 1 FROM stale_days s WHERE (s.org IS NULL OR s.org = d.organization_id)
                                                        AND date_trunc('day', d.hour, 'UTC') <@ s.r)
        UNION ALL
        SELECT h.* FROM stale_days s
         CROSS JOIN LATERAL ingest_internal.rollup_rows($1, $2, COALESCE($3::pg_catalog.uuid, s.org),
                                                        GREATEST(lower(s.r), $4), LEAST(upper(s.r), $5)) h
         WHERE GREATEST(lower(s.r), $4) < LEAST(upper(s.r), $5)$q$,
        cfg.rollup_days, cfg.rollup_deltas,
        ingest_internal.stale_pieces_sql(
            format('(SELECT x.* FROM %s x WHERE ($3::pg_catalog.uuid IS NULL OR x.organization_id IS NULL '
                   'OR x.organization_id = $3) AND x.hi > $4 AND x.lo < $5)', cfg.rollup_stale),
            '$6'))
      USING tbl, rollup_name, org, lo, hi, retained;
END
$$;

-- Can the days of time zone "tz" be read as UTC days?  Only for the names
-- of UTC itself: a zone with another offset, at any time, has other days.
CREATE OR REPLACE FUNCTION ingest_internal.utc_days(tz text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lower(tz) IN ('utc', 'uct', 'universal', 'zulu', 'z', 'gmt', 'gmt0', 'gmt+0', 'gmt-0', 'greenwich',
                         'etc/utc', 'etc/uct', 'etc/universal', 'etc/zulu', 'etc/gmt', 'etc/gmt0',
                         'etc/gmt+0', 'etc/gmt-0', 'etc/greenwich')
$$;

-- Do the days of zone tz that meet [lo, hi) start on whole UTC hours, so
-- that each is a union of hourly rows?  Not in a zone whose offset has
-- minutes (Asia/Kolkata, Australia/Adelaide, Lord Howe's half-hour DST)
-- at one of them.  Days up to ten years ahead are looked at, and from lo,
-- or from 1970 when lo is infinite.
CREATE OR REPLACE FUNCTION ingest_internal.days_on_hours(tz text, lo timestamptz, hi timestamptz)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d  timestamptz := date_trunc('day', CASE WHEN isfinite(lo) THEN lo ELSE '1970-01-01 00:00+00' END, tz);
    nd timestamptz;
BEGIN
    hi := LEAST(hi, now() + interval '10 years');
    WHILE d < hi LOOP
        IF date_trunc('hour', d, 'UTC') <> d THEN
            RETURN false;
        END IF;
        -- the next local midnight (or the hour a DST gap puts there); a day
        -- may be 26 hours long (Antarctica/Troll), or 27
        nd := date_trunc('day', d + interval '25 hours', tz);
        IF nd <= d THEN
            nd := date_trunc('day', d + interval '49 hours', tz);
        END IF;
        d := nd;
    END LOOP;
    RETURN true;
END
$$;

-- The refusal of days_on_hours, for an hour that lies across local midnight
-- in a day outside the window it checks.
CREATE OR REPLACE FUNCTION ingest_internal.refuse_split_day(tz text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'days in time zone "%" do not all start on a whole hour', tz
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = 'Usage is kept per hour: such a day is not a union of hours.',
              HINT = 'Ask for each day''s total (granularity "total" from one local midnight to the next): its partial hours are read from raw events.';
END
$$;

-- The days of a table whose detach has begun and not ended, as retention
-- recorded them (mark_retiring): read with no lock on them, which the end
-- of their detach holds ACCESS EXCLUSIVE.
CREATE OR REPLACE FUNCTION ingest_internal.detaching(tbl regclass)
RETURNS TABLE(partition_oid oid, lower_bound timestamptz, upper_bound timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.partition_oid, r.lower_bound, r.upper_bound
      FROM ingest_internal.retired r
      JOIN pg_catalog.pg_inherits i ON i.inhrelid = r.partition_oid AND i.inhdetachpending
     WHERE r.relid = tbl
$$;

-- The partitions a statement over the table reads now (not detaching).
CREATE OR REPLACE FUNCTION ingest_internal.readable_partitions(tbl regclass)
RETURNS oid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT array_agg(i.inhrelid ORDER BY i.inhrelid) FROM pg_catalog.pg_inherits i
     WHERE i.inhparent = tbl AND NOT i.inhdetachpending
$$;

-- The statement that recomputes the rollup hours of stale marks from the
-- raw events of "src" (the table, or a day of it being retired): the marks
-- (query "marks", rows of the table's stale marks) within the hours $2 (a
-- tstzmultirange), made disjoint; their hours' rollup rows and deltas go
-- and the raw aggregation comes in.  $1 is the table; the marks' own
-- parameters follow.
CREATE OR REPLACE FUNCTION ingest_internal.recompute_sql(cfg ingest.table_config, src regclass, marks text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        WITH marks AS (%1$s),
        pieces AS (%5$s),
        -- one organization's hours, and every organization's ranges: disjoint
        org_hours AS (SELECT p.org, h FROM pieces p,
                             generate_series(lower(p.r), upper(p.r) - interval '1 hour', interval '1 hour') h
                       WHERE p.org IS NOT NULL),
        all_orgs AS (SELECT p.r FROM pieces p WHERE p.org IS NULL),
        gone_h1 AS (DELETE FROM %2$s h USING org_hours o
                     WHERE h.organization_id = o.org AND h.hour = o.h RETURNING 1),
        gone_h2 AS (DELETE FROM %2$s h USING all_orgs a
                     WHERE h.hour >= lower(a.r) AND h.hour < upper(a.r) RETURNING 1),
        gone_d1 AS (DELETE FROM %3$s d USING org_hours o
                     WHERE d.organization_id = o.org AND d.hour = o.h RETURNING 1),
        gone_d2 AS (DELETE FROM %3$s d USING all_orgs a
                     WHERE d.hour >= lower(a.r) AND d.hour < upper(a.r) RETURNING 1),
        raw AS (%4$s)
        INSERT INTO %2$s
        SELECT raw.* FROM raw, (SELECT count(*) FROM gone_h1) a, (SELECT count(*) FROM gone_h2) b,
                               (SELECT count(*) FROM gone_d1) c, (SELECT count(*) FROM gone_d2) d$q$,
        marks, cfg.rollup_hours, cfg.rollup_deltas,
        ingest_internal.rollup_agg_sql(ingest_internal.stale_events_sql(src, 'pieces'), 'true'),
        ingest_internal.stale_pieces_sql('marks', '$2'))
$$;

-- Split the table's stale marks that cross whole hours [lo, hi) at its
-- ends; the parts inside are kept, or with "drop_inside" dropped (their
-- hours are settled).
CREATE OR REPLACE FUNCTION ingest_internal.split_marks(tbl regclass, lo timestamptz, hi timestamptz,
                                                      drop_inside boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg ingest.table_config := ingest_internal.require_managed(tbl);
BEGIN
    PERFORM ingest_internal.owner_exec(tbl, format($q$
        WITH gone AS (DELETE FROM %1$s x WHERE x.lo < $2 AND x.hi > $1
                                          AND ($3 OR x.lo < $1 OR x.hi > $2) RETURNING x.*)
        INSERT INTO %1$s
        SELECT g.organization_id, g.lo, $1 FROM gone g WHERE g.lo < $1
        UNION ALL
        SELECT g.organization_id, GREATEST(g.lo, $1), LEAST(g.hi, $2) FROM gone g WHERE NOT $3
        UNION ALL
        SELECT g.organization_id, $2, g.hi FROM gone g WHERE g.hi > $2$q$, cfg.rollup_stale),
        lo, hi, drop_inside);
END
$$;

-- Retention, once a day is detached and no writer can reach it: the hours
-- of the day that changes marked stale since the fold before its
-- retirement (an UPDATE or DELETE that committed while its DETACH waited
-- for it), recomputed from the day's own events before they go; then the
-- marks' parts in the day go.  Whole UTC hours of the day only: in a zone
-- whose days do not start on one, the hour it shares with the next day is
-- left to the fold, and the one it shares with the day before is retired.
CREATE OR REPLACE FUNCTION ingest_internal.fold_retired(tbl regclass, part regclass,
                                                       lo timestamptz, hi timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    cfg   ingest.table_config := ingest_internal.require_managed(tbl);
    first timestamptz := date_trunc('hour', lo - interval '1 microsecond', 'UTC') + interval '1 hour';
    last  timestamptz := date_trunc('hour', hi, 'UTC');
    orgs  uuid[];
    los   timestamptz[];
    his   timestamptz[];
BEGIN
    -- No writer can reach the day: its detach holds it ACCESS EXCLUSIVE.
    -- A fold would merge deltas into these hours: none may run, and none
    -- is waited for, since a fold may be waiting for the day's lock.
    IF NOT ingest_internal.lock_fold(tbl, false) THEN
        RAISE EXCEPTION 'the rollups of table "%" are being folded', tbl
            USING ERRCODE = 'lock_not_available',
                  DETAIL = 'The end of a retirement folds the retired day''s changed hours.',
                  HINT = 'The next maintenance run finishes the detach.';
    END IF;
    EXECUTE format('SELECT array_agg(x.organization_id), array_agg(GREATEST(x.lo, $1)), '
                   '       array_agg(LEAST(x.hi, $2)) FROM %s x WHERE x.lo < $2 AND x.hi > $1',
                   cfg.rollup_stale)
       INTO orgs, los, his USING first, last;
    IF orgs IS NOT NULL THEN
        PERFORM ingest_internal.owner_exec(tbl, ingest_internal.recompute_sql(cfg, part,
            'SELECT m.org AS organization_id, m.lo, m.hi '
            '  FROM unnest($3::pg_catalog.uuid[], $4::pg_catalog.timestamptz[], '
            '              $5::pg_catalog.timestamptz[]) m(org, lo, hi)'),
            tbl, '{(,)}'::tstzmultirange, orgs, los, his);
        PERFORM ingest_internal.refresh_days(tbl, orgs, los, his);
    END IF;
    -- the marks keep their parts before and after the day's hours
    PERFORM ingest_internal.split_marks(tbl, date_trunc('hour', lo, 'UTC'), last, true);
END
$$;

-- Bring a table's rollup up to date: recompute stale hours from raw events,
-- finish rollups being built, merge committed deltas, apply rollup
-- retention.  One folder per table at a time: others skip (or wait, when
-- "wait"); writers never wait.  Returns the rollup rows written, or NULL
-- when DDL on the table kept a fold that does not wait from starting.
CREATE OR REPLACE FUNCTION ingest_internal.fold(tbl regclass, wait boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- compiling its large plans costs more than it saves
SET jit = off
AS $$
DECLARE
    cfg   ingest.table_config;
    total bigint := 0;
    n     bigint;
    retained tstzmultirange;
    since timestamptz;
    r     record;
    orgs  uuid[];
    los   timestamptz[];
    his   timestamptz[];
    parts oid[];
    built boolean := false;
BEGIN
    -- A new rollup is built from the raw events in the fold's snapshot: an
    -- older one (REPEATABLE READ) could miss a load that committed before
    -- the fold and fed only the rollups it knew of.
    PERFORM ingest_internal.require_read_committed('a fold of the rollups');
    SELECT * INTO cfg FROM ingest.table_config c WHERE c.event_table = tbl;
    -- on Citus each node folds its shards (sql/ingest/70_citus.sql), under
    -- Citus's shard lock (a shard of a table no longer ingest's is let go)
    IF NOT FOUND OR ingest_internal.on_citus(tbl)
       OR (cfg.managed_by = 'citus_shard' AND NOT ingest_internal.citus_lock_shard(tbl))
       OR NOT ingest_internal.ready(tbl) THEN
        RETURN 0;
    END IF;
    IF NOT ingest_internal.lock_fold(tbl, wait) THEN
        RETURN 0;
    END IF;
    -- The table's lock, then its configuration again: an unmanage or a DROP
    -- TABLE (ACCESS EXCLUSIVE, taken first) is never deadlocked with over
    -- fold_state, and side tables it dropped are not read.  Only a fold
    -- that must happen waits for such DDL; the worker's fold comes back
    -- later (NULL: nothing folded, no outcome to record).
    IF NOT ingest_internal.lock_table(tbl, wait) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO cfg FROM ingest.table_config c WHERE c.event_table = tbl;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    parts := ingest_internal.readable_partitions(tbl);

    -- 1. Stale hours: rollup rows and deltas this snapshot sees go, the raw
    -- aggregation of the same snapshot comes in; the marks are consumed.
    -- Statements over the events run as the table's owner (owner_exec).
    -- The days of the marked hours get their daily rows anew from the hourly
    -- rows once these are written, a statement later (a statement does not
    -- see its own writes).  So the marks are read first, and the statement
    -- consumes those alone, by value: a mark committed in between stays for
    -- the next fold, and one equal to a mark read has the same days.  (The
    -- organization of a mark of all is '' there: a key a hash join can use.)
    -- The hours of a day whose detach has begun wait for its end
    -- (fold_retired): its events are out of this snapshot's reach.  Marks
    -- are split at its hours, so that the rest of them is folded now.
    FOR r IN SELECT * FROM ingest_internal.detaching(tbl) LOOP
        PERFORM ingest_internal.split_marks(tbl, date_trunc('hour', r.lower_bound, 'UTC'),
            date_trunc('hour', r.upper_bound - interval '1 microsecond', 'UTC') + interval '1 hour', false);
    END LOOP;
    EXECUTE format('SELECT array_agg(x.organization_id), array_agg(x.lo), array_agg(x.hi) FROM %s x '
                   ' WHERE NOT EXISTS (SELECT 1 FROM ingest_internal.detaching($1) d '
                   '                    WHERE x.lo < d.upper_bound AND x.hi > d.lower_bound)',
                   cfg.rollup_stale)
       INTO orgs, los, his USING tbl;
    -- The retained hours after the marks: a partition made since (a
    -- retired day made again) has its hours in them once its mark is read.
    retained := ingest_internal.raw_hours(tbl);
    since := ingest_internal.last_stretch(retained);
    n := ingest_internal.owner_exec(tbl, ingest_internal.recompute_sql(cfg, tbl, format($q$DELETE FROM %s x
         USING (SELECT DISTINCT COALESCE(m.org::text, '') AS org, m.lo, m.hi
                  FROM unnest($3::uuid[], $4::timestamptz[], $5::timestamptz[]) m(org, lo, hi)) m
         WHERE COALESCE(x.organization_id::text, '') = m.org AND x.lo = m.lo AND x.hi = m.hi
        RETURNING x.*$q$, cfg.rollup_stale)), tbl, retained, orgs, los, his);
    total := total + n;
    IF orgs IS NOT NULL THEN
        PERFORM ingest_internal.refresh_days(tbl, orgs, los, his);
    END IF;

    -- 2. Rollups being built, once every writer that may have missed their
    -- creation has ended: every writer since feeds them, so the raw events
    -- of this snapshot plus later deltas are exact.
    FOR r IN SELECT rc.name, rc.building_xid, rc.building_horizon FROM ingest.rollup_config rc
              WHERE rc.event_table = tbl AND rc.building_xid IS NOT NULL ORDER BY rc.name
    LOOP
        IF r.building_horizon IS NULL THEN
            -- A writer that missed the rollup took its xid before the
            -- rollup committed, which this loop's snapshot sees: below the
            -- next xid now.  (Not this fold's own xid: it may be older,
            -- taken by step 1 or another table's fold.)  A rollup this
            -- transaction created waits for its commit.
            r.building_horizon := ingest_internal.rollup_build_horizon(r.building_xid);
            CONTINUE WHEN r.building_horizon IS NULL;
            UPDATE ingest.rollup_config rc SET building_horizon = r.building_horizon
             WHERE rc.event_table = tbl AND rc.name = r.name;
        END IF;
        CONTINUE WHEN NOT ingest_internal.rollup_build_ready(r.building_xid, r.building_horizon);
        n := ingest_internal.owner_exec(tbl, format($q$
            WITH gone_d AS (DELETE FROM %1$s d WHERE d.rollup = $2 RETURNING 1),
            gone_h AS (DELETE FROM %2$s h WHERE h.rollup = $2 RETURNING 1),
            raw AS (%3$s)
            INSERT INTO %2$s
            SELECT raw.* FROM raw, (SELECT count(*) FROM gone_d) a, (SELECT count(*) FROM gone_h) b$q$,
            cfg.rollup_deltas, cfg.rollup_hours,
            ingest_internal.rollup_agg_sql(tbl::text, 'rc.name = $2 AND e."timestamp" OPERATOR(pg_catalog.<@) $3')),
            tbl, r.name::text, retained);
        total := total + n;
        PERFORM ingest_internal.refresh_days(tbl, ARRAY[NULL]::uuid[], ARRAY['-infinity']::timestamptz[],
                                             ARRAY['infinity']::timestamptz[], r.name);
        UPDATE ingest.rollup_config rc
           SET building_xid = NULL, building_horizon = NULL, known_from = COALESCE(since, rc.known_from)
         WHERE rc.event_table = tbl AND rc.name = r.name;
        built := true;
    END LOOP;

    -- Steps 1 and 2 read the raw events of the partitions attached when
    -- "parts" was read.  A detach that began since then took its day's
    -- events out of their statements' reach, but not its hours, which
    -- they made empty: the fold is undone, to be done again.  (A partition
    -- attached meanwhile marks or feeds its own hours: a mark not read
    -- yet stays for the next fold.)
    IF (orgs IS NOT NULL OR built)
       AND NOT COALESCE(parts OPERATOR(pg_catalog.<@) ingest_internal.readable_partitions(tbl), parts IS NULL) THEN
        RAISE EXCEPTION 'a partition of table "%" began to detach during the fold', tbl
            USING ERRCODE = 'serialization_failure', HINT = 'Fold again.';
    END IF;

    -- 3. Committed deltas merged into the rollup rows of their keys, hourly
    -- and daily alike (the merge is associative).  Rows are written in
    -- their key's order, so that one organization's rows of a day lie on a
    -- few pages, not on a page each: a usage query reads those pages.
    EXECUTE format($q$
        WITH moved AS (DELETE FROM %1$s d RETURNING d.*),
        moved_days AS (SELECT m.rollup, m.organization_id, date_trunc('day', m.hour, 'UTC') AS day,
                              m.code, m.external_customer_id, m.dims, m.events, m.value_sum,
                              m.decimal_sum, m.value_min, m.value_max, m.latest_value, m.latest_at,
                              m.latest_tx
                         FROM moved m),
        old_days AS (DELETE FROM %4$s y
                      USING (SELECT DISTINCT m.rollup, m.organization_id, m.day, m.code,
                                    m.external_customer_id, m.dims FROM moved_days m) k
                      WHERE y.rollup = k.rollup AND y.organization_id = k.organization_id
                        AND y.day = k.day AND y.code = k.code
                        AND y.external_customer_id = k.external_customer_id AND y.dims = k.dims
                     RETURNING y.*),
        new_days AS (INSERT INTO %4$s
                     SELECT s.rollup, s.organization_id, s.day, s.code, s.external_customer_id, s.dims, %3$s
                       FROM (SELECT * FROM moved_days UNION ALL SELECT * FROM old_days) s
                      GROUP BY 1, 2, 3, 4, 5, 6
                      ORDER BY 1, 2, 3, 4, 5, 6),
        old AS (DELETE FROM %2$s h
                 USING (SELECT DISTINCT m.rollup, m.organization_id, m.hour, m.code,
                               m.external_customer_id, m.dims FROM moved m) k
                 WHERE h.organization_id = k.organization_id AND h.hour = k.hour
                   AND h.rollup = k.rollup AND h.code = k.code
                   AND h.external_customer_id = k.external_customer_id AND h.dims = k.dims
                RETURNING h.*)
        INSERT INTO %2$s
        SELECT s.rollup, s.organization_id, s.hour, s.code, s.external_customer_id, s.dims, %3$s
          FROM (SELECT * FROM moved UNION ALL SELECT * FROM old) s
         GROUP BY 1, 2, 3, 4, 5, 6
         ORDER BY 2, 3, 1, 4, 5, 6$q$,
        cfg.rollup_deltas, cfg.rollup_hours, ingest_internal.rollup_merge_sql(), cfg.rollup_days);
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;

    -- 4. Rollups have their own retention (rollup_gone).  The days of
    -- the hours gone keep the rest of their hours: nothing, once past
    -- retention entirely.
    IF cfg.rollup_retention IS NOT NULL THEN
        EXECUTE format($q$
            WITH gone AS (DELETE FROM %s r WHERE $1 @> r.hour RETURNING r.hour),
            days AS (SELECT DISTINCT date_trunc('day', g.hour, 'UTC') AS day FROM gone g)
            SELECT array_agg(NULL::uuid), array_agg(d.day), array_agg(d.day + interval '24 hours')
              FROM days d$q$, cfg.rollup_hours)
          INTO orgs, los, his
          USING ingest_internal.rollup_gone(cfg);
        IF orgs IS NOT NULL THEN
            PERFORM ingest_internal.refresh_days(tbl, orgs, los, his);
        END IF;
    END IF;
    RETURN total;
END
$$;

CREATE OR REPLACE FUNCTION ingest.fold_rollups(tbl regclass DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    total bigint := 0;
    t     regclass;
BEGIN
    IF tbl IS NOT NULL THEN
        PERFORM ingest_internal.require_owner(tbl);
    END IF;
    -- on a Citus node, the shards it folds (Citus hides them from catalog
    -- queries of most sessions)
    IF pg_catalog.current_setting('citus.override_table_visibility', true) IS NOT NULL THEN
        PERFORM pg_catalog.set_config('citus.override_table_visibility', 'off', true);
    END IF;
    -- all: the tables the caller owns
    FOR t IN SELECT c.event_table FROM ingest.table_config c JOIN pg_class pc ON pc.oid = c.event_table
              WHERE (tbl IS NULL OR c.event_table = tbl)
                AND pg_has_role(ingest_internal.caller(), pc.relowner, 'USAGE')
              ORDER BY 1
    LOOP
        total := total + COALESCE(ingest_internal.fold(t), 0);
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION ingest.fold_rollups(regclass) IS
    'Bring the hourly rollups up to date now: merge committed deltas, recompute stale hours, finish rollups being built (the worker does it every ingest.rollup_fold_interval); returns the rollup rows written';

-- The rows of ingest.usage() (a C function that checks the caller's SELECT
-- privilege, then runs this as the extension owner).
CREATE OR REPLACE FUNCTION ingest_internal.usage_rows(tbl regclass, organization_id uuid, from_ts timestamptz,
                                           to_ts timestamptz, code text,
                                           external_customer_id text, rollup text,
                                           granularity text, time_zone text)
RETURNS TABLE(u_code text, u_customer text, u_dimensions jsonb, u_bucket timestamptz,
              u_events bigint, u_value_sum numeric, u_decimal_sum numeric,
              u_value_min double precision, u_value_max double precision,
              u_latest_value double precision, u_latest_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- its statement aggregates at most two partial hours of raw events, but
-- their estimates would have JIT compile it
SET jit = off
-- the daily rows answered as they stand come in order from their index;
-- the planner would rather sort them, which took several times as long as
-- reading them (50,000 rows: 24 ms read in order, 160 ms read and sorted).
-- The functions it calls that plan statements of their own (rollup_rows,
-- daily_rows, owner_query, usage_citus) set it back on.
SET enable_sort = off
AS $$
DECLARE
    h_from timestamptz;
    h_to   timestamptz;
    d_from timestamptz;
    d_to   timestamptz;
    ranges tstzmultirange;
    known  timestamptz;
    bucket_expr text;
    edge   text := 'rc.name = $3 AND e.organization_id = $2 AND e."timestamp" >= %s AND e."timestamp" < %s';
    cfg    ingest.table_config;
    plain  boolean;
    dims_expr text := 's.dims';
    mixed  timestamptz[] := '{}';
    days_passed boolean := false;
    passed text := 'SELECT NULL::text, NULL::text, NULL::jsonb, NULL::timestamptz, NULL::bigint, '
                   'NULL::numeric, NULL::numeric, NULL::float8, NULL::float8, NULL::float8, '
                   'NULL::timestamptz WHERE false';
BEGIN
    IF tbl IS NULL OR organization_id IS NULL OR from_ts IS NULL OR to_ts IS NULL
       OR granularity IS NULL OR time_zone IS NULL THEN
        RAISE EXCEPTION 'tbl, organization_id, from_ts, to_ts, granularity and time_zone must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    cfg := ingest_internal.require_managed(tbl);
    -- a day that is no union of hours could only be answered approximately
    IF granularity = 'day' AND NOT ingest_internal.utc_days(time_zone)
       AND NOT ingest_internal.days_on_hours(time_zone, from_ts, to_ts) THEN
        PERFORM ingest_internal.refuse_split_day(time_zone);
    END IF;
    IF ingest_internal.on_citus(tbl) THEN
        RETURN QUERY SELECT * FROM ingest_internal.usage_citus(cfg, organization_id, from_ts, to_ts, code,
                                                               external_customer_id, rollup,
                                                               granularity, time_zone);
        RETURN;
    END IF;
    rollup := COALESCE(rollup, 'default');
    known := ingest_internal.rollup_known_from(tbl, rollup);
    IF known IS NOT NULL AND from_ts < known THEN
        RAISE EXCEPTION 'rollup "%" is not known before %', rollup, known
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'It was created when raw events were retained from that instant only.';
    END IF;
    -- whole hours of the range that rollup retention deleted: the last of
    -- them (partial hours at the edges are read from raw events, checked
    -- below)
    SELECT CASE WHEN max(upper(g)) IS NOT NULL THEN LEAST(max(upper(g)), max(w.hi)) END INTO known
      FROM pg_catalog.unnest(ingest_internal.rollup_gone(cfg)) g,
           LATERAL (SELECT date_trunc('hour', to_ts, 'UTC') AS hi) w
     WHERE g && tstzrange(LEAST(date_trunc('hour', from_ts - interval '1 microsecond', 'UTC')
                                + interval '1 hour', w.hi), w.hi);
    IF known IS NOT NULL THEN
        RAISE EXCEPTION 'usage of table "%" is not kept before %', tbl, known
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = pg_catalog.format('Rollup hours older than its rollup_retention (%s) go once their raw events are retired.',
                                             cfg.rollup_retention);
    END IF;
    IF from_ts >= to_ts THEN
        RAISE EXCEPTION 'from_ts must be before to_ts' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM timezone(time_zone, now());
    bucket_expr := CASE granularity
        WHEN 'total' THEN '$4'
        WHEN 'hour' THEN 's.hour'
        WHEN 'day' THEN CASE WHEN ingest_internal.utc_days(time_zone) THEN 'date_trunc(''day'', s.hour, $5)'
                             -- an hour across local midnight is refused
                             -- wherever it is: days_on_hours checks a window
                             ELSE 'CASE WHEN date_trunc(''day'', s.hour, $5) = date_trunc(''day'', s.hour '
                                  '          + interval ''1 hour'' - interval ''1 microsecond'', $5) '
                                  'THEN date_trunc(''day'', s.hour, $5) '
                                  'ELSE ingest_internal.refuse_split_day($5) END' END
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
    -- (finding it costs more than a read of whole days)
    ranges := CASE WHEN from_ts < LEAST(h_from, to_ts) OR h_to < to_ts THEN ingest_internal.raw_ranges(tbl) END;
    -- each partial hour against retention on its own: a range from before it
    -- may end in a partial hour that is retained
    IF (from_ts < LEAST(h_from, to_ts) AND NOT tstzrange(from_ts, LEAST(h_from, to_ts)) <@ ranges)
       OR (h_to < to_ts AND NOT tstzrange(h_to, to_ts) <@ ranges) THEN
        RAISE EXCEPTION 'raw events of the partial hours of this range are no longer retained'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Raw events are retained in %s.', ranges),
                  HINT = 'Use bounds on whole hours.';
    END IF;

    -- Whole UTC days [d_from, d_to) from the daily rows, for totals and for
    -- days in UTC (other zones' days are not unions of UTC days): the hours
    -- around them from the hourly rows.
    d_from := h_to;
    d_to := h_to;
    IF granularity = 'total' OR (granularity = 'day' AND ingest_internal.utc_days(time_zone)) THEN
        d_from := date_trunc('day', h_from - interval '1 microsecond', 'UTC') + interval '24 hours';
        d_to := date_trunc('day', h_to, 'UTC');
        IF d_from >= d_to THEN
            d_from := h_to;
            d_to := h_to;
        END IF;
    END IF;

    plain := d_from < d_to AND ingest_internal.days_plain(cfg, rollup, organization_id, d_from, d_to);
    -- A rollup without dimensions has '{}' on every row: grouping by a
    -- constant spares hashing a jsonb per row.
    IF (SELECT cardinality(rc.dimensions) = 0 FROM ingest.rollup_config rc
         WHERE rc.event_table = tbl AND rc.name = rollup) THEN
        dims_expr := '''{}''::jsonb';
    END IF;
    -- Per UTC day, a plain day's daily row is its key's answer as it
    -- stands unless the day has deltas (the merge of one row is the row):
    -- those rows are passed through, in the daily key's order, and only
    -- the days with deltas and the edges are merged.
    IF plain AND granularity = 'day' THEN
        EXECUTE format($q$SELECT COALESCE(pg_catalog.array_agg(DISTINCT pg_catalog.date_trunc('day', d.hour, 'UTC')), '{}')
                            FROM %s d WHERE d.rollup = $1 AND d.organization_id = $2
                             AND d.hour >= $3 AND d.hour < $4$q$, cfg.rollup_deltas)
           INTO mixed
          USING rollup, organization_id, d_from, d_to;
        passed := format($q$
            SELECT y.code, y.external_customer_id, y.dims, y.day, y.events, y.value_sum, y.decimal_sum,
                   y.value_min, y.value_max, y.latest_value, y.latest_at
              FROM %s y
             WHERE y.rollup = $3 AND y.organization_id = $2 AND y.day >= $11 AND y.day < $12
               AND y.day <> ALL ($13)
               AND ($9::text IS NULL OR y.code = $9)
               AND ($10::text IS NULL OR y.external_customer_id = $10)
             ORDER BY y.day, y.code, y.external_customer_id, y.dims$q$, cfg.rollup_days);
    END IF;
    -- In total, a range of whole plain days with no deltas is answered by
    -- its daily rows merged per key alone: nothing is left to merge them
    -- with.
    IF plain AND granularity = 'total' AND from_ts = d_from AND to_ts = d_to THEN
        EXECUTE format($q$SELECT NOT EXISTS (SELECT 1 FROM %s d WHERE d.rollup = $1 AND d.organization_id = $2
                                             AND d.hour >= $3 AND d.hour < $4)$q$, cfg.rollup_deltas)
           INTO days_passed
          USING rollup, organization_id, d_from, d_to;
    END IF;
    IF days_passed THEN
        passed := format($q$
            SELECT p.code, p.external_customer_id, p.dims, $4, p.events, p.value_sum, p.decimal_sum,
                   p.value_min, p.value_max, p.latest_value, p.latest_at
              FROM (%s) p
             WHERE ($9::text IS NULL OR p.code = $9)
               AND ($10::text IS NULL OR p.external_customer_id = $10)$q$,
            ingest_internal.days_merged_sql(cfg, 3, 2, 11, 12, dims_expr));
    END IF;

    -- which path a range took (not on Citus, answered above), for tests and
    -- for a user asking why a call is slow (client_min_messages = debug1)
    RAISE DEBUG 'usage of "%": %', tbl, CASE
        WHEN d_from >= d_to THEN 'hourly rows alone (per hour, days of another zone, or no whole UTC day)'
        WHEN days_passed THEN 'whole days from their daily rows merged, alone'
        WHEN plain AND granularity = 'day'
            THEN format('whole days from their daily rows, %s of them merged with deltas', cardinality(mixed))
        WHEN plain THEN 'whole days from their daily rows merged, then with the deltas and edge hours'
        ELSE 'a stale hour or a rollup being built: whole days through daily_rows' END;
    RETURN QUERY EXECUTE format($q$
        WITH src AS (
            SELECT * FROM ingest_internal.rollup_rows($1, $3, $2, $6, $11) WHERE $6 < $11
            UNION ALL
            SELECT * FROM (%5$s) y WHERE $11 < $12 AND NOT $14
            UNION ALL
            SELECT * FROM ingest_internal.rollup_rows($1, $3, $2, $12, $7) WHERE $12 < $7
            UNION ALL
            SELECT e.* FROM %1$s WHERE $4 < LEAST($6, $8)
            UNION ALL
            SELECT e.* FROM %2$s WHERE $7 < $8
        )
        SELECT u.* FROM (
            SELECT m.code, m.external_customer_id, m.dims, m.bucket, m.events, m.value_sum,
                   m.decimal_sum, m.value_min, m.value_max, m.latest_value, m.latest_at
              FROM (SELECT s.code, s.external_customer_id, %6$s AS dims, %3$s AS bucket, %4$s
                      FROM src s
                     WHERE ($9::text IS NULL OR s.code = $9)
                       AND ($10::text IS NULL OR s.external_customer_id = $10)
                     GROUP BY 1, 2, 3, 4) m
            UNION ALL
            (%7$s)) u
         ORDER BY 4, 1, 2, 3$q$,
        ingest_internal.owner_agg_sql(ingest_internal.rollup_agg_sql(tbl::text,
                                      format(edge, '$4', 'LEAST($6, $8)')), 8),
        ingest_internal.owner_agg_sql(ingest_internal.rollup_agg_sql(tbl::text,
                                      format(edge, '$7', '$8')), 8),
        bucket_expr, ingest_internal.rollup_merge_sql(),
        -- plain days (the usual case) read in this statement, not through
        -- daily_rows' result set
        CASE WHEN plain AND granularity = 'day' THEN ingest_internal.plain_days_sql(cfg, 3, 2, 11, 12, 13)
             -- (only totals and UTC days have plain days)
             WHEN plain THEN ingest_internal.plain_days_sql(cfg, 3, 2, 11, 12, NULL, dims_expr)
             ELSE 'SELECT * FROM ingest_internal.daily_rows($1, $3, $2, $11, $12)' END,
        dims_expr, passed)
    USING tbl, organization_id, rollup, from_ts, time_zone, h_from, h_to, to_ts, code,
          external_customer_id, d_from, d_to, mixed, days_passed;
END
$$;
CREATE OR REPLACE FUNCTION ingest.usage(tbl regclass, organization_id uuid, from_ts timestamptz,
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
CREATE OR REPLACE FUNCTION ingest_internal.rollup_known_from(tbl regclass, rollup text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    known timestamptz;
    building boolean;
BEGIN
    SELECT rc.known_from, rc.building_xid IS NOT NULL INTO known, building FROM ingest.rollup_config rc
     WHERE rc.event_table = tbl AND rc.name = rollup;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rollup "%" of table "%" does not exist', rollup, tbl
            USING ERRCODE = 'undefined_object';
    END IF;
    -- a rollup not built yet is answered from the raw events: from those
    -- retained now (retention may have retired days since its creation)
    IF building THEN
        RETURN GREATEST(known, COALESCE(ingest_internal.last_stretch(ingest_internal.raw_hours(tbl)),
                                        'infinity'));
    END IF;
    RETURN known;
END
$$;

-- The first hour from which a rollup can be checked against raw events:
-- retained, and known to the rollup.  Raises 42704 for an unknown rollup.
CREATE OR REPLACE FUNCTION ingest_internal.rollup_horizon(tbl regclass, rollup text, from_ts timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN GREATEST(date_trunc('hour', from_ts, 'UTC'), lower(ingest_internal.raw_hours(tbl)),
                    ingest_internal.rollup_known_from(tbl, rollup));
END
$$;

-- Every (key, hour, measure) where the rollup as readers see it and the raw
-- events disagree, for the hours of [from_ts, to_ts) still retained (not
-- those of a hole, raw_ranges).
CREATE OR REPLACE FUNCTION ingest.rollup_verify(tbl regclass, from_ts timestamptz, to_ts timestamptz,
                                     rollup text DEFAULT NULL)
RETURNS TABLE(organization_id uuid, code text, external_customer_id text, dimensions jsonb,
              hour timestamptz, measure text, rollup_value text, raw_value text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lo timestamptz;
BEGIN
    PERFORM ingest_internal.require_reader(tbl);
    PERFORM ingest_internal.require_managed(tbl);
    -- whole hours: a range that ends inside an hour verifies all of it, as
    -- it starts with all of the hour of from_ts (rollup_horizon)
    to_ts := date_trunc('hour', to_ts - interval '1 microsecond', 'UTC') + interval '1 hour';
    IF ingest_internal.on_citus(tbl) THEN
        RETURN QUERY SELECT * FROM ingest_internal.citus_rollup_verify(tbl, from_ts, to_ts, rollup);
        RETURN;
    END IF;
    rollup := COALESCE(rollup, 'default');
    lo := ingest_internal.rollup_horizon(tbl, rollup, from_ts);
    RETURN QUERY EXECUTE format($q$
        WITH ro AS (
            SELECT s.organization_id, s.hour, s.code, s.external_customer_id, s.dims, %1$s
              FROM ingest_internal.rollup_rows($1, $2, NULL, $3, $4) s
             WHERE s.hour OPERATOR(pg_catalog.<@) $5
             GROUP BY 1, 2, 3, 4, 5
        ), raw AS (SELECT e.* FROM %2$s)
        SELECT COALESCE(ro.organization_id, raw.organization_id), COALESCE(ro.code, raw.code),
               COALESCE(ro.external_customer_id, raw.external_customer_id), COALESCE(ro.dims, raw.dims),
               COALESCE(ro.hour, raw.hour), m.measure, m.a, m.b
          FROM ro FULL JOIN raw
            ON ro.organization_id = raw.organization_id AND ro.hour = raw.hour
           AND ro.code = raw.code AND ro.external_customer_id = raw.external_customer_id
           AND ro.dims = raw.dims
         CROSS JOIN LATERAL (VALUES
               ('events', ro.events::text, raw.events::text, NULL::boolean),
               ('value_sum', ro.value_sum::text, raw.value_sum::text, NULL),
               ('decimal_sum', ro.decimal_sum::text, raw.decimal_sum::text, NULL),
               -- 0 and -0 are equal, and a min or max of both is either
               ('value_min', ro.value_min::text, raw.value_min::text, ro.value_min IS NOT DISTINCT FROM raw.value_min),
               ('value_max', ro.value_max::text, raw.value_max::text, ro.value_max IS NOT DISTINCT FROM raw.value_max),
               ('latest_value', ro.latest_value::text, raw.latest_value::text, NULL),
               ('latest_at', ro.latest_at::text, raw.latest_at::text, NULL)) AS m(measure, a, b, same)
         WHERE COALESCE(NOT m.same, m.a IS DISTINCT FROM m.b)
         ORDER BY 5, 1, 2, 3, 4, 6$q$,
        ingest_internal.rollup_merge_sql(),
        ingest_internal.owner_agg_sql(ingest_internal.rollup_agg_sql(tbl::text,
            'rc.name = $2 AND e."timestamp" >= $3 AND e."timestamp" < $4 '
            'AND e."timestamp" OPERATOR(pg_catalog.<@) $5'), 5))
    USING tbl, rollup, lo, to_ts, ingest_internal.raw_hours(tbl);
END
$$;
COMMENT ON FUNCTION ingest.rollup_verify(regclass, timestamptz, timestamptz, text) IS
    'Every (key, hour, measure) where the rollup and the raw events disagree in [from_ts, to_ts), for hours whose raw events are retained; empty when exact';

-- Recompute the rollups of the retained hours of [from_ts, to_ts) from raw
-- events: the hours are marked stale and folded at once, safely while
-- loaders run.
CREATE OR REPLACE FUNCTION ingest.rollup_rebuild(tbl regclass, from_ts timestamptz, to_ts timestamptz,
                                      rollup text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ingest_internal.require_owner(tbl);
    PERFORM ingest_internal.require_managed(tbl);
    IF ingest_internal.on_citus(tbl) THEN
        RETURN ingest_internal.citus_rollup_rebuild(tbl, from_ts, to_ts, rollup);
    END IF;
    PERFORM ingest_internal.mark_stale(tbl, NULL,
        ingest_internal.rollup_horizon(tbl, COALESCE(rollup, 'default'), from_ts), to_ts);
    RETURN ingest_internal.fold(tbl, true);
END
$$;
COMMENT ON FUNCTION ingest.rollup_rebuild(regclass, timestamptz, timestamptz, text) IS
    'Recompute the hourly rollups of the retained hours in [from_ts, to_ts) from raw events, safely while loaders run; returns the rollup rows written';

-- A new rollup is built in the background, like CREATE INDEX CONCURRENTLY:
-- it is registered at once and every writer from then on feeds it; the next
-- fold after the last older snapshot is gone computes it from raw events.
-- Until then readers compute it from raw events.  Writers never wait.
CREATE OR REPLACE FUNCTION ingest.create_rollup(tbl regclass, name text, dimensions text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tbl IS NOT NULL THEN
        PERFORM ingest_internal.require_owner(tbl);
    END IF;
    IF tbl IS NULL OR name IS NULL OR dimensions IS NULL THEN
        RAISE EXCEPTION 'tbl, name and dimensions must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- ROW SHARE (as SELECT ... FOR UPDATE) blocks no writer and no
    -- maintenance step, only what takes EXCLUSIVE or ACCESS EXCLUSIVE:
    -- distribute_table() waits for this transaction and then sees the
    -- rollup, or this waits for it and sees Citus hold the table
    PERFORM ingest_internal.lock_managed(tbl, 'row share', 'ingest.create_rollup()');
    PERFORM ingest_internal.refuse_on_citus(tbl, 'create a rollup of');
    IF cardinality(dimensions) = 0 OR array_position(dimensions, NULL) IS NOT NULL
       OR (SELECT count(DISTINCT d) FROM unnest(dimensions) d) <> cardinality(dimensions) THEN
        RAISE EXCEPTION 'dimensions must name distinct property keys'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM ingest.rollup_config rc WHERE rc.event_table = tbl AND rc.name = create_rollup.name) THEN
        RAISE EXCEPTION 'rollup "%" of table "%" already exists', name, tbl USING ERRCODE = 'duplicate_object';
    END IF;
    INSERT INTO ingest.rollup_config (event_table, name, dimensions, known_from, building_xid)
    VALUES (tbl, name, dimensions, ingest_internal.last_stretch(ingest_internal.raw_hours(tbl)),
            pg_current_xact_id());
END
$$;
COMMENT ON FUNCTION ingest.create_rollup(regclass, text, text[]) IS
    'Add an hourly rollup grouped also by property keys; built in the background from the raw events still retained (earlier hours are unknown), without blocking writers';

CREATE OR REPLACE FUNCTION ingest.drop_rollup(tbl regclass, name text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg ingest.table_config := ingest_internal.require_managed(tbl);
BEGIN
    PERFORM ingest_internal.require_owner(tbl);
    IF name = 'default' THEN
        RAISE EXCEPTION 'the default rollup cannot be dropped' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- after a running fold, which may be writing the rollup's rows
    PERFORM ingest_internal.lock_fold(tbl, true);
    DELETE FROM ingest.rollup_config rc WHERE rc.event_table = tbl AND rc.name = drop_rollup.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rollup "%" of table "%" does not exist', name, tbl USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DELETE FROM %s r WHERE r.rollup = $1', cfg.rollup_hours) USING name;
    EXECUTE format('DELETE FROM %s d WHERE d.rollup = $1', cfg.rollup_deltas) USING name;
    EXECUTE format('DELETE FROM %s y WHERE y.rollup = $1', cfg.rollup_days) USING name;
END
$$;
COMMENT ON FUNCTION ingest.drop_rollup(regclass, text) IS
    'Remove a rollup made by ingest.create_rollup() and its data';


-- The worker folds each table in a transaction of its own (fold.c): the
-- tables whose fold is due, and the outcome of one, with the backoff of
-- partition maintenance (one failing table never holds up another's).
CREATE OR REPLACE FUNCTION ingest_internal.folds_due()
RETURNS SETOF oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.event_table::oid FROM ingest.table_config c
      LEFT JOIN ingest_internal.fold_state f ON f.relid = c.event_table
     WHERE f.next_attempt_at IS NULL OR f.next_attempt_at <= pg_catalog.now()
     ORDER BY 1
$$;

CREATE OR REPLACE FUNCTION ingest_internal.record_fold(tbl oid, started timestamptz,
                                            err_state text, err_message text,
                                            interval_s integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- not for a table unmanaged or dropped meanwhile: its state is gone (the
    -- row lock waits for an unmanage in progress)
    INSERT INTO ingest_internal.fold_state (relid)
    SELECT tbl WHERE EXISTS (SELECT FROM ingest.table_config c WHERE c.event_table = tbl
                             FOR KEY SHARE)
    ON CONFLICT (relid) DO NOTHING;
    UPDATE ingest_internal.fold_state f
       SET last_fold_at = started,
           last_fold_seconds = EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started),
           last_success_at = CASE WHEN err_state IS NULL THEN started ELSE f.last_success_at END,
           last_error_at = CASE WHEN err_state IS NULL THEN f.last_error_at ELSE started END,
           last_sqlstate = COALESCE(err_state, f.last_sqlstate),
           last_error = COALESCE(err_message, f.last_error),
           consecutive_failures = CASE WHEN err_state IS NULL THEN 0 ELSE f.consecutive_failures + 1 END,
           -- a fold has no runway: backoff up to an hour
           next_attempt_at = CASE WHEN err_state IS NULL THEN NULL
                                  ELSE pg_catalog.now() + ingest_internal.retry_delay(
                                           f.consecutive_failures + 1, interval_s, interval '4 hours') END
     WHERE f.relid = tbl;
END
$$;

-- Rollup rows waiting for a fold, per rollup: deltas, and the table's stale
-- hour marks.  For the table's readers and pg_monitor.
CREATE OR REPLACE FUNCTION ingest_side.rollup_backlog(tbl regclass,
                                       OUT rollup text, OUT deltas bigint, OUT stale_marks bigint)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg ingest.table_config;
    who regrole := ingest_internal.caller();
BEGIN
    SELECT * INTO cfg FROM ingest.table_config c WHERE c.event_table = tbl;
    IF NOT FOUND OR NOT (pg_has_role(who, 'pg_monitor', 'USAGE')
                         OR has_table_privilege(who, tbl, 'SELECT')) THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT rc.name, (SELECT count(*) FROM %s d WHERE d.rollup = rc.name), '
        '       (SELECT count(*) FROM %s s) '
        '  FROM ingest.rollup_config rc WHERE rc.event_table = $1',
        cfg.rollup_deltas, cfg.rollup_stale)
      USING tbl;
END
$$;
REVOKE ALL ON FUNCTION ingest_side.rollup_backlog(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ingest_side.rollup_backlog(regclass) TO PUBLIC;

CREATE OR REPLACE VIEW ingest.rollup_health AS
SELECT rc.event_table,
       rc.name AS rollup,
       rc.building_xid IS NOT NULL AS building,
       b.deltas AS deltas_waiting,
       b.stale_marks AS stale_hours_waiting,
       -- what waits was committed after the last successful fold began
       CASE WHEN b.deltas > 0 OR b.stale_marks > 0
            THEN pg_catalog.now() - COALESCE(f.last_success_at, rc.created_at)
            ELSE interval '0' END AS fold_lag,
       f.last_fold_at,
       f.last_fold_seconds,
       f.last_success_at,
       f.last_error_at,
       f.last_sqlstate,
       -- error texts can quote stored values: the table owner's to read
       CASE WHEN pg_catalog.pg_has_role(pc.relowner, 'USAGE') THEN f.last_error END AS last_error,
       COALESCE(f.consecutive_failures, 0) AS consecutive_failures,
       f.next_attempt_at
  FROM ingest.rollup_config rc
  JOIN pg_catalog.pg_class pc ON pc.oid = rc.event_table
  LEFT JOIN ingest_internal.fold_state f ON f.relid = rc.event_table
  LEFT JOIN LATERAL ingest_side.rollup_backlog(rc.event_table) b ON b.rollup = rc.name;
COMMENT ON VIEW ingest.rollup_health IS
    'Per managed table and rollup: deltas and stale hours waiting for a fold, fold lag, the last fold''s time, duration and error with SQLSTATE, and the next attempt';
GRANT SELECT ON ingest.rollup_health TO PUBLIC;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ingest_internal FROM PUBLIC;
