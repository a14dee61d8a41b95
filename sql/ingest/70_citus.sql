-- Scale-out on Citus.  ingest.distribute_table() distributes a managed
-- table by organization_id and its side tables colocated with it, so that
-- each key's claim and each organization's rollup feed, fold and usage stay
-- on one shard and move with it.  The coordinator keeps the table's policy
-- and makes and retires its partitions through Citus.  Each node with
-- shards treats each shard of the table it holds as a managed table of its
-- own (managed_by 'citus_shard', side tables the colocated shards), adopted
-- by the node's worker every fold interval, or by the first write that
-- finds it not adopted yet (src/citus.c): the loader, the triggers and the
-- fold then run on the shard as on any managed table.

-- Whether the side state of a managed table is on Citus shards (src/managed.c).
CREATE OR REPLACE FUNCTION ingest_internal.on_citus(tbl regclass)
RETURNS boolean
LANGUAGE C STABLE STRICT
AS 'MODULE_PATHNAME', 'ingest_on_citus';

-- Whether Citus holds a relation: distributed, reference or local (src/citus.c).
CREATE OR REPLACE FUNCTION ingest_internal.citus_holds(rel regclass)
RETURNS boolean
LANGUAGE C STABLE STRICT
AS 'MODULE_PATHNAME', 'ingest_citus_holds';

-- The shard id that a relation's name carries, as Citus names shards
-- <table>_<shardid>; NULL if none (src/citus.c).
CREATE OR REPLACE FUNCTION ingest_internal.citus_shard_id(rel regclass)
RETURNS bigint
LANGUAGE C STABLE STRICT
AS 'MODULE_PATHNAME', 'ingest_citus_shard_id';

-- 0A000 for what ingest does not yet do on a distributed table ("action"
-- says what: 'create a rollup of').
CREATE OR REPLACE FUNCTION ingest_internal.refuse_on_citus(tbl regclass, action text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF ingest_internal.on_citus(tbl) THEN
        RAISE EXCEPTION 'cannot % table "%": it is distributed by Citus', action, tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'ingest does not yet do this on the shards of a distributed table.';
    END IF;
END
$$;

-- What of a table's (or its partitions') own would run when its rows are
-- copied or written: triggers other than ingest's, CHECK constraints,
-- constraint triggers, index expressions and predicates, generated columns
-- and columns of types outside pg_catalog.  One row per finding.
CREATE OR REPLACE FUNCTION ingest_internal.user_code_of(tbl regclass)
RETURNS TABLE(what text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH rels AS (SELECT t.relid FROM pg_catalog.pg_partition_tree(tbl) t)
    SELECT format('trigger %I on %s', g.tgname, g.tgrelid::regclass)
      FROM pg_catalog.pg_trigger g JOIN rels r ON r.relid = g.tgrelid
     WHERE NOT g.tgisinternal AND g.tgparentid = 0
       -- ingest's own, as ingest made them (no WHEN clause of anyone's)
       AND NOT (g.tgqual IS NULL
                AND (g.tgname, g.tgfoid) IN (('ingest_dedup', 'ingest_side.dedup_row()'::regprocedure),
                                             ('ingest_changes_ins', 'ingest_side.track_changes()'::regprocedure),
                                             ('ingest_changes_upd', 'ingest_side.track_changes()'::regprocedure),
                                             ('ingest_changes_del', 'ingest_side.track_changes()'::regprocedure),
                                             ('ingest_changes_trunc', 'ingest_side.track_changes()'::regprocedure),
                                             ('ingest_block_replica', 'ingest_side.replica_guard()'::regprocedure),
                                             ('ingest_block_replica_trunc', 'ingest_side.replica_guard()'::regprocedure)))
    UNION ALL
    SELECT format('constraint %I on %s', k.conname, k.conrelid::regclass)
      FROM pg_catalog.pg_constraint k JOIN rels r ON r.relid = k.conrelid
     WHERE k.contype IN ('c', 't') AND k.conislocal
    UNION ALL
    SELECT format('index %s with an expression or a predicate', i.indexrelid::regclass)
      FROM pg_catalog.pg_index i JOIN rels r ON r.relid = i.indrelid
     WHERE i.indexprs IS NOT NULL OR i.indpred IS NOT NULL
    UNION ALL
    SELECT format('column %I of %s (%s)', a.attname, a.attrelid::regclass,
                  CASE WHEN a.attgenerated <> '' THEN 'generated'
                       ELSE 'type ' || pg_catalog.format_type(a.atttypid, a.atttypmod) END)
      FROM pg_catalog.pg_attribute a JOIN rels r ON r.relid = a.attrelid
      JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
     WHERE a.attnum > 0 AND NOT a.attisdropped
       AND (a.attgenerated <> '' OR ty.typnamespace <> 'pg_catalog'::regnamespace)
$$;

-- (Citus copies ingest's triggers to the shards only with
-- citus.enable_unsafe_triggers: they act on the shard they fire on and its
-- colocated side tables; functions and reference tables are made over one
-- connection per node.  Both settings end with the call.)
CREATE OR REPLACE FUNCTION ingest.distribute_table(tbl regclass, shard_count integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET citus.enable_unsafe_triggers = on
SET citus.multi_shard_modify_mode = 'sequential'
AS $$
DECLARE
    cfg  ingest.table_config;
    side regclass;
    dist boolean;
    why  text;
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
    -- No write and no DDL on the table from here to the commit: the
    -- checks below hold, and the deltas dropped after the copy are the
    -- copy's alone.  (Citus's own distribution takes this lock too.)  The
    -- table is not Citus's yet: a local lock is all there is to take.
    cfg := ingest_internal.lock_managed(tbl, 'exclusive', 'ingest.distribute_table()');
    IF EXISTS (SELECT FROM ingest_internal.bounds b WHERE b.relid = tbl AND b.detach_pending) THEN
        RAISE EXCEPTION 'cannot distribute table "%": a partition of it is being detached', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Let the next maintenance run finish the detach (ingest.run_maintenance).';
    END IF;
    IF ingest_internal.citus_holds(tbl) THEN
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
    -- Citus copies the rows as the extension's owner, running what the
    -- table's rows meet on the way: none of it may be the owner's code.
    SELECT string_agg(u.what, '; ') INTO why FROM ingest_internal.user_code_of(tbl) u;
    IF why IS NOT NULL THEN
        RAISE EXCEPTION 'cannot distribute table "%": it has code of its own', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = why || '.',
                  HINT = 'Drop it, distribute the table, then add it again.';
    END IF;
    IF shard_count IS NOT NULL AND shard_count < 1 THEN
        RAISE EXCEPTION 'shard_count must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    EXECUTE 'SELECT pg_catalog.current_setting(''citus.shard_replication_factor'')::integer > 1' INTO dist;
    IF dist THEN
        RAISE EXCEPTION 'cannot distribute table "%": citus.shard_replication_factor is above 1', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Each placement of a shard would keep a key ledger and rollups of its own.';
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

    -- The side tables go first, the table's own rows last: Citus copies them
    -- into shards that carry ingest's triggers, which find their shard's
    -- side tables in place and claim each row's key and feed its rollup
    -- deltas, as for any write.  So the ledger is emptied first (its keys
    -- come back, one per stored event) and the copy's deltas are dropped
    -- after (the rollup rows count those events already).
    EXECUTE format('TRUNCATE %s', cfg.ledger);
    EXECUTE 'SELECT pg_catalog.create_distributed_table($1, ''organization_id'', colocate_with => ''none'', shard_count => $2)'
      USING cfg.ledger, COALESCE(shard_count, pg_catalog.current_setting('citus.shard_count')::integer);
    FOREACH side IN ARRAY ARRAY[cfg.rollup_hours, cfg.rollup_deltas, cfg.rollup_stale, cfg.rollup_days] LOOP
        EXECUTE 'SELECT pg_catalog.create_distributed_table($1, ''organization_id'', colocate_with => $2)'
          USING side, cfg.ledger::text;
    END LOOP;

    -- the registry, where each node finds the side tables of its shards
    IF NOT ingest_internal.citus_holds('ingest_internal.citus_tables'::regclass) THEN
        EXECUTE 'SELECT pg_catalog.create_reference_table($1)' USING 'ingest_internal.citus_tables'::regclass;
    END IF;
    INSERT INTO ingest_internal.citus_tables
    SELECT tbl::text, cfg.ledger::text, cfg.rollup_hours::text, cfg.rollup_deltas::text,
           cfg.rollup_stale::text, cfg.rollup_days::text, cfg.time_zone, cfg.on_error,
           cfg.rollup_retention,
           (SELECT rc.known_from FROM ingest.rollup_config rc
             WHERE rc.event_table = tbl AND rc.name = 'default');

    -- The table itself.  (Citus needs one role for all of it in one
    -- transaction; nothing of the owner's runs: user_code_of above.)
    EXECUTE 'SELECT pg_catalog.create_distributed_table($1, ''organization_id'', colocate_with => $2)'
      USING tbl, cfg.ledger::text;
    EXECUTE format('DELETE FROM %s', cfg.rollup_deltas);
    -- Citus leaves the copied rows on the coordinator's disk, unseen
    FOREACH side IN ARRAY ARRAY[tbl, cfg.ledger, cfg.rollup_hours, cfg.rollup_deltas, cfg.rollup_stale,
                                 cfg.rollup_days] LOOP
        EXECUTE 'SELECT pg_catalog.truncate_local_data_after_distributing_table($1)' USING side;
    END LOOP;

    -- ingest.usage() of one organization runs on the node of its shard:
    -- Citus sends a call of this function there (usage_citus)
    -- (two statements: the second sees the shard adopted by the first)
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %s(org uuid, from_us bigint, to_us bigint, granularity text,
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
            shard := ingest_internal.citus_shard_of(%L::pg_catalog.regclass, org);
            RETURN QUERY SELECT * FROM ingest.usage(shard, org,
                                        'epoch'::timestamptz + from_us * interval '1 microsecond',
                                        'epoch'::timestamptz + to_us * interval '1 microsecond',
                                        NULL, NULL, NULL, granularity, time_zone);
        END$b$, tbl::text));
    EXECUTE format('REVOKE ALL ON FUNCTION %s(uuid, bigint, bigint, text, text) FROM PUBLIC',
                   ingest_internal.citus_usage_function(cfg));
    EXECUTE 'SELECT pg_catalog.create_distributed_function($1::pg_catalog.regprocedure, ''$1'', colocate_with => $2, force_delegation => true)'
      USING ingest_internal.citus_usage_function(cfg)
            || '(uuid, bigint, bigint, text, text)', tbl::text;
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

-- The shards placed on this node of table "tbl" (NULL: of every table
-- ingest.distribute_table() distributed), by shard id, each with its
-- relation here (NULL when it is missing).  The one list of "this node's
-- shards" the worker's adoption, the per-node actions and the cluster-wide
-- answers take.
CREATE OR REPLACE FUNCTION ingest_internal.citus_placed_shards(tbl regclass)
RETURNS TABLE(shard regclass, shardid bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension e WHERE e.extname = 'citus') THEN
        RETURN;
    END IF;
    -- one table's: a query of the catalog alone, which Citus leaves to
    -- PostgreSQL (naming the reference table citus_tables would have Citus
    -- plan it, and need a copy of that table on this node)
    IF tbl IS NOT NULL THEN
        RETURN QUERY EXECUTE
            'SELECT ingest_internal.citus_shard_rel(d.logicalrelid, d.shardid), d.shardid
               FROM pg_catalog.pg_dist_shard d
              WHERE d.logicalrelid = $1 AND ingest_internal.citus_placed_here(d.shardid)
              ORDER BY d.shardid' USING tbl;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT ingest_internal.citus_shard_rel(d.logicalrelid, d.shardid), d.shardid
           FROM pg_catalog.pg_dist_shard d
          WHERE d.logicalrelid IN (SELECT pg_catalog.to_regclass(r.event_table)
                                     FROM ingest_internal.citus_tables r)
            AND ingest_internal.citus_placed_here(d.shardid)
          ORDER BY d.shardid';
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
    shardid := ingest_internal.citus_shard_id(shard);
    EXECUTE 'SELECT d.shardid FROM pg_catalog.pg_dist_shard d
              WHERE d.shardid = $2 AND ingest_internal.citus_shard_rel(d.logicalrelid, d.shardid) = $1'
       INTO shardid USING shard, shardid;
    IF shardid IS NULL THEN
        RETURN false;
    END IF;
    -- 5: ShareLock
    EXECUTE 'SELECT pg_catalog.lock_shard_metadata(5, ARRAY[$1])' USING shardid;
    IF NOT ingest_internal.citus_registered(shard, shardid) THEN
        -- the table is no longer ingest's (unmanaged): forget the shard
        PERFORM ingest_internal.forget_table(shard);
        RETURN false;
    END IF;
    RETURN ingest_internal.citus_placed_here(shardid);
END
$$;

-- Whether shard "shardid" belongs to a table that the registry (its shard
-- on this node: the reference table itself cannot be read inside a shard's
-- query) lists; the registry row when it does.
CREATE OR REPLACE FUNCTION ingest_internal.citus_registry_row(shard regclass, shardid bigint)
RETURNS ingest_internal.citus_tables
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    logical  regclass;
    registry regclass;
    reg      ingest_internal.citus_tables;
BEGIN
    EXECUTE 'SELECT d.logicalrelid FROM pg_catalog.pg_dist_shard d
              WHERE d.shardid = $2 AND ingest_internal.citus_shard_rel(d.logicalrelid, d.shardid) = $1'
       INTO logical USING shard, shardid;
    EXECUTE 'SELECT ingest_internal.citus_shard_rel(d.logicalrelid, d.shardid)
               FROM pg_catalog.pg_dist_shard d WHERE d.logicalrelid = $1'
       INTO registry USING 'ingest_internal.citus_tables'::regclass;
    IF logical IS NULL OR registry IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT * FROM %s r WHERE r.event_table = $1', registry) INTO reg USING logical::text;
    RETURN reg;
END
$$;

CREATE OR REPLACE FUNCTION ingest_internal.citus_registered(shard regclass, shardid bigint)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (ingest_internal.citus_registry_row(shard, shardid)).event_table IS NOT NULL $$;

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
    minvalue text;
    reg      ingest_internal.citus_tables;
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
    IF NOT ingest_internal.citus_placed_here(shardid) THEN
        RETURN false;
    END IF;
    reg := ingest_internal.citus_registry_row(shard, shardid);
    IF reg.event_table IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT d.shardminvalue FROM pg_catalog.pg_dist_shard d WHERE d.shardid = $1'
       INTO minvalue USING shardid;
    FOREACH side IN ARRAY ARRAY[reg.ledger, reg.rollup_hours, reg.rollup_deltas, reg.rollup_stale,
                                 reg.rollup_days] LOOP
        EXECUTE $q$
            SELECT ingest_internal.citus_shard_rel(d.logicalrelid, d.shardid)
              FROM pg_catalog.pg_dist_shard d
             WHERE d.logicalrelid = pg_catalog.to_regclass($1) AND d.shardminvalue = $2$q$
           INTO r USING side, minvalue;
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

-- The shards this node holds of the tables ingest.distribute_table()
-- distributed, not adopted yet: the worker adopts each every fold
-- interval (citus_adopt), so that writers rarely do (a writer adopts in
-- its own transaction, for which the shard's other first writers wait).
CREATE OR REPLACE FUNCTION ingest_internal.citus_unadopted_here()
RETURNS TABLE(shard regclass, shardid bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.shard, p.shardid FROM ingest_internal.citus_placed_shards(NULL) p
     WHERE p.shard IS NOT NULL
       AND NOT EXISTS (SELECT FROM ingest.table_config c WHERE c.event_table = p.shard)
     ORDER BY p.shardid
$$;

-- The worker's adoption of one shard, in a transaction of its own and
-- without waiting: false when the shard is busy (a writer adopting it, a
-- drop or a move under way; the next fold tries again) or gone.  The lock
-- keeps a drop from committing before the adoption does.
CREATE OR REPLACE FUNCTION ingest_internal.citus_adopt(shard regclass, shardid bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_catalog.set_config('lock_timeout', '10ms', true);
    -- Citus refuses a LOCK of a shard otherwise
    PERFORM pg_catalog.set_config('citus.enable_manual_changes_to_shards', 'on', true);
    BEGIN
        EXECUTE format('LOCK TABLE %s IN ACCESS SHARE MODE', shard);
        RETURN ingest_internal.adopt_shard(shard, shardid);
    EXCEPTION WHEN lock_not_available OR undefined_table THEN
        RETURN false;
    END;
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
CREATE OR REPLACE FUNCTION ingest_internal.citus_shard_of(tbl regclass, org uuid)
RETURNS regclass
LANGUAGE plpgsql
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

-- ingest.usage() of a distributed table (from usage_rows): a call that
-- Citus delegates to the node of the organization's shard, where the shard
-- is a managed table.  Citus delegates a call whose arguments are
-- constants: the instants go as microseconds since the epoch, which no
-- DateStyle reads otherwise,
-- and the code and customer filters stay here.
CREATE OR REPLACE FUNCTION ingest_internal.usage_citus(cfg ingest.table_config, org uuid,
                                                      from_ts timestamptz, to_ts timestamptz,
                                                      code text, external_customer_id text,
                                                      rollup text, granularity text, time_zone text)
RETURNS SETOF ingest_side.usage_row
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- (usage_rows turns it off for its own statement)
SET enable_sort = on
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
                            (extract(epoch FROM from_ts) * 1000000)::bigint,
                            (extract(epoch FROM to_ts) * 1000000)::bigint,
                            granularity, time_zone)
    LOOP
        CONTINUE WHEN usage_citus.code IS NOT NULL AND r.code IS DISTINCT FROM usage_citus.code;
        CONTINUE WHEN usage_citus.external_customer_id IS NOT NULL
                  AND r.external_customer_id IS DISTINCT FROM usage_citus.external_customer_id;
        RETURN NEXT r;
    END LOOP;
END
$$;

-- The shards of distributed table "tbl" placed on this node, each adopted
-- (one statement adopts, the caller's next sees it); 55000 for one whose
-- side tables are not all here ("action" says what could not be done).
CREATE OR REPLACE FUNCTION ingest_internal.citus_shards_here(tbl regclass, action text)
RETURNS SETOF regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT p.shard, p.shardid FROM ingest_internal.citus_placed_shards(tbl) p
    LOOP
        IF s.shard IS NULL OR NOT ingest_internal.adopt_shard(s.shard, s.shardid) THEN
            RAISE EXCEPTION 'cannot % shard % of table "%" on this node: its side tables are not all here',
                            action, s.shardid, tbl
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        RETURN NEXT s.shard;
    END LOOP;
END
$$;

-- "cmd" (a statement of one value) run on every worker node, each in a
-- transaction of its own (run_command_on_workers): each node (host:port)
-- and its value.  A node that fails fails the call, naming it and "action".
CREATE OR REPLACE FUNCTION ingest_internal.citus_on_workers(tbl regclass, cmd text, action text)
RETURNS TABLE(node text, result text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    FOR r IN EXECUTE 'SELECT w.nodename, w.nodeport, w.success, w.result
                        FROM pg_catalog.run_command_on_workers($1) w' USING cmd
    LOOP
        IF NOT r.success THEN
            RAISE EXCEPTION 'could not % table "%" on node %:%: %', action, tbl, r.nodename, r.nodeport, r.result
                USING ERRCODE = 'connection_failure';
        END IF;
        node := r.nodename || ':' || r.nodeport;
        result := r.result;
        RETURN NEXT;
    END LOOP;
END
$$;

-- "tbl" and, on Citus, each shard of it that this node holds: where this
-- node keeps the table's rejects and load statistics.
CREATE OR REPLACE FUNCTION ingest_internal.tables_here(tbl regclass)
RETURNS SETOF regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN NEXT tbl;
    IF ingest_internal.citus_holds(tbl) THEN
        RETURN QUERY SELECT p.shard FROM ingest_internal.citus_placed_shards(tbl) p WHERE p.shard IS NOT NULL;
    END IF;
END
$$;

-- ingest.rejects of "tbl" on this node (of its shards here, on Citus), as a
-- jsonb array.
CREATE OR REPLACE FUNCTION ingest_internal.rejects_here(tbl regclass)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(r)), '[]')
      FROM ingest.rejects r
     WHERE r.event_table IN (SELECT ingest_internal.tables_here(tbl))
$$;

-- ingest.load_stats of "tbl" on this node (of its shards here, on Citus),
-- per hour, as a jsonb array.
CREATE OR REPLACE FUNCTION ingest_internal.load_stats_here(tbl regclass)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(h)), '[]')
      FROM (SELECT s.hour, pg_catalog.sum(s.calls) AS calls, pg_catalog.sum(s.loaded) AS loaded,
                   pg_catalog.sum(s.duplicates) AS duplicates, pg_catalog.sum(s.conflicts) AS conflicts,
                   pg_catalog.sum(s.rejected) AS rejected, pg_catalog.sum(s.bytes) AS bytes,
                   pg_catalog.sum(s.seconds) AS seconds, pg_catalog.max(s.last_load_at) AS last_load_at
              FROM ingest.load_stats s
             WHERE s.event_table IN (SELECT ingest_internal.tables_here(tbl))
             GROUP BY s.hour) h
$$;

-- The indexes of the partitions of "tbl" on this node, each with whether
-- it is valid, as a jsonb array: on Citus those of the shards this node
-- holds (the coordinator's shells are not where the rows are).
CREATE OR REPLACE FUNCTION ingest_internal.indexes_here(tbl regclass)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'partition', h.inhrelid::regclass::text, 'relation', s.rel::text,
               'index', i.indexrelid::regclass::text, 'valid', i.indisvalid AND i.indisready)
             ORDER BY h.inhrelid::regclass::text, s.rel::text, i.indexrelid::regclass::text), '[]')
      FROM pg_catalog.pg_inherits h
     CROSS JOIN LATERAL ingest_internal.tables_here(h.inhrelid::regclass) s(rel)
      JOIN pg_catalog.pg_index i ON i.indrelid = s.rel
     WHERE h.inhparent = tbl AND NOT ingest_internal.citus_holds(s.rel)
$$;

-- A "_here" function's jsonb array from this node (labelled "local") and,
-- for a table on Citus, from every worker node: the rows of all, with
-- their node.  "action" names what a failing node could not do.
CREATE OR REPLACE FUNCTION ingest_internal.rows_everywhere(tbl regclass, here regproc, action text)
RETURNS TABLE(node text, row_data jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    local jsonb;
BEGIN
    EXECUTE format('SELECT %s($1)', here) INTO local USING tbl;
    RETURN QUERY SELECT 'local', x FROM pg_catalog.jsonb_array_elements(local) x;
    IF ingest_internal.on_citus(tbl) THEN
        RETURN QUERY
        SELECT w.node, x
          FROM ingest_internal.citus_on_workers(tbl, format('SELECT %s(%L::pg_catalog.regclass)', here, tbl::text),
                                                action) w,
               LATERAL pg_catalog.jsonb_array_elements(w.result::jsonb) x;
    END IF;
END
$$;

-- Microseconds since the epoch of a finite instant, for a statement sent
-- to the nodes; 22023 for an infinite one.
CREATE OR REPLACE FUNCTION ingest_internal.citus_instant(ts timestamptz)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF ts IS NULL OR NOT pg_catalog.isfinite(ts) THEN
        RAISE EXCEPTION 'from_ts and to_ts must be finite instants for a distributed table'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (extract(epoch FROM ts) * 1000000)::bigint;
END
$$;

-- ingest.rollup_verify() of the shards of "tbl" on this node, as jsonb rows.
CREATE OR REPLACE FUNCTION ingest_internal.citus_rollup_verify_here(tbl regclass, from_us bigint,
                                                                   to_us bigint)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard regclass;
    rows  jsonb := '[]';
    found jsonb;
BEGIN
    FOR shard IN SELECT * FROM ingest_internal.citus_shards_here(tbl, 'verify') LOOP
        SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(v)), '[]') INTO found
          FROM ingest.rollup_verify(shard, 'epoch'::timestamptz + from_us * interval '1 microsecond',
                                    'epoch'::timestamptz + to_us * interval '1 microsecond') v;
        rows := rows || found;
    END LOOP;
    RETURN rows;
END
$$;

-- ingest.rollup_verify() of a distributed table (from rollup_verify): each
-- node verifies the shards it holds, this one here; the rows of all, in
-- rollup_verify's order.
CREATE OR REPLACE FUNCTION ingest_internal.citus_rollup_verify(tbl regclass, from_ts timestamptz,
                                                              to_ts timestamptz, rollup text)
RETURNS TABLE(organization_id uuid, code text, external_customer_id text, dimensions jsonb,
              hour timestamptz, measure text, rollup_value text, raw_value text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    from_us bigint := ingest_internal.citus_instant(from_ts);
    to_us   bigint := ingest_internal.citus_instant(to_ts);
    rows    jsonb;
    found   text;
BEGIN
    PERFORM ingest_internal.citus_default_rollup(tbl, rollup);
    rows := ingest_internal.citus_rollup_verify_here(tbl, from_us, to_us);
    FOR found IN SELECT w.result FROM ingest_internal.citus_on_workers(tbl,
        format('SELECT ingest_internal.citus_rollup_verify_here(%L::pg_catalog.regclass, %s, %s)',
               tbl::text, from_us, to_us), 'verify the rollups of') w
    LOOP
        rows := rows || found::jsonb;
    END LOOP;
    RETURN QUERY
    SELECT x.organization_id, x.code, x.external_customer_id, x.dimensions, x.hour, x.measure,
           x.rollup_value, x.raw_value
      FROM pg_catalog.jsonb_to_recordset(rows)
           AS x(organization_id uuid, code text, external_customer_id text, dimensions jsonb,
                hour timestamptz, measure text, rollup_value text, raw_value text)
     ORDER BY 5, 1, 2, 3, 4, 6;
END
$$;

-- ingest.rollup_rebuild() of the shards of "tbl" on this node: the rollup
-- rows written.
CREATE OR REPLACE FUNCTION ingest_internal.citus_rollup_rebuild_here(tbl regclass, from_us bigint,
                                                                    to_us bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard   regclass;
    written bigint := 0;
BEGIN
    FOR shard IN SELECT * FROM ingest_internal.citus_shards_here(tbl, 'rebuild the rollups of') LOOP
        written := written + COALESCE(ingest.rollup_rebuild(shard, 'epoch'::timestamptz + from_us * interval '1 microsecond',
                                                            'epoch'::timestamptz + to_us * interval '1 microsecond'), 0);
    END LOOP;
    RETURN written;
END
$$;

-- ingest.rollup_rebuild() of a distributed table (from rollup_rebuild):
-- each node rebuilds the shards it holds, in a transaction of its own,
-- this one here; the rollup rows written by all.
CREATE OR REPLACE FUNCTION ingest_internal.citus_rollup_rebuild(tbl regclass, from_ts timestamptz,
                                                               to_ts timestamptz, rollup text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    from_us bigint := ingest_internal.citus_instant(from_ts);
    to_us   bigint := ingest_internal.citus_instant(to_ts);
BEGIN
    PERFORM ingest_internal.citus_default_rollup(tbl, rollup);
    RETURN ingest_internal.citus_rollup_rebuild_here(tbl, from_us, to_us)
         + COALESCE((SELECT sum(w.result::bigint) FROM ingest_internal.citus_on_workers(tbl,
               format('SELECT ingest_internal.citus_rollup_rebuild_here(%L::pg_catalog.regclass, %s, %s)',
                      tbl::text, from_us, to_us), 'rebuild the rollups of') w), 0);
END
$$;

-- 42704 unless "rollup" is the default one: on Citus ingest keeps no other.
CREATE OR REPLACE FUNCTION ingest_internal.citus_default_rollup(tbl regclass, rollup text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF COALESCE(rollup, 'default') <> 'default' THEN
        RAISE EXCEPTION 'rollup "%" of table "%" does not exist', rollup, tbl
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'On Citus, ingest keeps the default rollup only.';
    END IF;
END
$$;

-- 55000 when partition "part" of distributed table "tbl" (lo to hi) has
-- stale hours: the nodes fold their shards, and retention retires a day
-- only once they folded it (its rollup hours stay as they are from then).
CREATE OR REPLACE FUNCTION ingest_internal.require_folded(tbl regclass, part oid,
                                                          lo timestamptz, hi timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg   ingest.table_config := ingest_internal.require_managed(tbl);
    stale boolean;
BEGIN
    -- as the table's owner, as every statement over its side tables: in a
    -- plain DETACH's transaction the DETACH by the owner comes first, and
    -- Citus refuses a second user on the shards it touched
    SELECT e.stale INTO stale
      FROM ingest_internal.owner_query(tbl, format('SELECT EXISTS (SELECT 1 FROM %s x WHERE x.lo < $2 AND x.hi > $1)',
                                                   cfg.rollup_stale), lo, hi) AS e(stale boolean);
    IF stale THEN
        RAISE EXCEPTION 'partition % has hours that the Citus nodes have not folded yet', part::regclass
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Retention retries it after their next fold.';
    END IF;
END
$$;

-- Rejects of a managed table from every node that holds it: on Citus the
-- coordinator keeps those of ingest.load and each worker node those of the
-- shards it loaded.  Readable as ingest.rejects is: by those who may read
-- the table, unless row-level security filters it for them.
CREATE OR REPLACE FUNCTION ingest.cluster_rejects(tbl regclass)
RETURNS TABLE(node text, rejected_at timestamptz, source text, line_number bigint, raw text,
              sqlstate text, message text, kind text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ingest_internal.require_reader(tbl);
    PERFORM ingest_internal.require_managed(tbl);
    RETURN QUERY
    SELECT e.node, x.rejected_at, x.source, x.line_number, x.raw, x.sqlstate, x.message, x.kind
      FROM ingest_internal.rows_everywhere(tbl, 'ingest_internal.rejects_here', 'read the rejects of') e,
           LATERAL pg_catalog.jsonb_to_record(e.row_data)
               AS x(rejected_at timestamptz, source text, line_number bigint, raw text,
                    sqlstate text, message text, kind text)
     ORDER BY 2, 1, 4;
END
$$;
COMMENT ON FUNCTION ingest.cluster_rejects(regclass) IS
    'The rejects of a managed table on every node that holds it (on Citus: the coordinator and each worker node; elsewhere this one), with the node';

-- Load statistics of a managed table summed over every node that holds it,
-- per hour.  Readable as ingest.load_stats is.
CREATE OR REPLACE FUNCTION ingest.cluster_load_stats(tbl regclass)
RETURNS TABLE(hour timestamptz, nodes bigint, calls bigint, loaded bigint, duplicates bigint,
              conflicts bigint, rejected bigint, bytes bigint, seconds double precision,
              last_load_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (pg_catalog.pg_has_role(ingest_internal.caller(), 'pg_monitor', 'USAGE')
            OR pg_catalog.has_table_privilege(ingest_internal.caller(), tbl, 'SELECT')) THEN
        RAISE EXCEPTION 'permission denied for table %', (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = tbl)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM ingest_internal.require_managed(tbl);
    RETURN QUERY
    SELECT x.hour, pg_catalog.count(DISTINCT e.node), pg_catalog.sum(x.calls)::bigint,
           pg_catalog.sum(x.loaded)::bigint, pg_catalog.sum(x.duplicates)::bigint,
           pg_catalog.sum(x.conflicts)::bigint, pg_catalog.sum(x.rejected)::bigint,
           pg_catalog.sum(x.bytes)::bigint, pg_catalog.sum(x.seconds), pg_catalog.max(x.last_load_at)
      FROM ingest_internal.rows_everywhere(tbl, 'ingest_internal.load_stats_here', 'read the load statistics of') e,
           LATERAL pg_catalog.jsonb_to_record(e.row_data)
               AS x(hour timestamptz, calls bigint, loaded bigint, duplicates bigint, conflicts bigint,
                    rejected bigint, bytes bigint, seconds double precision, last_load_at timestamptz)
     GROUP BY x.hour
     ORDER BY x.hour;
END
$$;
COMMENT ON FUNCTION ingest.cluster_load_stats(regclass) IS
    'Load statistics of a managed table per hour, summed over every node that holds it (on Citus: the coordinator and each worker node; elsewhere this one)';

-- The indexes of a managed table's partitions on every node that holds
-- them, with whether each is valid: on Citus those of every shard.
CREATE OR REPLACE FUNCTION ingest.cluster_indexes(tbl regclass)
RETURNS TABLE(node text, partition text, relation text, index text, valid boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ingest_internal.require_managed(tbl);
    RETURN QUERY
    SELECT e.node, x.partition, x.relation, x.index, x.valid
      FROM ingest_internal.rows_everywhere(tbl, 'ingest_internal.indexes_here', 'read the indexes of') e,
           LATERAL pg_catalog.jsonb_to_record(e.row_data)
               AS x(partition text, relation text, index text, valid boolean)
     ORDER BY 2, 1, 3, 4;
END
$$;
COMMENT ON FUNCTION ingest.cluster_indexes(regclass) IS
    'Every index of every partition of a managed table on every node that holds it (on Citus: of every shard), and whether it is valid';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ingest_internal FROM PUBLIC;
