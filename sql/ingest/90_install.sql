-- Install-only objects that need the code above.

-- Only commands that can drop tables: the worker's DROP INDEX CONCURRENTLY
-- must not run SQL after its internal commits.
CREATE EVENT TRIGGER ingest_sql_drop ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION ingest_internal.on_sql_drop();
