-- Index management: indexes declared once per table, applied to each
-- partition by phase.  "always" indexes exist on every partition from its
-- creation; "closed" ones are built when the partition's day has closed,
-- in one sorted pass (CREATE INDEX CONCURRENTLY, run by the worker).


-- Name of a declared index on one partition: <partition>_<name>, with a
-- hash suffix when that would not fit in NAMEDATALEN.
CREATE OR REPLACE FUNCTION ingest.partition_index_name(part regclass, name text)
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

-- A partition renamed by hand keeps its declared indexes (src/tableddl.c):
-- before the rename, the indexes it has by the names made from its name
-- (those of dropped declarations not dropped yet too); after it, each takes
-- the name made from the new one, as the partition's owner.
CREATE OR REPLACE FUNCTION ingest_internal.declared_indexes(part regclass)
RETURNS TABLE(idx oid, name text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.indexrelid, d.name
      FROM pg_catalog.pg_inherits h
     CROSS JOIN LATERAL (SELECT c.name FROM ingest.index_config c
                          WHERE c.event_table = h.inhparent
                         UNION
                         SELECT x.name FROM ingest_internal.index_drops x
                          WHERE x.event_table = h.inhparent) d
      JOIN pg_catalog.pg_index i ON i.indrelid = h.inhrelid
      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
     WHERE h.inhrelid = part
       AND ic.relname = ingest.partition_index_name(part, d.name)
$$;

CREATE OR REPLACE FUNCTION ingest_internal.rename_declared_index(part regclass, idx oid, name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_name text := ingest.partition_index_name(part, name);
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                 JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
                WHERE i.indexrelid = idx AND i.indrelid = part AND c.relname <> new_name) THEN
        PERFORM ingest_internal.owner_ddl(part, pg_catalog.format('ALTER INDEX %s RENAME TO %I',
                                                                  idx::regclass, new_name));
    END IF;
END
$$;

-- Seconds after its day's end at which a partition is closed.
CREATE OR REPLACE FUNCTION ingest_internal.close_delay()
RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT make_interval(secs => COALESCE(
        (SELECT setting::int FROM pg_settings WHERE name = 'ingest.close_delay'), 3600))
$$;

-- Raises 42601 unless each piece of a declaration is one piece of one
-- CREATE INDEX statement (src/indexdecl.c).
CREATE OR REPLACE FUNCTION ingest_internal.check_index_declaration(columns text[], where_clause text,
                                                                  with_options text)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_check_index_declaration';

-- Raises 42601 unless sql is exactly the one CREATE INDEX that a
-- declaration of ncolumns columns, with or without WHERE and WITH, makes.
CREATE OR REPLACE FUNCTION ingest_internal.check_index_statement(sql text, ncolumns integer,
                                                                has_where boolean, has_with boolean)
RETURNS void
LANGUAGE C STRICT IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_check_index_statement';

-- CREATE INDEX for a declared index on a relation (a partition, or a scratch
-- table to check the declaration).  Column entries are names, or
-- parenthesized expressions; every piece is checked again here, and the
-- statement they make as a whole, so a declaration stored by an older
-- version is never pasted unchecked.
CREATE OR REPLACE FUNCTION ingest_internal.index_ddl(rel regclass, index_name text, columns text[],
                                          method text, where_clause text,
                                          with_options text, concurrent boolean)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ddl text;
BEGIN
    PERFORM ingest_internal.check_index_declaration(columns, where_clause, with_options);
    IF method NOT IN ('btree', 'brin') THEN
        RAISE EXCEPTION 'index method "%" is not supported', method
            USING ERRCODE = 'feature_not_supported';
    END IF;
    ddl := format('CREATE INDEX %s%I ON %s USING %s (%s)%s%s',
                  CASE WHEN concurrent THEN 'CONCURRENTLY ' ELSE '' END,
                  index_name, rel, method,
                  (SELECT string_agg(CASE WHEN c LIKE '(%' THEN c ELSE quote_ident(c) END, ', '
                                     ORDER BY o)
                     FROM unnest(columns) WITH ORDINALITY AS u(c, o)),
                  CASE WHEN with_options IS NOT NULL THEN ' WITH (' || with_options || ')' ELSE '' END,
                  CASE WHEN where_clause IS NOT NULL THEN ' WHERE (' || where_clause || ')' ELSE '' END);
    PERFORM ingest_internal.check_index_statement(ddl, cardinality(columns), where_clause IS NOT NULL,
                                                  with_options IS NOT NULL);
    RETURN ddl;
END
$$;

-- The CREATE INDEX CONCURRENTLY statement the worker runs for one index of
-- one partition.
CREATE OR REPLACE FUNCTION ingest_internal.partition_index_ddl(part oid, name text)
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
CREATE OR REPLACE FUNCTION ingest_internal.create_always_indexes(tbl regclass, part regclass)
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
        PERFORM ingest_internal.owner_ddl(part, ingest_internal.index_ddl(
            part, ingest.partition_index_name(part, d.name),
            d.columns, d.method, d.where_clause, d.with_options, false));
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION ingest.add_index(tbl regclass, columns text[], method text DEFAULT 'btree',
                                 phase text DEFAULT 'closed', where_clause text DEFAULT NULL,
                                 with_options text DEFAULT NULL, name text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    scratch text;
    nsp     name;
BEGIN
    IF tbl IS NOT NULL THEN
        PERFORM ingest_internal.require_owner(tbl);
    END IF;
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
    -- scratch copy of the table, as its owner (restricted, search_path
    -- pinned), as the worker makes the index on the partitions: its
    -- expressions, and the input functions of its constants (a domain's
    -- CHECK among them), are parsed and run as the owner.  In the table's
    -- schema, where the owner makes its partitions (a temporary table
    -- would need TEMPORARY on the database); an error rolls it back.  Its
    -- name and its index's are random, so that no one can take them before
    -- it, nor make two calls wait for each other's.
    scratch := 'ingest_check_' || left(replace(gen_random_uuid()::text, '-', ''), 16);
    nsp := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl);
    PERFORM ingest_internal.owner_ddl(tbl, format('CREATE UNLOGGED TABLE %I.%I (LIKE %s)', nsp, scratch, tbl));
    PERFORM ingest_internal.owner_ddl(tbl, ingest_internal.index_ddl(format('%I.%I', nsp, scratch)::regclass,
                                                                     scratch || '_i', columns, method,
                                                                     where_clause, with_options, false));
    PERFORM ingest_internal.owner_ddl(tbl, format('DROP TABLE %I.%I', nsp, scratch));

    INSERT INTO ingest.index_config (event_table, name, columns, method, phase, where_clause, with_options)
    VALUES (tbl, name, columns, method, phase, where_clause, with_options);
    DELETE FROM ingest_internal.index_drops d WHERE d.event_table = tbl AND d.name = add_index.name;
    RETURN name;
END
$$;
COMMENT ON FUNCTION ingest.add_index(regclass, text[], text, text, text, text, text) IS
    'Declare a btree or brin index on a managed table, applied to partitions always or once their day has closed';

CREATE OR REPLACE FUNCTION ingest.drop_index(tbl regclass, name text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ingest_internal.require_owner(tbl);
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
CREATE OR REPLACE VIEW ingest.indexes AS
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
       -- error texts can quote stored values: the table owner's to read
       CASE WHEN e.status = 'error' AND (i.indisvalid IS NOT TRUE)
            THEN e.sqlstate || COALESCE(': ' || CASE WHEN pg_catalog.pg_has_role(pc.relowner, 'USAGE')
                                                     THEN e.message END, '') END AS error
  FROM cells c
  JOIN pg_catalog.pg_class pc ON pc.oid = c.event_table
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
CREATE OR REPLACE FUNCTION ingest_internal.close_step(part oid, step text)
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
            PERFORM ingest_internal.owner_ddl(part::regclass,
                        format('SELECT pg_catalog.brin_summarize_new_values(%s::pg_catalog.regclass)', i::oid));
        END LOOP;
    ELSIF step = 'analyze' THEN
        PERFORM ingest_internal.owner_ddl(part::regclass, format('ANALYZE %s', part::regclass));
    END IF;
    -- "freeze" runs VACUUM at top level before this records it.
    INSERT INTO ingest_internal.partition_closed (partition_oid, step) VALUES (part, step)
    ON CONFLICT DO NOTHING;
END
$$;

-- Forget index drops that no partition needs any more.
CREATE OR REPLACE FUNCTION ingest_internal.tidy_index_drops(tbl regclass)
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
CREATE OR REPLACE FUNCTION ingest_internal.add_default_indexes(tbl regclass)
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
