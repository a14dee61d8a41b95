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
