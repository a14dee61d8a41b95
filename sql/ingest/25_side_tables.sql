-- Side state of a managed table, and the triggers that keep it exact.
--
-- Each managed table has five side tables in schema ingest_side, owned by
-- the extension's owner, written as the table's owner (who may read and
-- write their rows, nothing more) and dumped with it by pg_dump:
--   <name>_keys    the key ledger: one row per stored (organization_id,
--                  transaction_id), with the payload hash of its event
--   <name>_rollup  folded hourly rollup rows
--   <name>_daily   the folded hourly rows merged per UTC day, kept equal to
--                  them by the fold, for reads over long ranges
--   <name>_deltas  rollup deltas appended by writers, not folded yet
--   <name>_stale   hour ranges whose rollup rows must be recomputed from
--                  raw events (after DELETE, UPDATE, TRUNCATE, DETACH)
-- ingest.table_config names them (regclass, so a dump restores them by
-- name).  Every write path keeps them exact in the writer's transaction:
-- the loader from C, everything else through the triggers made here.

-- The triggers' functions.  In ingest_side, executable by everyone, so
-- that an owner can add a partition by hand (CREATE TRIGGER needs them):
-- they act only on the managed table they fire for, as its owner.

-- BEFORE INSERT row trigger: INSERT and plain COPY claim keys.
CREATE OR REPLACE FUNCTION ingest_side.dedup_row()
RETURNS trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_dedup_row';

-- Statement triggers: every other change keeps the ledger and rollups.
CREATE OR REPLACE FUNCTION ingest_side.track_changes()
RETURNS trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_track_changes';
-- Why an event's keys are too wide for the side tables' indexes, or NULL
-- (the rule of src/dedup.c), for the UPDATE step of track_changes.
CREATE OR REPLACE FUNCTION ingest_side.key_width_error(transaction_id text, code text,
                                                     external_customer_id text)
RETURNS text
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'ingest_key_width_error';
GRANT EXECUTE ON FUNCTION ingest_side.key_width_error(text, text, text) TO PUBLIC;

-- The guard of replica mode (session_replication_role = replica), where
-- the triggers above do not fire: enabled for that mode only, it refuses.
CREATE OR REPLACE FUNCTION ingest_side.replica_guard()
RETURNS trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_replica_guard';
GRANT EXECUTE ON FUNCTION ingest_side.dedup_row(), ingest_side.track_changes(),
                          ingest_side.replica_guard() TO PUBLIC;

-- Is the table managed and its side state complete?  A restore brings the
-- configuration and the side tables' rows before the triggers (pg_dump puts
-- triggers last): until then the worker and the COPY hook leave the table
-- alone, so nothing is written twice.
CREATE OR REPLACE FUNCTION ingest_internal.ready(tbl regclass)
RETURNS boolean
LANGUAGE C STRICT STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_table_ready';

-- 0A000 when Citus distributes tbl (src/citus.c): ingest's side state is
-- not yet on the shards.  Nothing where Citus is not installed.
CREATE OR REPLACE FUNCTION ingest_internal.refuse_citus(tbl regclass, action text)
RETURNS void
LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_refuse_citus';

-- The management functions run as the extension's owner (SECURITY
-- DEFINER) for the table's owner: they check the calling role first.
-- 42501 unless the caller owns the table (or is a member of its owner).
CREATE OR REPLACE FUNCTION ingest_internal.require_owner(tbl regclass)
RETURNS void
LANGUAGE C STRICT STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_require_owner';

-- 42501 unless the caller may SELECT the table, 0A000 when row-level
-- security filters it for the caller.
CREATE OR REPLACE FUNCTION ingest_internal.require_reader(tbl regclass)
RETURNS void
LANGUAGE C STRICT STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_require_reader';

-- The role that called the management function.
CREATE OR REPLACE FUNCTION ingest_internal.caller()
RETURNS regrole
LANGUAGE C STRICT STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_caller';

-- The configuration of a managed table; 55000 for any other table.  The one
-- definition of "managed" for SQL callers.
CREATE OR REPLACE FUNCTION ingest_internal.require_managed(tbl regclass)
RETURNS ingest.table_config
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg ingest.table_config;
BEGIN
    SELECT * INTO cfg FROM ingest.table_config c WHERE c.event_table = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table "%" is not managed by ingest', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Use ingest.create_event_table() or ingest.manage_table() first.';
    END IF;
    RETURN cfg;
END
$$;

-- Create the side tables of a table and its usage view, owned by its owner.
CREATE OR REPLACE FUNCTION ingest_internal.start_side_tables(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nsp   name;
    rel   name;
    base  text;
    cand  text;
    n     integer := 1;
    view  text;
BEGIN
    SELECT n.nspname, c.relname INTO nsp, rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    -- cut by bytes, so that "<base>_<n>_deltas" fits in NAMEDATALEN
    base := rel;
    WHILE octet_length(base) > 48 LOOP
        base := left(base, -1);
    END LOOP;
    cand := base;
    WHILE EXISTS (SELECT 1 FROM pg_class c
                   WHERE c.relnamespace = 'ingest_side'::regnamespace
                     AND c.relname IN (cand || '_keys', cand || '_rollup',
                                       cand || '_deltas', cand || '_stale',
                                       cand || '_daily')) LOOP
        n := n + 1;
        cand := base || '_' || n;
    END LOOP;

    -- The "C" collation makes the index order the order the loader sorts
    -- keys in.  Only index probes read the ledger, so vacuums for inserts
    -- buy nothing but a scan of it each time it grows by a fifth.
    EXECUTE format($t$
        CREATE TABLE ingest_side.%I (
            organization_id uuid NOT NULL,
            transaction_id  text COLLATE "C" NOT NULL,
            payload_hash    bigint NOT NULL,
            PRIMARY KEY (organization_id, transaction_id)
        ) WITH (autovacuum_vacuum_insert_threshold = -1)$t$, cand || '_keys');
    EXECUTE format($t$
        CREATE TABLE ingest_side.%I (
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
            PRIMARY KEY (organization_id, hour, rollup, code, external_customer_id, dims)
        )$t$, cand || '_rollup');
    EXECUTE format('CREATE TABLE ingest_side.%I (LIKE ingest_side.%I)',
                   cand || '_deltas', cand || '_rollup');
    EXECUTE format('CREATE INDEX ON ingest_side.%I (organization_id, hour)', cand || '_deltas');
    -- the fold deletes deltas and stale marks, which have no key: in a FOR
    -- ALL TABLES publication a delete needs an identity
    EXECUTE format('ALTER TABLE ingest_side.%I REPLICA IDENTITY FULL', cand || '_deltas');
    -- organization_id NULL: every organization
    EXECUTE format($t$
        CREATE TABLE ingest_side.%I (
            organization_id uuid,
            lo              timestamptz NOT NULL,
            hi              timestamptz NOT NULL,
            CHECK (lo < hi)
        )$t$, cand || '_stale');
    EXECUTE format('ALTER TABLE ingest_side.%I REPLICA IDENTITY FULL', cand || '_stale');
    -- day: a UTC midnight.  Its key leads with what usage looks up: one
    -- rollup of one organization over a range of days.
    EXECUTE format('CREATE TABLE ingest_side.%I (LIKE ingest_side.%I)',
                   cand || '_daily', cand || '_rollup');
    EXECUTE format('ALTER TABLE ingest_side.%I RENAME COLUMN hour TO day', cand || '_daily');
    EXECUTE format('ALTER TABLE ingest_side.%I ADD PRIMARY KEY '
                   '(rollup, organization_id, day, code, external_customer_id, dims)', cand || '_daily');

    -- The usage view of the folded rollup, next to the table.
    view := left(rel, 49) || '_usage_hourly';
    EXECUTE format($v$CREATE VIEW %I.%I AS
        SELECT rollup, organization_id, hour, code, external_customer_id, dims AS dimensions,
               events, value_sum, decimal_sum, value_min, value_max, latest_value, latest_at
          FROM ingest_side.%I$v$, nsp, view, cand || '_rollup');
    EXECUTE format('COMMENT ON VIEW %I.%I IS %L', nsp, view,
                   'Folded hourly usage of ' || tbl::text || '; exact only together with unfolded deltas: use ingest.usage()');

    UPDATE ingest.table_config c
       SET ledger = format('ingest_side.%I', cand || '_keys')::regclass,
           rollup_hours = format('ingest_side.%I', cand || '_rollup')::regclass,
           rollup_deltas = format('ingest_side.%I', cand || '_deltas')::regclass,
           rollup_stale = format('ingest_side.%I', cand || '_stale')::regclass,
           rollup_days = format('ingest_side.%I', cand || '_daily')::regclass,
           usage_view = format('%I.%I', nsp, view)::regclass
     WHERE c.event_table = tbl;
    PERFORM ingest_internal.follow_owner(tbl);
END
$$;

-- The table's usage view, while it is one: table_config keeps its OID,
-- which, once its owner dropped it, another relation may get (after OID
-- wraparound, or in a restore of a dump): a view that reads the table's
-- rollup rows.  (The table itself may be gone: the cleanup of a dropped
-- table asks too.)
CREATE OR REPLACE FUNCTION ingest_internal.usage_view(cfg ingest.table_config)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT cfg.usage_view
      FROM pg_class v
     WHERE v.oid = cfg.usage_view AND v.relkind = 'v'
       AND EXISTS (SELECT 1 FROM pg_rewrite r
                     JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                    WHERE r.ev_class = v.oid AND d.refclassid = 'pg_class'::regclass
                      AND d.refobjid = cfg.rollup_hours)
$$;

-- The side tables belong to the extension's owner, so that no trigger,
-- rule or constraint of anyone else ever runs when ingest writes them; the
-- table's owner gets their rows (SELECT, INSERT, UPDATE, DELETE, TRUNCATE)
-- and nobody else anything.  The usage view is the table owner's.  Run at
-- their creation, and after ALTER TABLE ... OWNER TO.
CREATE OR REPLACE FUNCTION ingest_internal.follow_owner(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg      ingest.table_config := ingest_internal.require_managed(tbl);
    owner    oid := (SELECT c.relowner FROM pg_class c WHERE c.oid = tbl);
    extowner oid := (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'ingest');
    rel      regclass;
    grantee  oid;
BEGIN
    FOREACH rel IN ARRAY ARRAY[cfg.ledger, cfg.rollup_hours, cfg.rollup_deltas, cfg.rollup_stale,
                                cfg.rollup_days] LOOP
        -- (one damaged by hand may be gone)
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = rel);
        IF (SELECT c.relowner FROM pg_class c WHERE c.oid = rel) IS DISTINCT FROM extowner THEN
            EXECUTE format('ALTER TABLE %s OWNER TO %I', rel, pg_get_userbyid(extowner));
        END IF;
        FOR grantee IN SELECT DISTINCT a.grantee FROM pg_class c, aclexplode(c.relacl) a
                        WHERE c.oid = rel AND a.grantee NOT IN (extowner, owner) LOOP
            EXECUTE format('REVOKE ALL ON %s FROM %s CASCADE', rel,
                           CASE WHEN grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(grantee)) END);
        END LOOP;
        IF owner <> extowner THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON %s TO %I',
                           rel, pg_get_userbyid(owner));
        END IF;
    END LOOP;
    -- (the owner may have dropped it)
    IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = ingest_internal.usage_view(cfg) AND c.relowner <> owner) THEN
        EXECUTE format('ALTER VIEW %s OWNER TO %I', cfg.usage_view, pg_get_userbyid(owner));
    END IF;
END
$$;

-- The same after REASSIGN OWNED ... TO new_owner, which changes tables'
-- owners without ALTER TABLE ... OWNER TO: for each managed table that
-- new_owner owns now and whose side tables' grants are not its alone (a
-- Citus shard's follow its coordinator's DDL).  Anyone may run REASSIGN
-- OWNED for their own roles: only tables the new owner could have given
-- away by ALTER TABLE ... OWNER TO are touched.
CREATE OR REPLACE FUNCTION ingest_internal.follow_owners(new_owner oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    extowner oid := (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'ingest');
BEGIN
    PERFORM ingest_internal.follow_owner(c.event_table)
       FROM ingest.table_config c
       JOIN pg_class t ON t.oid = c.event_table
      WHERE c.managed_by <> 'citus_shard' AND t.relowner = new_owner
        AND EXISTS (SELECT 1 FROM unnest(ARRAY[c.ledger, c.rollup_hours, c.rollup_deltas, c.rollup_stale,
                                               c.rollup_days]) s(rel)
                      JOIN pg_class k ON k.oid = s.rel
                     WHERE k.relowner <> extowner
                        OR (t.relowner <> extowner AND NOT has_table_privilege(t.relowner, k.oid, 'SELECT'))
                        OR EXISTS (SELECT 1 FROM aclexplode(k.relacl) a
                                    WHERE a.grantee NOT IN (extowner, t.relowner)))
      ORDER BY c.event_table;
END
$$;

-- A statement built here on a relation of a managed table, run as the
-- relation's owner (SECURITY_RESTRICTED_OPERATION, pinned search_path).
CREATE OR REPLACE FUNCTION ingest_internal.owner_ddl(rel regclass, ddl text)
RETURNS void LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_owner_ddl';
-- The same for retention's own DETACH, which forget_keys follows: the hook
-- for partitions detached by hand (src/tableddl.c) lets it through.
CREATE OR REPLACE FUNCTION ingest_internal.retire_ddl(rel regclass, ddl text)
RETURNS void LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_retire_ddl';

-- A statement ingest built, run as the role that called into ingest.
CREATE OR REPLACE FUNCTION ingest_internal.caller_ddl(ddl text)
RETURNS void LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_caller_ddl';

-- A statement over a managed table and its side tables, with parameters,
-- run as the table's owner with row_security off; returns rows processed.
CREATE OR REPLACE FUNCTION ingest_internal.owner_exec(rel regclass, sql text, VARIADIC args "any")
RETURNS bigint LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_owner_exec';
-- The same without parameters.
CREATE OR REPLACE FUNCTION ingest_internal.owner_exec(rel regclass, sql text)
RETURNS bigint LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_owner_exec';

-- A query over a managed table and its side tables, with parameters, run
-- as the table's owner with row_security off in the caller's snapshot; its
-- rows as the call's column definition list says.
CREATE OR REPLACE FUNCTION ingest_internal.owner_query(rel regclass, sql text, VARIADIC args "any")
RETURNS SETOF record LANGUAGE C STABLE
SET search_path = pg_catalog, pg_temp
-- (usage_rows turns it off for its own statement)
SET enable_sort = on
AS 'MODULE_PATHNAME', 'ingest_owner_query';

-- Can ingest follow every change to the rows of rel, a managed table or a
-- partition of one (made, attached or adopted)?  Every statement that
-- writes it must fire ingest's statement triggers, and no BEFORE INSERT
-- row trigger of it fire after ingest claims a row's key (tableddl.c
-- refuses one made later).  Not a partition partitioned itself (a
-- statement naming one of its partitions fires no trigger of ingest's), a
-- foreign one (no transition tables; its rows change elsewhere), nor a
-- default partition of a table of ingest's own (retention detaches
-- concurrently, which PostgreSQL refuses while one exists).  Errors name
-- the managed table.
CREATE OR REPLACE FUNCTION ingest_internal.refuse_untrackable(rel regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    root regclass := pg_catalog.pg_partition_root(rel);
    kind "char";
    part boolean;
    bad  text;
BEGIN
    SELECT c.relkind, c.relispartition INTO kind, part FROM pg_catalog.pg_class c WHERE c.oid = rel;
    IF part AND (SELECT c.relpersistence FROM pg_catalog.pg_class c WHERE c.oid = rel) = 'u' THEN
        RAISE EXCEPTION 'partition "%" of managed table "%" is unlogged', rel, root
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'A crash would empty it while the key ledger and rollups keep its events.',
                  HINT = 'Make it a logged table (ALTER TABLE ... SET LOGGED).';
    END IF;
    IF part AND kind IN ('p', 'f') THEN
        RAISE EXCEPTION 'partition "%" of managed table "%" is a % table', rel, root,
                        CASE kind WHEN 'p' THEN 'partitioned' ELSE 'foreign' END
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'ingest follows the rows of each partition through its statement triggers, which a '
                           'statement naming a partition of a partition, or a write to a foreign table''s rows '
                           'elsewhere, would not fire.',
                  HINT = 'Make the day''s partition a plain table.';
    END IF;
    IF part AND (SELECT b.is_default FROM ingest_internal.bounds b WHERE b.partition_oid = rel)
       AND NOT ingest_internal.partman_manages(root) THEN
        RAISE EXCEPTION 'table "%" has a default partition', root
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'ingest attaches and detaches partitions concurrently, which PostgreSQL refuses while '
                           'a default partition exists.',
                  HINT = 'Move the rows of the default partition into day partitions and detach it.';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.format('%I on %s', t.tgname, t.tgrelid::regclass), ', '
                                 ORDER BY t.tgname) INTO bad
      FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = rel AND NOT t.tgisinternal AND ingest_internal.fires_after_dedup(t.tgtype, t.tgname);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'table "%" has a BEFORE INSERT row trigger that would fire after ingest claims the key', root
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = pg_catalog.format('Triggers: %s.', bad),
                  HINT = 'Rename the trigger to a name that sorts before "ingest_dedup".';
    END IF;
END
$$;

-- The statement triggers that follow every change to a table's rows, on
-- the table or one of its partitions: a statement names one of them and
-- fires only that one's triggers.
CREATE OR REPLACE FUNCTION ingest_internal.track_relation(rel regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ingest_internal.refuse_untrackable(rel);
    IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel AND t.tgname = 'ingest_changes_ins') THEN
        RETURN;
    END IF;
    PERFORM ingest_internal.owner_ddl(rel, format('CREATE TRIGGER ingest_changes_ins AFTER INSERT ON %s '
                   'REFERENCING NEW TABLE AS ingest_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ingest_side.track_changes()', rel));
    PERFORM ingest_internal.owner_ddl(rel, format('CREATE TRIGGER ingest_changes_upd AFTER UPDATE ON %s '
                   'REFERENCING OLD TABLE AS ingest_old NEW TABLE AS ingest_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ingest_side.track_changes()', rel));
    PERFORM ingest_internal.owner_ddl(rel, format('CREATE TRIGGER ingest_changes_del AFTER DELETE ON %s '
                   'REFERENCING OLD TABLE AS ingest_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ingest_side.track_changes()', rel));
    PERFORM ingest_internal.owner_ddl(rel, format('CREATE TRIGGER ingest_changes_trunc BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ingest_side.track_changes()', rel));
    PERFORM ingest_internal.owner_ddl(rel, format('CREATE TRIGGER ingest_block_replica_trunc BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ingest_side.replica_guard()', rel));
    PERFORM ingest_internal.owner_ddl(rel, format('ALTER TABLE %s ENABLE REPLICA TRIGGER ingest_block_replica_trunc', rel));
END
$$;

-- The steps of src/changes.c on the rows of a relation, as the table's
-- owner: claim their keys (23505 for a key given twice or stored), free
-- them, feed their rollup deltas.
CREATE OR REPLACE FUNCTION ingest_internal.claim_keys(tbl regclass, src regclass)
RETURNS void LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_claim_keys';
CREATE OR REPLACE FUNCTION ingest_internal.release_keys(tbl regclass, src regclass)
RETURNS void LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_release_keys';
CREATE OR REPLACE FUNCTION ingest_internal.feed_deltas(tbl regclass, src regclass)
RETURNS void LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_feed_deltas';

-- Start keeping a table's side state: its stored events' keys go to the
-- ledger (refused, 23505, when two stored events share a key) and their
-- hours to the rollups; then the triggers.
CREATE OR REPLACE FUNCTION ingest_internal.start_tracking(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ingest_internal.claim_keys(tbl, tbl);
    PERFORM ingest_internal.feed_deltas(tbl, tbl);
    PERFORM ingest_internal.install_triggers(tbl);
END
$$;

-- The triggers of a table and its partitions.  The dedup row trigger goes
-- last: it marks the table ready.
CREATE OR REPLACE FUNCTION ingest_internal.install_triggers(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
BEGIN
    PERFORM ingest_internal.track_relation(tbl);
    FOR part IN SELECT b.partition FROM ingest_internal.bounds b WHERE b.relid = tbl LOOP
        PERFORM ingest_internal.track_relation(part);
    END LOOP;
    -- on the table: every partition, also one made later, gets a clone,
    -- enabled as it is; named to sort before ingest_dedup (tableddl.c)
    PERFORM ingest_internal.owner_ddl(tbl, format('CREATE TRIGGER ingest_block_replica '
                   'BEFORE INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION ingest_side.replica_guard()', tbl));
    PERFORM ingest_internal.owner_ddl(tbl, format('ALTER TABLE %s ENABLE REPLICA TRIGGER ingest_block_replica', tbl));
    PERFORM ingest_internal.owner_ddl(tbl, format('CREATE TRIGGER ingest_dedup BEFORE INSERT ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION ingest_side.dedup_row()', tbl));
END
$$;

-- Everything ingest keeps for a table: the one cleanup, for unmanage_table
-- and for DROP TABLE (then the table itself is gone already).
CREATE OR REPLACE FUNCTION ingest_internal.forget_table(tbl oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg ingest.table_config;
    rel regclass;
    trg record;
    citus boolean := pg_catalog.current_setting('citus.version', true) IS NOT NULL;
    citus_triggers text := pg_catalog.current_setting('citus.enable_unsafe_triggers', true);
    citus_mode text := pg_catalog.current_setting('citus.multi_shard_modify_mode', true);
    distributed boolean;
BEGIN
    -- A table Citus distributes (refused by src/citus.c) is let go of too:
    -- Citus drops ingest's triggers from its shards only with this setting,
    -- and one shard at a time after the side tables' DDL in this transaction.
    IF citus THEN
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    SELECT * INTO cfg FROM ingest.table_config c WHERE c.event_table = tbl;
    distributed := ingest_internal.on_citus(tbl);
    DELETE FROM ingest.table_config c WHERE c.event_table = tbl;
    -- a Citus shard of this node: its side tables are shards too, which
    -- Citus drops and moves with it
    IF cfg.managed_by = 'citus_shard' THEN
        DELETE FROM ingest.rollup_config rc WHERE rc.event_table = tbl;
        DELETE FROM ingest.rejects r WHERE r.event_table = tbl;
        DELETE FROM ingest_internal.load_stats l WHERE l.event_table = tbl;
        DELETE FROM ingest_internal.fold_state f WHERE f.relid = tbl;
        DELETE FROM ingest_internal.table_state s WHERE s.relid = tbl;
        IF citus THEN
            PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', citus_triggers, true);
            PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', citus_mode, true);
        END IF;
        RETURN;
    END IF;
    DELETE FROM ingest_internal.table_state s WHERE s.relid = tbl;
    DELETE FROM ingest_internal.retired r WHERE r.relid = tbl;
    DELETE FROM ingest.index_config c WHERE c.event_table = tbl;
    DELETE FROM ingest_internal.index_drops x WHERE x.event_table = tbl;
    DELETE FROM ingest.rollup_config rc WHERE rc.event_table = tbl;
    DELETE FROM ingest.rejects r WHERE r.event_table = tbl;
    DELETE FROM ingest_internal.load_stats l WHERE l.event_table = tbl;
    DELETE FROM ingest_internal.fold_state f WHERE f.relid = tbl;

    -- our triggers, on the table and its partitions, while it exists
    FOR trg IN SELECT t.tgname, t.tgrelid::regclass AS rel FROM pg_trigger t
                WHERE (t.tgrelid = tbl OR t.tgrelid IN (SELECT b.partition_oid FROM ingest_internal.bounds b
                                                          WHERE b.relid = tbl))
                  AND NOT t.tgisinternal AND t.tgparentid = 0
                  AND t.tgfoid IN ('ingest_side.dedup_row()'::regprocedure,
                                   'ingest_side.track_changes()'::regprocedure,
                                   'ingest_side.replica_guard()'::regprocedure) LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trg.tgname, trg.rel);
    END LOOP;
    -- the registry row and the function that computes usage on a Citus
    -- node (70_citus.sql); each node forgets its shards of the table at
    -- its next fold of them
    IF distributed THEN
        DELETE FROM ingest_internal.citus_tables r WHERE r.ledger = cfg.ledger::text;
    END IF;
    IF cfg.ledger IS NOT NULL AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = cfg.ledger)
       AND pg_catalog.to_regprocedure(ingest_internal.citus_usage_function(cfg)
                                      || '(uuid, bigint, bigint, text, text)') IS NOT NULL THEN
        EXECUTE format('DROP FUNCTION %s(uuid, bigint, bigint, text, text)',
                       ingest_internal.citus_usage_function(cfg));
    END IF;
    -- side tables and the usage view, by OID; views anyone built on them go
    -- too, so that nobody can keep the table's owner from dropping it
    FOREACH rel IN ARRAY ARRAY[ingest_internal.usage_view(cfg)] LOOP
        IF rel IS NOT NULL AND ingest_internal.lock_table(rel, true, 'access exclusive') THEN
            EXECUTE format('DROP VIEW %s CASCADE', rel);
        END IF;
    END LOOP;
    FOREACH rel IN ARRAY ARRAY[cfg.ledger, cfg.rollup_hours, cfg.rollup_deltas, cfg.rollup_stale,
                                cfg.rollup_days] LOOP
        IF rel IS NOT NULL AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = rel) THEN
            EXECUTE format('DROP TABLE %s CASCADE', rel);
        END IF;
    END LOOP;
    IF citus THEN
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', citus_triggers, true);
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', citus_mode, true);
    END IF;
END
$$;

-- Retention, once a partition is detached: forget the keys of its events
-- (its day is set aside from now on), and settle the hours its changes
-- marked stale since the fold before its retirement (fold_retired), whose
-- rollup rows then stay as they are.  In the transaction that ends the
-- detach.
CREATE OR REPLACE FUNCTION ingest_internal.forget_keys(tbl oid, part oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg ingest.table_config := ingest_internal.require_managed(tbl);
    r   ingest_internal.retired;
BEGIN
    SELECT * INTO r FROM ingest_internal.retired x WHERE x.partition_oid = part;
    -- As the table's owner: on Citus a plain DETACH by the owner comes
    -- first in the transaction, and Citus refuses a second user on the
    -- shards it touched.
    IF ingest_internal.on_citus(tbl) THEN
        -- one statement that Citus runs shard by shard: the detached day is
        -- a table colocated with the ledger
        PERFORM ingest_internal.owner_exec(tbl, format(
            'DELETE FROM %s k USING %s p WHERE k.organization_id = p.organization_id '
            'AND k.transaction_id = p.transaction_id COLLATE "C"', cfg.ledger, part::regclass));
        -- No write reaches the day now: a stale mark committed since
        -- mark_retiring looked waits for the nodes' folds, as there.
        IF r.partition_oid IS NOT NULL THEN
            PERFORM ingest_internal.require_folded(tbl, part, r.lower_bound, r.upper_bound);
            PERFORM ingest_internal.owner_exec(tbl, format(
                'DELETE FROM %s x WHERE x.lo >= date_trunc(''hour'', $1, ''UTC'') AND x.hi <= $2',
                cfg.rollup_stale), r.lower_bound, r.upper_bound);
        END IF;
    ELSE
        IF r.partition_oid IS NOT NULL THEN
            PERFORM ingest_internal.fold_retired(tbl, part, r.lower_bound, r.upper_bound);
        END IF;
        PERFORM ingest_internal.release_keys(tbl, part);
    END IF;
END
$$;

-- A partition that joins table "tbl" (made or attached): the hours of its
-- range are marked stale, to be recomputed from its own events by the next
-- fold, when the rollup has rows or deltas before its end: a day retired
-- before and made again keeps its rollup hours, and its events would count
-- on top of them.  A day made ahead is left alone: no rollup row can lie
-- past every partition, and marking each day's premake had its fold scan
-- the whole rollup.  A day that joins before every other one, not next to
-- the first, leaves a hole between them whose raw events were retired:
-- recorded (table_config.retired), so that its rollup rows stay as they
-- are, as they did while it lay before the first partition.
CREATE OR REPLACE FUNCTION ingest_internal.stale_new_range(tbl regclass, part oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg    ingest.table_config := ingest_internal.require_managed(tbl);
    b      record;
    newest timestamptz;
    first  timestamptz;
    kept   boolean;
BEGIN
    -- (a partition of a partition has the table's range of its parent)
    SELECT x.lower_bound, x.upper_bound INTO b FROM ingest_internal.bounds x
     WHERE x.relid = tbl AND x.partition_oid = part AND NOT x.is_default;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT max(o.upper_bound), min(o.lower_bound) FILTER (WHERE NOT o.detach_pending)
      INTO newest, first FROM ingest_internal.bounds o
     WHERE o.relid = tbl AND o.partition_oid <> part AND NOT o.is_default;
    IF b.lower_bound >= newest THEN
        RETURN;
    END IF;
    IF b.upper_bound < first THEN
        UPDATE ingest.table_config c
           SET retired = c.retired OPERATOR(pg_catalog.+)
                         pg_catalog.tstzmultirange(pg_catalog.tstzrange(b.upper_bound, first))
         WHERE c.event_table = tbl;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT FROM %s h WHERE h.hour < $1) '
                   '    OR EXISTS (SELECT FROM %s d WHERE d.hour < $1)', cfg.rollup_hours, cfg.rollup_deltas)
       INTO kept USING b.upper_bound;
    IF kept THEN
        PERFORM ingest_internal.mark_stale(tbl, NULL, b.lower_bound, b.upper_bound);
    END IF;
END
$$;

-- A partition taken out by hand (DETACH, DROP): its events leave and the
-- rollups follow, also where it lay in a hole of retired days, which it
-- leaves (raw_ranges).
CREATE OR REPLACE FUNCTION ingest_internal.unretire_range(tbl regclass, part oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r tstzrange;
BEGIN
    SELECT pg_catalog.tstzrange(x.lower_bound, x.upper_bound) INTO r FROM ingest_internal.bounds x
     WHERE x.relid = tbl AND x.partition_oid = part AND NOT x.is_default;
    IF FOUND THEN
        UPDATE ingest.table_config c SET retired = c.retired OPERATOR(pg_catalog.-) pg_catalog.tstzmultirange(r)
         WHERE c.event_table = tbl AND c.retired OPERATOR(pg_catalog.&&) r;
    END IF;
END
$$;

-- Mark the hours overlapping [lo, hi) of one organization (or all, NULL)
-- for recomputation from raw events.
CREATE OR REPLACE FUNCTION ingest_internal.mark_stale(tbl regclass, org uuid,
                                                     lo timestamptz, hi timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg ingest.table_config := ingest_internal.require_managed(tbl);
BEGIN
    IF lo IS NULL OR hi IS NULL OR lo >= hi THEN
        RETURN;
    END IF;
    EXECUTE format('INSERT INTO %s VALUES ($1, date_trunc(''hour'', $2, ''UTC''), '
                   'date_trunc(''hour'', $3 - interval ''1 microsecond'', ''UTC'') + interval ''1 hour'')',
                   cfg.rollup_stale)
      USING org, lo, hi;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ingest_internal FROM PUBLIC;
