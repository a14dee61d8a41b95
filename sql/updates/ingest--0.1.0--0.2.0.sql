-- ingest 0.1.0 -> 0.2.0
\echo Use "ALTER EXTENSION ingest UPDATE TO '0.2.0'" to load this file. \quit

-- Only index probes read the key ledger: no vacuum for inserts (a scan of
-- the whole ledger each time it grows by a fifth, competing with loaders).
ALTER TABLE ingest_internal.event_keys SET (autovacuum_vacuum_insert_threshold = -1);
