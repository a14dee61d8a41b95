-- Index management: declared indexes, phases, closing a day.
SELECT ingest.create_event_table('ix', premake => 1);
-- the default declarations
SELECT name, columns, method, phase, where_clause, with_options
  FROM ingest.index_config WHERE event_table = 'ix'::regclass ORDER BY name;
-- "always" indexes are on every partition from its creation; "closed" ones wait
SELECT regress.rel(partition::text), name, status FROM ingest.indexes
 WHERE event_table = 'ix'::regclass ORDER BY partition::text, name;
SELECT regress.rel(indexname::text), indexdef ~ 'USING brin \("timestamp"\) WITH \(autosummarize=''on''\)' AS brin
  FROM pg_indexes WHERE tablename LIKE 'ix_p%' ORDER BY 1;

-- declaring: expressions, partial indexes, options; existing partitions get it
SELECT ingest.add_index('ix', ARRAY['(properties->>''model'')', 'timestamp'], where_clause => 'value > 0',
                        name => 'model_ts');
SELECT ingest.add_index('ix', ARRAY['code'], phase => 'always');
SELECT name, columns, method, phase, where_clause FROM ingest.index_config
 WHERE event_table = 'ix'::regclass ORDER BY name;
SELECT ingest_internal.index_ddl('ix'::regclass, 'x', columns, method, where_clause, with_options, true)
  FROM ingest.index_config WHERE event_table = 'ix'::regclass AND name = 'model_ts';
SELECT action, regress.rel(partition) FROM ingest.run_maintenance('ix', dry_run => true);
-- builds are CREATE INDEX CONCURRENTLY, left to the background worker
SELECT action, regress.rel(partition), detail FROM ingest.run_maintenance('ix');
SELECT regress.rel(partition::text), name, status FROM ingest.indexes
 WHERE event_table = 'ix'::regclass AND name = 'btree_code' ORDER BY 1;

-- a day that has closed needs its closed-phase indexes
SELECT regress.backdate('ix', -3);
SELECT regress.rel(partition::text), name, status FROM ingest.indexes
 WHERE event_table = 'ix'::regclass AND partition = 'ix_old3'::regclass ORDER BY name;
SELECT action, regress.rel(partition) FROM ingest.run_maintenance('ix', dry_run => true)
 WHERE partition LIKE 'ix_old3%';

-- closing steps run once the indexes are in place: a table without
-- declared indexes closes its past days at once
CREATE TABLE plainix (LIKE ix INCLUDING IDENTITY INCLUDING DEFAULTS) PARTITION BY RANGE ("timestamp");
SELECT ingest.manage_table('plainix', premake => 0);
SELECT regress.backdate('plainix', -2);
-- (hours, not days: the session's zone has DST; the partition is a UTC day)
INSERT INTO plainix (organization_id, transaction_id, external_customer_id, code, "timestamp")
SELECT gen_random_uuid(), 'c' || g, 'c', 'k', now() - interval '48 hours' FROM generate_series(1, 3) g;
SELECT relallvisible, reltuples FROM pg_class WHERE relname = 'plainix_old2';
SELECT action, regress.rel(partition) FROM ingest.run_maintenance('plainix');
SELECT relallvisible, reltuples FROM pg_class WHERE relname = 'plainix_old2';
SELECT step FROM ingest_internal.partition_closed WHERE partition_oid = 'plainix_old2'::regclass ORDER BY 1;
-- one day a run: yesterday's partition is next
SELECT action, regress.rel(partition) FROM ingest.run_maintenance('plainix');

-- dropping a declaration drops its index from every partition
SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'ix_%' AND indexname LIKE '%brin_timestamp';
SELECT ingest.drop_index('ix', 'brin_timestamp');
SELECT action, regress.rel(partition), detail FROM ingest.run_maintenance('ix') WHERE action = 'drop_index';
SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'ix_%' AND indexname LIKE '%brin_timestamp';
SELECT count(*) FROM ingest_internal.index_drops;
-- new partitions no longer get it
SELECT ingest.configure('ix', premake => 2);
SELECT action FROM ingest.run_maintenance('ix') WHERE action = 'create';
SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'ix_%' AND indexname LIKE '%brin_timestamp';

-- bad declarations give a clear error and change nothing
SELECT count(*) AS declared FROM ingest.index_config;
SELECT regress.try($$SELECT ingest.add_index('ix', ARRAY['no_such_column'])$$);
SELECT regress.try($$SELECT ingest.add_index('ix', ARRAY['code'], method => 'hash')$$);
SELECT regress.try($$SELECT ingest.add_index('ix', ARRAY['code'], phase => 'sometimes')$$);
SELECT regress.try($$SELECT ingest.add_index('ix', ARRAY['code'], where_clause => 'value >', name => 'w1')$$);
SELECT regress.try($$SELECT ingest.add_index('ix', ARRAY['code'], where_clause => 'nope = 1', name => 'w2')$$);
SELECT regress.try($$SELECT ingest.add_index('ix', ARRAY['code'], with_options => 'fillfactor = 5', name => 'w3')$$);
SELECT regress.try($$SELECT ingest.add_index('ix', ARRAY['code'], with_options => 'x = 1); DROP TABLE ix; --', name => 'w4')$$);
SELECT regress.try($$SELECT ingest.add_index('ix', ARRAY['(nope + 1)'])$$);
SELECT regress.try($$SELECT ingest.add_index('ix', ARRAY[]::text[])$$);
SELECT regress.try($$SELECT ingest.add_index('ix', ARRAY['code'], name => 'model_ts')$$);
SELECT regress.try($$SELECT ingest.add_index('pg_class', ARRAY['oid'])$$);
SELECT regress.try($$SELECT ingest.drop_index('ix', 'nope')$$);
SELECT count(*) AS declared FROM ingest.index_config;
SELECT count(*) AS scratch_tables FROM pg_class WHERE relname LIKE 'ingest_check%';

-- off Citus, cluster_indexes lists this node's partitions' indexes: every
-- index ingest.indexes shows present is there, valid
SELECT count(*) AS present_not_listed
  FROM ingest.indexes x
 WHERE x.event_table = 'ix'::regclass AND x.status = 'present'
   AND NOT EXISTS (SELECT 1 FROM ingest.cluster_indexes('ix') c
                    WHERE c.node = 'local' AND c.partition::regclass = x.partition
                      AND c.index::regclass = x.index AND c.valid);
SELECT count(*) AS present FROM ingest.indexes WHERE event_table = 'ix'::regclass AND status = 'present';
SELECT count(*) > 0 AS listed, count(*) FILTER (WHERE partition <> relation) AS not_own
  FROM ingest.cluster_indexes('ix');

-- long names stay unique
SELECT ingest.partition_index_name('ix_old3', repeat('n', 60)) =
       ingest.partition_index_name('ix_old3', repeat('n', 59) || 'm') AS collide,
       octet_length(ingest.partition_index_name('ix_old3', repeat('n', 60))) <= 63 AS fits;

-- a partition renamed by hand keeps its declared indexes: they are renamed
-- with it (ingest knows them by the name made from the partition's), so
-- maintenance builds none again, closes the day, and a dropped declaration
-- still finds its index
SELECT ingest.create_event_table('rnix', premake => 0);
SELECT count(*) FROM ingest.create_partitions('rnix', regress.today() - 5, regress.today() - 5);
DO $$ BEGIN
    EXECUTE format('ALTER TABLE %s RENAME TO rnix_renamed',
                   (SELECT partition FROM ingest.partitions
                     WHERE event_table = 'rnix'::regclass AND day = regress.today() - 5));
END $$;
SELECT indexname FROM pg_indexes WHERE tablename = 'rnix_renamed' ORDER BY 1;
SELECT name, status FROM ingest.indexes WHERE partition = 'rnix_renamed'::regclass ORDER BY name;
SELECT action, partition FROM ingest.run_maintenance('rnix', dry_run => true)
 WHERE partition LIKE '%rnix_renamed%' ORDER BY 1;
SELECT ingest.drop_index('rnix', 'customer_ts');
SELECT action, partition FROM ingest.run_maintenance('rnix') WHERE action = 'drop_index';
SELECT indexname FROM pg_indexes WHERE tablename = 'rnix_renamed' ORDER BY 1;
-- ALTER INDEX ... RENAME naming the partition renames it too
ALTER INDEX rnix_renamed RENAME TO rnix_again;
SELECT indexname FROM pg_indexes WHERE tablename = 'rnix_again' ORDER BY 1;
-- a name its index cannot take fails the rename
CREATE TABLE rnix_taken_org_code_ts ();
SELECT regress.try($$ALTER TABLE rnix_again RENAME TO rnix_taken$$);
SELECT count(*) AS still_again FROM pg_class WHERE relname = 'rnix_again';
DROP TABLE rnix_taken_org_code_ts;
-- an index renamed by hand is no longer the declared one: it is built again
ALTER INDEX rnix_again_org_code_ts RENAME TO rnix_by_hand;
SELECT action, partition FROM ingest.run_maintenance('rnix', dry_run => true) WHERE action = 'index';
DROP TABLE rnix;

SELECT * FROM regress.invariants();
