-- The bulk loader: ingest.load and the ledger's payload hash.

-- The payload hash of a stored event, as the ledger keeps it.  In
-- ingest_side with the other helpers that SQL run as a table's owner calls.
CREATE OR REPLACE FUNCTION ingest_side.payload_hash(record)
RETURNS bigint
LANGUAGE C STRICT STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_payload_hash';
GRANT EXECUTE ON FUNCTION ingest_side.payload_hash(record) TO PUBLIC;


CREATE OR REPLACE FUNCTION ingest.load(tbl regclass, data text, format text DEFAULT 'csv',
                            header boolean DEFAULT false, columns text[] DEFAULT NULL,
                            on_error text DEFAULT NULL)
RETURNS TABLE(loaded bigint, duplicates bigint, rejected bigint, conflicts bigint)
LANGUAGE C CALLED ON NULL INPUT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_load_text';
COMMENT ON FUNCTION ingest.load(regclass, text, text, boolean, text[], text) IS
    'Load csv, text or jsonl events with exact (organization_id, transaction_id) dedup; bad rows go to ingest.rejects';

CREATE OR REPLACE FUNCTION ingest.load(tbl regclass, data bytea, format text DEFAULT 'csv',
                            header boolean DEFAULT false, columns text[] DEFAULT NULL,
                            on_error text DEFAULT NULL)
RETURNS TABLE(loaded bigint, duplicates bigint, rejected bigint, conflicts bigint)
LANGUAGE C CALLED ON NULL INPUT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_load_bytea';
COMMENT ON FUNCTION ingest.load(regclass, bytea, text, boolean, text[], text) IS
    'Load events from bytes in the database encoding (csv, text or jsonl), like ingest.load(regclass, text, ...)';

CREATE OR REPLACE FUNCTION ingest.load_file(tbl regclass, path text, format text DEFAULT 'csv',
                                 header boolean DEFAULT false, columns text[] DEFAULT NULL,
                                 on_error text DEFAULT NULL)
RETURNS TABLE(loaded bigint, duplicates bigint, rejected bigint, conflicts bigint)
LANGUAGE C CALLED ON NULL INPUT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ingest_load_file';
COMMENT ON FUNCTION ingest.load_file(regclass, text, text, boolean, text[], text) IS
    'Load events from a server-side file of any size, streamed in batches (members of pg_read_server_files), like ingest.load';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ingest_internal FROM PUBLIC;
