-- The trust boundary: no input crashes the server, text from users is
-- never pasted into SQL, the table's shape holds for its whole life,
-- callers see only what SELECT on the table shows them, and the loader
-- keeps COPY's write contract.
SELECT ingest.create_event_table('sec', premake => 1);
CREATE FUNCTION regress.sec(tx text, v int DEFAULT 1) RETURNS text LANGUAGE sql AS $$
    SELECT format('00000000-0000-0000-0000-0000000000cc,%s,c1,api,%s,{},%s,', tx, regress.h(0, 1), v) $$;

-- stored generated columns are computed in every format, as COPY does
ALTER TABLE sec ADD COLUMN doubled float8 GENERATED ALWAYS AS (value * 2) STORED;
SELECT loaded FROM ingest.load('sec', regress.sec('g-csv', 3));
SELECT loaded FROM ingest.load('sec', format => 'text', data =>
    format(E'00000000-0000-0000-0000-0000000000cc\tg-text\tc1\tapi\t%s\t{}\t4\t\\N', regress.h(0, 1)));
SELECT loaded FROM ingest.load('sec', format => 'jsonl', data =>
    format('{"organization_id": "00000000-0000-0000-0000-0000000000cc", "transaction_id": "g-jsonl", '
           '"external_customer_id": "c1", "code": "api", "timestamp": "%s", "value": 5}', regress.h(0, 1)));
DO $$ BEGIN
    EXECUTE format($q$COPY (SELECT '00000000-0000-0000-0000-0000000000cc'::uuid, 'g-binary', 'c1', 'api',
                                   regress.h(0, 1), '{}'::jsonb, 6::float8, NULL::numeric)
                      TO %L (FORMAT binary)$q$, current_setting('data_directory') || '/ingest_sec.bin');
END $$;
SELECT loaded FROM ingest.load('sec', pg_read_binary_file(current_setting('data_directory') || '/ingest_sec.bin'),
                               format => 'binary');
SELECT transaction_id, value, doubled FROM sec ORDER BY 1;
-- a generated column cannot stand for one ingest reads
CREATE TABLE gen_shape (LIKE sec INCLUDING DEFAULTS) PARTITION BY RANGE ("timestamp");
ALTER TABLE gen_shape DROP COLUMN value;
ALTER TABLE gen_shape ADD COLUMN value float8 GENERATED ALWAYS AS ((properties->>'v')::float8) STORED;
SELECT regress.try($$SELECT ingest.manage_table('gen_shape')$$);

-- the columns ingest reads keep their names and types for the table's life
SELECT regress.try($$ALTER TABLE sec ALTER COLUMN transaction_id TYPE bigint USING 0$$);
SELECT regress.try($$ALTER TABLE sec ALTER COLUMN code TYPE varchar(10)$$);
SELECT regress.try($$ALTER TABLE sec DROP COLUMN properties$$);
SELECT regress.try($$ALTER TABLE sec RENAME COLUMN value TO amount$$);
SELECT regress.try($$ALTER TABLE sec RENAME COLUMN doubled TO twice$$);
SELECT regress.try($$ALTER TABLE sec DROP COLUMN twice$$);
-- and INSERT still deduplicates
INSERT INTO sec (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
VALUES ('00000000-0000-0000-0000-0000000000cc', 'g-csv', 'c1', 'api', regress.h(0, 1), 3);
SELECT count(*) FROM sec;

-- a temporary table cannot be managed: its configuration would outlive it
CREATE TEMP TABLE tmp_ev (LIKE sec) PARTITION BY RANGE ("timestamp");
SELECT regress.try($$SELECT ingest.manage_table('tmp_ev')$$);
SELECT regress.try($$SELECT ingest.create_event_table('pg_temp.tmp2')$$);

-- index declarations are parsed, never pasted: one index, nothing else
SELECT regress.try($$SELECT ingest.add_index('sec', ARRAY['code'], where_clause => 'true; CREATE TABLE pwned(); --')$$);
SELECT regress.try($$SELECT ingest.add_index('sec', ARRAY['code'], where_clause => 'true) WITH (fillfactor = 10')$$);
SELECT regress.try($$SELECT ingest.add_index('sec', ARRAY['(code); CREATE TABLE pwned(); --'])$$);
SELECT regress.try($$SELECT ingest.add_index('sec', ARRAY['(code) WHERE (true'])$$);
SELECT regress.try($$SELECT ingest.add_index('sec', ARRAY['code'], with_options => 'fillfactor = 70) WHERE (true')$$);
SELECT regress.try($$SELECT ingest.add_index('sec', ARRAY['code'], with_options => 'fillfactor = 70); CREATE TABLE pwned(); --')$$);
SELECT to_regclass('pwned') IS NULL AS no_pwned,
       (SELECT count(*) FROM ingest.index_config WHERE event_table = 'sec'::regclass AND phase = 'closed'
                                                   AND name NOT LIKE 'btree%') AS stored;
-- an honest declaration with all three parts still works
SELECT ingest.add_index('sec', ARRAY['(lower(code))'], where_clause => 'value > 0',
                        with_options => 'fillfactor = 70', name => 'lower_code');
SELECT ingest.drop_index('sec', 'lower_code');

-- the loader refuses what COPY refuses
BEGIN READ ONLY;
SELECT regress.try($$SELECT * FROM ingest.load('sec', regress.sec('ro'))$$);
ROLLBACK;
SET default_transaction_read_only = on;
SELECT regress.try($$SELECT * FROM ingest.load('sec', regress.sec('ro'))$$);
RESET default_transaction_read_only;
-- and takes option words as COPY does, in any case
SELECT loaded FROM ingest.load('sec', regress.sec('upper'), format => 'CSV', on_error => 'Reject');
SELECT regress.try($$SELECT * FROM ingest.load(0, 'x')$$);

-- a day partition that is not a plain table is refused, not written (its
-- own partition made after ATTACH: PostgreSQL 17 and 18 fail to DETACH a
-- partitioned table attached with partitions, whose identity they skip)
CREATE TABLE sec_sub (LIKE sec) PARTITION BY LIST (code);
SELECT regress.try(format('ALTER TABLE sec ATTACH PARTITION sec_sub FOR VALUES FROM (%L) TO (%L)',
                          regress.h(-1, 0), regress.h(0, 0)));
CREATE TABLE sec_sub_api PARTITION OF sec_sub FOR VALUES IN ('api');
SELECT regress.try(format($$SELECT * FROM ingest.load('sec', %L)$$,
                          replace(regress.sec('sub'), regress.h(0, 1)::text, regress.h(-1, 1)::text)));
SELECT regress.try('ALTER TABLE sec DETACH PARTITION sec_sub');

-- callers see what SELECT on the table shows them
CREATE ROLE sec_writer;
GRANT INSERT ON sec TO sec_writer;
SET ROLE sec_writer;
-- a stored payload differs or not: no oracle without SELECT
SELECT loaded, duplicates, conflicts FROM ingest.load('sec', regress.sec('g-csv', 99));
RESET ROLE;
SELECT loaded, duplicates, conflicts FROM ingest.load('sec', regress.sec('g-csv', 99));
-- row-level security: usage and rollup_verify cannot apply it, rejects
-- would bypass it
CREATE ROLE sec_tenant;
GRANT SELECT ON sec TO sec_tenant;
ALTER TABLE sec ENABLE ROW LEVEL SECURITY;
CREATE POLICY sec_tenant_rows ON sec FOR SELECT TO sec_tenant
    USING (organization_id = '00000000-0000-0000-0000-0000000000cc');
SELECT loaded FROM ingest.load('sec', 'bad,row');
SET ROLE sec_tenant;
SELECT regress.try($$SELECT * FROM ingest.usage('sec', '00000000-0000-0000-0000-0000000000dd', regress.h(0, 0), regress.h(1, 0))$$);
SELECT regress.try($$SELECT * FROM ingest.rollup_verify('sec', regress.h(0, 0), regress.h(1, 0))$$);
SELECT count(*) AS rejects_seen FROM ingest.rejects WHERE event_table = 'sec'::regclass;
RESET ROLE;
SELECT count(*) > 0 AS rejects_seen_by_owner FROM ingest.rejects WHERE event_table = 'sec'::regclass;
ALTER TABLE sec DISABLE ROW LEVEL SECURITY;
-- error texts can quote stored values: only the table's owner reads them
INSERT INTO ingest.maintenance_log (run_id, event_table, relid, action, status, sqlstate, message)
VALUES (0, 'sec', 'sec'::regclass, 'index', 'error', '22P02', 'invalid input syntax for type integer: "SSN-123-45-6789"');
SET ROLE sec_tenant;
SELECT count(*) AS log_rows_seen FROM ingest.maintenance_log WHERE relid = 'sec'::regclass;
RESET ROLE;
SELECT count(*) AS log_rows_seen_by_owner FROM ingest.maintenance_log WHERE relid = 'sec'::regclass;
DELETE FROM ingest.maintenance_log WHERE run_id = 0;

-- nobody can keep the owner from dropping a table by building on its
-- usage view
CREATE VIEW sec_usage_copy AS SELECT * FROM sec_usage_hourly;
DROP TABLE sec;
SELECT to_regclass('sec_usage_copy') IS NULL AS dropped_with_it,
       NOT EXISTS (SELECT FROM ingest.table_config WHERE event_table::text = 'sec') AS forgotten;

SELECT * FROM regress.invariants();
