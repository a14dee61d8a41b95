-- Scale-out on Citus.  ingest.distribute_table() distributes a managed
-- table by organization_id and its side tables colocated with it, so that
-- each key's claim and each organization's rollup feed, fold and usage stay
-- on one shard and move with it.  The coordinator keeps the table's policy
-- and makes and retires its partitions through Citus.  Each node with
-- shards treats each shard of the table it holds as a managed table of its
-- own (managed_by 'citus_shard', side tables the colocated shards), adopted
-- the first time something writes it (src/citus.c): the loader, the
-- triggers and the fold then run on the shard as on any managed table.

-- Whether the side state of a managed table is on Citus shards.
CREATE OR REPLACE FUNCTION ingest_internal.on_citus(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ledger regclass := (SELECT c.ledger FROM ingest.table_config c WHERE c.event_table = tbl);
    found  boolean;
BEGIN
    IF ledger IS NULL OR NOT EXISTS (SELECT FROM pg_extension e WHERE e.extname = 'citus') THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1)'
       INTO found USING ledger;
    RETURN found;
END
$$;

CREATE OR REPLACE FUNCTION ingest.distribute_table(tbl regclass, shard_count integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg  ingest.table_config;
    side regclass;
    dist boolean;
BEGIN
    PERFORM ingest_internal.require_owner(tbl);
    IF NOT EXISTS (SELECT FROM pg_extension e WHERE e.extname = 'citus') THEN
        RAISE EXCEPTION 'cannot distribute table "%": the citus extension is not installed in this database', tbl
            USING ERRCODE = 'feature_not_supported';
    END IF;
    EXECUTE 'SELECT pg_catalog.citus_is_coordinator()' INTO dist;
    IF NOT dist THEN
        RAISE EXCEPTION 'cannot distribute table "%": this node is not the Citus coordinator', tbl
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Run ingest.distribute_table() on the coordinator.';
    END IF;
    cfg := ingest_internal.require_managed(tbl);
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1)'
       INTO dist USING tbl;
    IF dist THEN
        RAISE EXCEPTION 'cannot distribute table "%": Citus holds it already', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Distribute a managed table with ingest.distribute_table() alone, not with create_distributed_table().';
    END IF;
    IF cfg.managed_by <> 'ingest' THEN
        RAISE EXCEPTION 'cannot distribute table "%": its partitions are made by %', tbl, cfg.managed_by
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF EXISTS (SELECT FROM ingest.rollup_config rc
                WHERE rc.event_table = tbl AND rc.dimensions <> '{}'::text[]) THEN
        RAISE EXCEPTION 'cannot distribute table "%": it has rollups by properties', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'On Citus, ingest keeps the default rollup only.',
                  HINT = 'Drop them with ingest.drop_rollup() first.';
    END IF;
    IF shard_count IS NOT NULL AND shard_count < 1 THEN
        RAISE EXCEPTION 'shard_count must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Deltas and stale hours are folded here first: from now on each node
    -- folds its own shards.
    PERFORM ingest_internal.fold(tbl, true);
    EXECUTE format('SELECT EXISTS (SELECT FROM %s)', cfg.rollup_stale) INTO dist;
    IF dist THEN
        RAISE EXCEPTION 'cannot distribute table "%" now: hours changed by a concurrent transaction wait for a fold', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Try again.';
    END IF;

    -- Citus copies ingest's triggers to the shards only with this setting:
    -- they act on the shard they fire on and its colocated side tables.
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    -- functions and reference tables are made over one connection per node
    PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    -- The table's rows go to its shards before their side tables exist
    -- there: ingest's triggers on the shards let them by, and the ledger's
    -- and rollups' rows follow in their own copy.
    PERFORM ingest_internal.set_local_everywhere('ingest.citus_distributing', 'on');
    EXECUTE 'SELECT pg_catalog.create_distributed_table($1, ''organization_id'', colocate_with => ''none'', shard_count => $2)'
      USING tbl, COALESCE(shard_count, pg_catalog.current_setting('citus.shard_count')::integer);
    FOREACH side IN ARRAY ARRAY[cfg.ledger, cfg.rollup_hours, cfg.rollup_deltas, cfg.rollup_stale,
                                 cfg.rollup_days] LOOP
        EXECUTE 'SELECT pg_catalog.create_distributed_table($1, ''organization_id'', colocate_with => $2)'
          USING side, tbl::text;
    END LOOP;

    -- ingest.usage() of one organization runs on the node of its shard:
    -- Citus sends a call of this function there (usage_citus)
    -- (two statements: the second sees the shard adopted by the first)
    EXECUTE format($f$
        CREATE FUNCTION %s(org uuid, from_epoch numeric, to_epoch numeric, granularity text,
                           time_zone text)
        RETURNS SETOF ingest_side.usage_row
        LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp
        AS %L$f$,
        ingest_internal.citus_usage_function(cfg),
        format($b$
        DECLARE
            shard regclass;
        BEGIN
            shard := ingest_side.citus_shard_of(%L::pg_catalog.regclass, org);
            RETURN QUERY SELECT * FROM ingest.usage(shard, org,
                                        'epoch'::timestamptz + from_epoch * interval '1 second',
                                        'epoch'::timestamptz + to_epoch * interval '1 second',
                                        NULL, NULL, NULL, granularity, time_zone);
        END$b$, tbl::text));
    EXECUTE 'SELECT pg_catalog.create_distributed_function($1::pg_catalog.regprocedure, ''$1'', colocate_with => $2, force_delegation => true)'
      USING ingest_internal.citus_usage_function(cfg)
            || '(uuid, numeric, numeric, text, text)', tbl::text;

    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1)'
       INTO dist USING 'ingest_internal.citus_tables'::regclass;
    IF NOT dist THEN
        EXECUTE 'SELECT pg_catalog.create_reference_table($1)' USING 'ingest_internal.citus_tables'::regclass;
    END IF;
    INSERT INTO ingest_internal.citus_tables
    SELECT tbl::text, cfg.ledger::text, cfg.rollup_hours::text, cfg.rollup_deltas::text,
           cfg.rollup_stale::text, cfg.rollup_days::text, cfg.time_zone, cfg.on_error,
           cfg.rollup_retention,
           (SELECT rc.known_from FROM ingest.rollup_config rc
             WHERE rc.event_table = tbl AND rc.name = 'default');
    PERFORM ingest_internal.set_local_everywhere('ingest.citus_distributing', 'off');
END
$$;
COMMENT ON FUNCTION ingest.distribute_table(regclass, integer) IS
    'On a Citus coordinator: distribute a managed table by organization_id, its key ledger and rollups colocated with it';

-- A Citus shard as a relation of this node, NULL if not here.  Citus names
-- it <table>_<shardid> in the table's schema; shard_name() leaves "public"
-- out, which a pinned search_path needs.
CREATE OR REPLACE FUNCTION ingest_internal.citus_shard_rel(tbl regclass, shardid bigint)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    name text;
BEGIN
    EXECUTE 'SELECT pg_catalog.shard_name($1, $2)' INTO name USING tbl, shardid;
    IF (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = tbl) = 'public' THEN
        name := 'public.' || name;
    END IF;
    RETURN pg_catalog.to_regclass(name);
END
$$;

-- Whether this node holds a placement of a Citus shard.  A shard that
-- Citus is copying in (a shard move or split) has none yet: its rows are
-- the source placement's, with their keys and rollups, copied as they are.
CREATE OR REPLACE FUNCTION ingest_internal.citus_placed_here(shardid bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found boolean;
BEGIN
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_placement p
                             WHERE p.shardid = $1
                               AND p.groupid = (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g))'
       INTO found USING shardid;
    RETURN found;
END
$$;

-- Before a node folds a shard of its own: Citus's shard lock, in the mode
-- of a write to it, so that a shard move (which blocks writes to the shard
-- group) never copies a fold half done; false when the shard has left the
-- node meanwhile.
CREATE OR REPLACE FUNCTION ingest_internal.citus_lock_shard(shard regclass)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shardid bigint;
BEGIN
    -- Citus names a shard <table>_<shardid>
    shardid := pg_catalog.substring(shard::text, '_([0-9]+)"?$')::bigint;
    EXECUTE 'SELECT d.shardid FROM pg_catalog.pg_dist_shard d
              WHERE d.shardid = $2 AND ingest_internal.citus_shard_rel(d.logicalrelid, d.shardid) = $1'
       INTO shardid USING shard, shardid;
    IF shardid IS NULL THEN
        RETURN false;
    END IF;
    -- 5: ShareLock
    EXECUTE 'SELECT pg_catalog.lock_shard_metadata(5, ARRAY[$1])' USING shardid;
    RETURN ingest_internal.citus_placed_here(shardid);
END
$$;

-- On a node with shards: make "shard", when it is shard "shardid" of a
-- table distributed by ingest.distribute_table(), a managed table of this
-- node, its side tables the colocated shards placed here.  False when it
-- is no such shard, or its side tables are not all here.  (No pg_class
-- scan of a shard: Citus hides shards from most sessions' queries.)
CREATE OR REPLACE FUNCTION ingest_internal.adopt_shard(shard regclass, shardid bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s        record;
    reg      ingest_internal.citus_tables;
    registry regclass;
    names    regclass[] := '{}';
    side     text;
    r        regclass;
BEGIN
    IF EXISTS (SELECT FROM ingest.table_config c WHERE c.event_table = shard) THEN
        RETURN true;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_extension e WHERE e.extname = 'citus') THEN
        RETURN false;
    END IF;
    EXECUTE $q$
        SELECT d.logicalrelid, d.shardminvalue
          FROM pg_catalog.pg_dist_shard d
         WHERE d.shardid = $2 AND ingest_internal.citus_shard_rel(d.logicalrelid, d.shardid) = $1$q$
       INTO s USING shard, shardid;
    IF s.logicalrelid IS NULL OR NOT ingest_internal.citus_placed_here(shardid) THEN
        RETURN false;
    END IF;
    -- the registry's shard here (reading the reference table itself would
    -- be a distributed query, which Citus refuses inside a shard's query)
    EXECUTE $q$
        SELECT ingest_internal.citus_shard_rel(d.logicalrelid, d.shardid)
          FROM pg_catalog.pg_dist_shard d WHERE d.logicalrelid = $1$q$
       INTO registry USING 'ingest_internal.citus_tables'::regclass;
    IF registry IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT * FROM %s r WHERE r.event_table = $1', registry)
       INTO reg USING s.logicalrelid::regclass::text;
    IF reg.event_table IS NULL THEN
        RETURN false;
    END IF;
    FOREACH side IN ARRAY ARRAY[reg.ledger, reg.rollup_hours, reg.rollup_deltas, reg.rollup_stale,
                                 reg.rollup_days] LOOP
        EXECUTE $q$
            SELECT ingest_internal.citus_shard_rel(d.logicalrelid, d.shardid)
              FROM pg_catalog.pg_dist_shard d
             WHERE d.logicalrelid = pg_catalog.to_regclass($1) AND d.shardminvalue = $2$q$
           INTO r USING side, s.shardminvalue;
        IF r IS NULL THEN
            RETURN false;
        END IF;
        names := names || r;
    END LOOP;
    INSERT INTO ingest.table_config AS c (event_table, time_zone, premake, managed_by, on_error,
                                          rollup_retention, ledger, rollup_hours, rollup_deltas,
                                          rollup_stale, rollup_days)
    VALUES (shard, reg.time_zone, 0, 'citus_shard', reg.on_error, reg.rollup_retention,
            names[1], names[2], names[3], names[4], names[5])
    ON CONFLICT (event_table) DO NOTHING;
    INSERT INTO ingest.rollup_config (event_table, name, dimensions, known_from)
    VALUES (shard, 'default', '{}', reg.known_from)
    ON CONFLICT (event_table, name) DO NOTHING;
    RETURN true;
END
$$;

-- The function that Citus runs on the node of an organization's shard for
-- ingest.usage() of a distributed table, next to its side tables.
CREATE OR REPLACE FUNCTION ingest_internal.citus_usage_function(cfg ingest.table_config)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('ingest_side.%I', pg_catalog.regexp_replace(c.relname, '_keys$', '_usage'))
      FROM pg_catalog.pg_class c WHERE c.oid = cfg.ledger
$$;

-- The shard of a distributed table that holds an organization, on this
-- node, adopted as a managed table of it; 55000 when it is elsewhere.
CREATE OR REPLACE FUNCTION ingest_side.citus_shard_of(tbl regclass, org uuid)
RETURNS regclass
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shardid bigint;
    shard   regclass;
BEGIN
    EXECUTE 'SELECT pg_catalog.get_shard_id_for_distribution_column($1, $2)'
       INTO shardid USING tbl, org;
    shard := ingest_internal.citus_shard_rel(tbl, shardid);
    IF shard IS NULL OR NOT ingest_internal.adopt_shard(shard, shardid) THEN
        RAISE EXCEPTION 'the shard of table "%" for organization % is not on this node', tbl, org
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN shard;
END
$$;
GRANT EXECUTE ON FUNCTION ingest_side.citus_shard_of(regclass, uuid) TO PUBLIC;

-- ingest.usage() of a distributed table (from usage_rows): a call that
-- Citus delegates to the node of the organization's shard, where the shard
-- is a managed table.  Citus delegates a call whose arguments are
-- constants: the instants go as epochs, which no DateStyle reads otherwise,
-- and the code and customer filters stay here.
CREATE OR REPLACE FUNCTION ingest_internal.usage_citus(cfg ingest.table_config, org uuid,
                                                      from_ts timestamptz, to_ts timestamptz,
                                                      code text, external_customer_id text,
                                                      rollup text, granularity text, time_zone text)
RETURNS SETOF ingest_side.usage_row
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ingest_side.usage_row;
BEGIN
    IF COALESCE(rollup, 'default') <> 'default' THEN
        RAISE EXCEPTION 'rollup "%" of table "%" does not exist', rollup, cfg.event_table
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'On Citus, ingest keeps the default rollup only.';
    END IF;
    IF granularity NOT IN ('total', 'hour', 'day') THEN
        RAISE EXCEPTION 'unrecognized granularity "%"', granularity
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use "total", "hour" or "day".';
    END IF;
    PERFORM pg_catalog.timezone(time_zone, now());
    FOR r IN EXECUTE format('SELECT * FROM %s(%L::pg_catalog.uuid, %s, %s, %L, %L)',
                            ingest_internal.citus_usage_function(cfg), org,
                            extract(epoch FROM from_ts), extract(epoch FROM to_ts),
                            granularity, time_zone)
    LOOP
        CONTINUE WHEN usage_citus.code IS NOT NULL AND r.code IS DISTINCT FROM usage_citus.code;
        CONTINUE WHEN usage_citus.external_customer_id IS NOT NULL
                  AND r.external_customer_id IS DISTINCT FROM usage_citus.external_customer_id;
        RETURN NEXT r;
    END LOOP;
END
$$;

-- Whether a table on Citus has stale marks in [lo, hi): hours whose
-- rollup rows a node's fold has yet to recompute from the raw events.
CREATE OR REPLACE FUNCTION ingest_internal.stale_within(tbl regclass, lo timestamptz, hi timestamptz)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg   ingest.table_config := ingest_internal.require_managed(tbl);
    found boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s x WHERE x.lo < $2 AND x.hi > $1)', cfg.rollup_stale)
       INTO found USING lo, hi;
    RETURN found;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ingest_internal FROM PUBLIC;
