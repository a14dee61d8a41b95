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
-- nor across pieces: a comment a piece opens cannot hide a statement in
-- the next, nor bring in another clause
SELECT regress.try($$SELECT ingest.add_index('sec', ARRAY['code'], with_options => 'fillfactor=90) ; --',
                                             where_clause => E'true /*\nCREATE TABLE public.pwned(); --*/')$$);
SELECT regress.try($$SELECT ingest.add_index('sec', ARRAY['(code)) ; --', E'(code) /*\nCREATE TABLE public.pwned(); --*/'])$$);
SELECT regress.try($$SELECT ingest.add_index('sec', ARRAY['code'], with_options => 'fillfactor=90) TABLESPACE pg_default --')$$);
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

-- "\." ends COPY's data: rows after it are refused, never silently dropped
SELECT regress.try(format($$SELECT * FROM ingest.load('sec', %L)$$,
                          regress.sec('m1') || E'\n\\.\n' || regress.sec('m2')));
SELECT loaded FROM ingest.load('sec', regress.sec('m3') || E'\n\\.\n');
-- but a "\." line inside a quoted csv field is data, as for COPY
SELECT loaded FROM ingest.load('sec', regress.sec('m4') || E'\n' ||
       format(E'00000000-0000-0000-0000-0000000000cc,m5,c1,"a\n\\.\nb",%s,{},1,\n', regress.h(0, 1)) ||
       regress.sec('m6'));
SELECT transaction_id, code FROM sec WHERE transaction_id IN ('m4', 'm5', 'm6') ORDER BY 1;
-- lines may end in a carriage return alone, as COPY reads them: data after
-- a "\." line is refused there too (it was dropped without a word)
SELECT regress.try(format($$SELECT * FROM ingest.load('sec', %L)$$,
                          regress.sec('m7') || E'\r\\.\r' || regress.sec('m8') || E'\r'));
SELECT loaded FROM ingest.load('sec', regress.sec('m9') || E'\r\n\\.\r\n');
-- a duplicate whose original is in an earlier batch of the same call is a
-- conflict too
SELECT loaded, duplicates, conflicts FROM ingest.load('sec',
    (SELECT string_agg(regress.sec('x' || CASE WHEN n = 1500 THEN 5 ELSE n END, n), E'\n')
       FROM generate_series(1, 2000) n));
-- input of which no row has the table's shape fails, as COPY fails
SELECT regress.try($$SELECT * FROM ingest.load('sec', 'a,b,c')$$);
SELECT regress.try(format($$SELECT * FROM ingest.load('sec', %L, columns => ARRAY['organization_id', 'transaction_id', 'external_customer_id', 'code', 'timestamp', 'properties', 'value', 'decimal_value', 'created_at'])$$,
                          regress.sec('shape1') || E'\n' || regress.sec('shape2')));

-- foreign keys and user triggers: COPY is left to PostgreSQL, which checks
-- and fires them (ingest's triggers deduplicate row by row);
-- ingest.load refuses the table
CREATE TABLE regress.customers (id text PRIMARY KEY);
INSERT INTO regress.customers VALUES ('c1');
CREATE TABLE fk_ev (LIKE sec INCLUDING DEFAULTS INCLUDING IDENTITY) PARTITION BY RANGE ("timestamp");
ALTER TABLE fk_ev ADD FOREIGN KEY (external_customer_id) REFERENCES regress.customers (id);
CREATE TABLE fk_ev_2030 (LIKE fk_ev);
ALTER TABLE fk_ev ATTACH PARTITION fk_ev_2030 FOR VALUES FROM ('2030-01-01 00:00+00') TO ('2030-01-02 00:00+00');
SELECT ingest.manage_table('fk_ev', premake => 0);
SELECT regress.try($$SELECT * FROM ingest.load('fk_ev',
    '00000000-0000-0000-0000-0000000000cc,fk0,c1,api,2030-01-01 01:00:00+00,{},1,')$$);
COPY fk_ev (organization_id, transaction_id, external_customer_id, code, "timestamp", properties, value, decimal_value)
FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-0000000000cc,fk1,c1,api,2030-01-01 01:00:00+00,{},1,
00000000-0000-0000-0000-0000000000cc,fk1,c1,api,2030-01-01 01:00:00+00,{},1,
\.
COPY fk_ev (organization_id, transaction_id, external_customer_id, code, "timestamp", properties, value, decimal_value)
FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-0000000000cc,fk2,c2,api,2030-01-01 01:00:00+00,{},1,
\.
SELECT transaction_id FROM fk_ev;
-- BEFORE INSERT row triggers fire in name order: one firing after
-- ingest_dedup could change the key it claimed, so it is refused, made or
-- renamed so; one firing before is free to change the row
CREATE FUNCTION regress.rekey() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.transaction_id := NEW.transaction_id || '-x'; RETURN NEW; END $$;
SELECT regress.try($$CREATE TRIGGER z_rekey BEFORE INSERT ON fk_ev FOR EACH ROW EXECUTE FUNCTION regress.rekey()$$);
SELECT regress.try($$CREATE TRIGGER z_rekey BEFORE INSERT OR UPDATE ON fk_ev_2030 FOR EACH ROW EXECUTE FUNCTION regress.rekey()$$);
CREATE TRIGGER a_rekey BEFORE INSERT ON fk_ev FOR EACH ROW EXECUTE FUNCTION regress.rekey();
SELECT regress.try($$ALTER TRIGGER a_rekey ON fk_ev RENAME TO z_rekey$$);
CREATE TRIGGER z_after AFTER INSERT ON fk_ev FOR EACH ROW EXECUTE FUNCTION regress.rekey();
COPY fk_ev (organization_id, transaction_id, external_customer_id, code, "timestamp", properties, value, decimal_value)
FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-0000000000cc,fk3,c1,api,2030-01-01 01:00:00+00,{},1,
\.
SELECT e.transaction_id, k.transaction_id AS ledger
  FROM fk_ev e FULL JOIN ingest_side.fk_ev_keys k USING (organization_id, transaction_id)
 ORDER BY 1;
-- nor can a table with such a trigger be adopted
CREATE TABLE trg_ev (LIKE sec INCLUDING DEFAULTS INCLUDING IDENTITY) PARTITION BY RANGE ("timestamp");
CREATE TABLE trg_ev_2030 PARTITION OF trg_ev FOR VALUES FROM ('2030-01-01 00:00+00') TO ('2030-01-02 00:00+00');
CREATE TRIGGER z_rekey BEFORE INSERT ON trg_ev_2030 FOR EACH ROW EXECUTE FUNCTION regress.rekey();
SELECT regress.try($$SELECT ingest.manage_table('trg_ev', premake => 0)$$);
DROP TABLE trg_ev;

-- binary rows obey ingest.max_event_bytes too, and a binary row set aside
-- is kept readable
SET ingest.max_event_bytes = 2000;
DO $$ BEGIN
    EXECUTE format($q$COPY (SELECT '00000000-0000-0000-0000-0000000000cc'::uuid, 'big' || g, 'c1', 'api',
                                   regress.h(0, 1), jsonb_build_object('pad', repeat('x', g * 1500)), 1::float8,
                                   NULL::numeric
                              FROM generate_series(0, 2) g)
                      TO %L (FORMAT binary)$q$, current_setting('data_directory') || '/ingest_big.bin');
END $$;
SELECT loaded, rejected FROM ingest.load('sec', pg_read_binary_file(current_setting('data_directory') || '/ingest_big.bin'),
                                         format => 'binary');
RESET ingest.max_event_bytes;
SELECT left(raw, 40), sqlstate FROM ingest.rejects WHERE event_table = 'sec'::regclass AND sqlstate = '54000' ORDER BY id;
DO $$ BEGIN
    EXECUTE format($q$COPY (SELECT '00000000-0000-0000-0000-0000000000cc'::uuid, 'nul', NULL::text, 'api',
                                   '2030-01-01 00:00+00'::timestamptz, '{}'::jsonb, 1::float8, NULL::numeric)
                      TO %L (FORMAT binary)$q$, current_setting('data_directory') || '/ingest_nul.bin');
END $$;
SELECT loaded, rejected FROM ingest.load('sec', pg_read_binary_file(current_setting('data_directory') || '/ingest_nul.bin'),
                                         format => 'binary');
SELECT raw, sqlstate FROM ingest.rejects WHERE event_table = 'sec'::regclass AND sqlstate = '23502';

-- a day partition that is not a plain table is refused when it comes
-- (08_write_paths has the other shapes)
CREATE TABLE sec_sub (LIKE sec) PARTITION BY LIST (code);
SELECT regress.try(format('ALTER TABLE sec ATTACH PARTITION sec_sub FOR VALUES FROM (%L) TO (%L)',
                          regress.h(-1, 0), regress.h(0, 0)));
DROP TABLE sec_sub;

-- an operator shadowing pg_catalog's earlier on the search_path runs
-- nowhere inside ingest: every statement it runs pins search_path or
-- qualifies its operators
CREATE SCHEMA shadow;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['oid', 'regclass', 'uuid', 'text', 'name', 'timestamptz'] LOOP
        EXECUTE format($f$CREATE FUNCTION shadow.trap(%1$s, %1$s) RETURNS boolean LANGUAGE plpgsql AS
                          $b$ BEGIN RAISE EXCEPTION 'shadow operator called'; END $b$ $f$, t);
        EXECUTE format('CREATE OPERATOR shadow.= (LEFTARG = %1$s, RIGHTARG = %1$s, FUNCTION = shadow.trap)', t);
    END LOOP;
END $$;
CREATE TABLE sec_2030 (LIKE sec INCLUDING DEFAULTS INCLUDING GENERATED);
ALTER TABLE sec ATTACH PARTITION sec_2030 FOR VALUES FROM ('2030-01-01 00:00+00') TO ('2030-01-02 00:00+00');
SET search_path = shadow, pg_catalog, public;
COPY sec (organization_id, transaction_id, external_customer_id, code, "timestamp", properties, value, decimal_value)
FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-0000000000cc,shadow1,c1,api,2030-01-01 01:00:00+00,{},1,
00000000-0000-0000-0000-0000000000cc,shadow1,c1,api,2030-01-01 01:00:00+00,{},2,
\.
SELECT loaded, duplicates FROM ingest.load('sec',
    '00000000-0000-0000-0000-0000000000cc,shadow2,c1,api,2030-01-01 01:00:00+00,{},1,');
SELECT count(*) >= 0 AS planned FROM ingest.run_maintenance('sec', dry_run => true);
SELECT events FROM ingest.usage('sec', '00000000-0000-0000-0000-0000000000cc',
                                '2030-01-01 00:00+00', '2030-01-02 00:00+00');
SELECT ingest.fold_rollups('sec') >= 0 AS folded;
RESET search_path;
DELETE FROM sec WHERE transaction_id = 'shadow2';
SELECT transaction_id FROM sec_2030 ORDER BY 1;
DROP SCHEMA shadow CASCADE;

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
SELECT loaded FROM ingest.load('sec', 'not-a-uuid,r1,c1,api,2030-01-01,{},1,');
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

-- a table's owner manages its table with every function of the README;
-- another role gets 42501 naming the table
CREATE ROLE tenant_a;
CREATE ROLE tenant_b;
GRANT CREATE ON SCHEMA public TO tenant_a;
SET ROLE tenant_a;
SELECT ingest.create_event_table('a_events', premake => 1);
SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'a_events'::regclass;
SELECT loaded FROM ingest.load('a_events', format('00000000-0000-0000-0000-0000000000aa,t1,c1,api,%s,"{""model"": ""m1""}",2,', regress.h(0, 1)));
SELECT ingest.configure('a_events', retention => '30 days');
SELECT ingest.add_index('a_events', ARRAY['code']);
SELECT ingest.create_rollup('a_events', 'by_model', ARRAY['model']);
SELECT ingest.fold_rollups('a_events') >= 0 AS folded;
SELECT dimensions, events, value_sum FROM ingest.usage('a_events', '00000000-0000-0000-0000-0000000000aa',
       regress.h(0, 0), regress.h(1, 0), rollup => 'by_model');
SELECT count(*) FROM ingest.rollup_verify('a_events', regress.h(0, 0), regress.h(1, 0));
-- a partition added by hand gets ingest's triggers
SELECT regress.try(format('CREATE TABLE a_events_extra PARTITION OF a_events FOR VALUES FROM (%L) TO (%L)',
                          regress.h(5, 0), regress.h(6, 0)));
-- (the guard of replica mode enabled for that mode only: R)
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'a_events_extra'::regclass ORDER BY 1;
INSERT INTO a_events (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
VALUES ('00000000-0000-0000-0000-0000000000aa', 'x1', 'c1', 'api', regress.h(5, 1), 1),
       ('00000000-0000-0000-0000-0000000000aa', 't1', 'c1', 'api', regress.h(5, 1), 1);
SELECT transaction_id FROM a_events ORDER BY 1;
SELECT ingest.drop_rollup('a_events', 'by_model');
SELECT ingest.drop_index('a_events', 'btree_code');
-- maintenance by hand, as the worker would do it
SELECT ingest.configure('a_events', premake => 2);
SELECT action, regress.rel(partition) FROM ingest.run_maintenance('a_events', dry_run => true)
 WHERE action IN ('create', 'detach');
SELECT action, regress.rel(partition) FROM ingest.run_maintenance('a_events')
 WHERE action IN ('create', 'detach');
SELECT action, status FROM ingest.maintenance_log WHERE relid = 'a_events'::regclass AND action = 'create';
RESET ROLE;
SET ROLE tenant_b;
SELECT regress.try($$SELECT ingest.configure('a_events', premake => 2)$$);
SELECT regress.try($$SELECT ingest.add_index('a_events', ARRAY['code'])$$);
SELECT regress.try($$SELECT ingest.create_rollup('a_events', 'mine', ARRAY['model'])$$);
SELECT regress.try($$SELECT ingest.fold_rollups('a_events')$$);
SELECT regress.try($$SELECT ingest.rollup_rebuild('a_events', '-infinity', 'infinity')$$);
SELECT regress.try($$SELECT count(*) FROM ingest.rollup_verify('a_events', '-infinity', 'infinity')$$);
SELECT regress.try($$SELECT ingest.unmanage_table('a_events')$$);
SELECT regress.try($$SELECT ingest.run_maintenance('a_events')$$);
SELECT regress.try($$SELECT ingest.run_maintenance()$$);
SELECT regress.try($$SELECT * FROM ingest.load('a_events', 'x')$$);
SELECT regress.try($$SELECT ingest.create_event_table('b_events')$$);
SELECT ingest.fold_rollups() AS folded_nothing;
SELECT regress.try($$INSERT INTO ingest_internal.retired VALUES (1, 1, 'x', now(), now())$$);
SELECT regress.try($$SELECT * FROM ingest_side.a_events_keys$$);
RESET ROLE;
SET ROLE tenant_a;
SELECT ingest.unmanage_table('a_events');
DROP TABLE a_events;
RESET ROLE;
-- adopting a table given to a tenant in a schema where the tenant may
-- not create: its usage view would be made there for them (42501)
CREATE SCHEMA sec_shared;
GRANT USAGE ON SCHEMA sec_shared TO tenant_b;
CREATE TABLE sec_shared.b_ev (
    organization_id uuid NOT NULL, transaction_id text NOT NULL, external_customer_id text NOT NULL,
    code text NOT NULL, "timestamp" timestamptz NOT NULL, properties jsonb NOT NULL DEFAULT '{}',
    value double precision, decimal_value numeric, created_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE ("timestamp");
ALTER TABLE sec_shared.b_ev OWNER TO tenant_b;
SET ROLE tenant_b;
SELECT regress.try($$SELECT ingest.manage_table('sec_shared.b_ev', premake => 0)$$);
RESET ROLE;
SELECT count(*) AS views_made FROM pg_class WHERE relnamespace = 'sec_shared'::regnamespace AND relkind = 'v';
DROP SCHEMA sec_shared CASCADE;

-- nobody can keep the owner from dropping a table by building on its
-- usage view
CREATE VIEW sec_usage_copy AS SELECT * FROM sec_usage_hourly;
DROP TABLE sec;
SELECT to_regclass('sec_usage_copy') IS NULL AS dropped_with_it,
       NOT EXISTS (SELECT FROM ingest.table_config WHERE event_table::text = 'sec') AS forgotten;

-- Another role's code running in between: a maintenance operation that
-- acts as a table's owner (here ANALYZE evaluating an index expression, as
-- autovacuum would too) and a SECURITY DEFINER function of another role.
-- The management functions would take the session's role (a superuser) for
-- their caller, so both are refused (42501).
SELECT ingest.create_event_table('sec_victim', premake => 0) IS NOT NULL AS made;
CREATE ROLE sec_mallory;
CREATE SCHEMA sec_m AUTHORIZATION sec_mallory;
SET ROLE sec_mallory;
CREATE TABLE sec_m.bait (x int);
CREATE FUNCTION sec_m.f(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF current_setting('sec_m.go', true) = 'on' THEN
        PERFORM ingest.configure('public.sec_victim'::regclass, retention => '1 day');
    END IF;
    RETURN x;
END $$;
INSERT INTO sec_m.bait SELECT generate_series(1, 10);
CREATE INDEX ON sec_m.bait (sec_m.f(x));
CREATE FUNCTION sec_m.make() RETURNS regclass LANGUAGE sql SECURITY DEFINER
AS $$ SELECT ingest.create_event_table('sec_m.made_by_mallory', premake => 0) $$;
RESET ROLE;
SET sec_m.go = on;
SELECT regress.try('ANALYZE sec_m.bait');
RESET sec_m.go;
SELECT regress.try('SELECT sec_m.make()');
SELECT retention FROM ingest.table_config WHERE event_table = 'sec_victim'::regclass;
SELECT to_regclass('sec_m.made_by_mallory') AS made_by_mallory;
-- the monitoring view only counts: another role's code may read it for a
-- superuser session (a materialized view refreshed by pg_cron, say)
CREATE MATERIALIZED VIEW sec_m.health AS SELECT event_table, rollup, deltas_waiting FROM ingest.rollup_health;
ALTER MATERIALIZED VIEW sec_m.health OWNER TO sec_mallory;
SELECT regress.try('REFRESH MATERIALIZED VIEW sec_m.health');
-- add_index checks a declaration on a scratch copy of the table as its
-- owner (SECURITY_RESTRICTED_OPERATION, pinned search_path), as the
-- worker builds it: parsing it as the extension's owner ran the CHECK of
-- a domain in an array literal as a superuser, which made its owner one
SET ROLE sec_mallory;
SELECT ingest.create_event_table('sec_m.ev', premake => 0) IS NOT NULL AS made;
CREATE FUNCTION sec_m.up(int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        ALTER ROLE sec_mallory SUPERUSER;
    END IF;
    RETURN true;
END $$;
CREATE DOMAIN sec_m.d AS int CHECK (sec_m.up(VALUE));
SELECT regress.try($$SELECT ingest.add_index('sec_m.ev', ARRAY['code'],
                                             where_clause => $w$('{1}'::sec_m.d[]) IS NOT NULL$w$)$$);
RESET ROLE;
SELECT rolsuper FROM pg_roles WHERE rolname = 'sec_mallory';
-- the scratch copy is the owner's, in its table's schema: an owner with no
-- TEMPORARY right on the database declares indexes too; its names are
-- random, so a relation named as it once was (ingest_check) is in no way
DO $$ BEGIN EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database()); END $$;
SET ROLE sec_mallory;
CREATE TABLE sec_m.ingest_check ();
SELECT regress.try($$SELECT ingest.add_index('sec_m.ev', ARRAY['external_customer_id'])$$);
RESET ROLE;
DO $$ BEGIN EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database()); END $$;
SELECT name FROM ingest.index_config WHERE event_table = 'sec_m.ev'::regclass ORDER BY name;
DROP TABLE sec_m.ev;
DROP TABLE sec_victim;
-- the reader of partition bounds, which ingest.partitions calls for anyone,
-- reads pg_class itself: it took any catalog's node tree, and the empty one
-- of a view's rule crashed the server
SELECT regress.try($$SELECT ingest_side.partition_bounds(r.ev_qual) FROM pg_rewrite r
                      WHERE r.rulename = '_RETURN' LIMIT 1$$);
SELECT * FROM ingest_side.partition_bounds('pg_class'::regclass);

-- REASSIGN OWNED gives a table to another role without ALTER TABLE ...
-- OWNER TO: its side tables follow it too (the new owner's loads failed
-- with 42501 on the ledger, and the old owner kept its rows)
CREATE ROLE sec_old;
CREATE ROLE sec_new;
GRANT CREATE ON SCHEMA public TO sec_old;
SET ROLE sec_old;
SELECT ingest.create_event_table('sec_moved', premake => 0) IS NOT NULL AS made;
-- (its usage view, the owner's, may be gone: REASSIGN OWNED failed then)
DROP VIEW sec_moved_usage_hourly;
RESET ROLE;
REASSIGN OWNED BY sec_old TO sec_new;
SET ROLE sec_new;
SELECT regress.try(format($$SELECT * FROM ingest.load('sec_moved', %L)$$, regress.sec('moved')));
RESET ROLE;
SELECT has_table_privilege('sec_old', 'ingest_side.sec_moved_keys', 'SELECT') AS old_owner_reads,
       has_table_privilege('sec_new', 'ingest_side.sec_moved_keys', 'SELECT') AS new_owner_reads;
-- anyone may REASSIGN OWNED their own objects: it touches no other
-- role's table (it revoked a grant made on purpose on the side tables of
-- every table whose grants were not its owner's alone)
CREATE ROLE sec_by;
GRANT SELECT ON ingest_side.sec_moved_rollup TO sec_by;
SET ROLE sec_by;
REASSIGN OWNED BY sec_by TO sec_by;
RESET ROLE;
SELECT has_table_privilege('sec_by', 'ingest_side.sec_moved_rollup', 'SELECT') AS kept;
REVOKE SELECT ON ingest_side.sec_moved_rollup FROM sec_by;
DROP ROLE sec_by;
DROP TABLE sec_moved;
REVOKE CREATE ON SCHEMA public FROM sec_old;
DROP ROLE sec_old, sec_new;
DROP SCHEMA sec_m CASCADE;
DROP ROLE sec_mallory;

-- COPY into a side table of a table whose triggers are in place: refused
-- (55000) to whom COPY lets in, as the events a data-only restore copies
-- after it would be skipped under its keys; anyone else gets COPY's own
-- error, which names no table of another role
CREATE ROLE sec_side_owner IN ROLE pg_read_server_files;
CREATE ROLE sec_side_other IN ROLE pg_read_server_files;
SELECT ingest.create_event_table('sec_side', premake => 0) IS NOT NULL AS made;
ALTER TABLE sec_side OWNER TO sec_side_owner;
SET ROLE sec_side_owner;
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
RESET ROLE;
SET ROLE sec_side_other;
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
RESET ROLE;
-- taken once the session disabled its triggers, as pg_restore
-- --disable-triggers does, until it enables them again
ALTER TABLE ingest_side.sec_side_keys DISABLE TRIGGER ALL;
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
ALTER TABLE ingest_side.sec_side_keys ENABLE TRIGGER ALL;
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
-- a disable rolled back is forgotten, with its transaction or savepoint;
-- one released is kept; an enable rolled back leaves it disabled
BEGIN;
ALTER TABLE ingest_side.sec_side_keys DISABLE TRIGGER ALL;
ROLLBACK;
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
BEGIN;
SAVEPOINT s;
ALTER TABLE ingest_side.sec_side_keys DISABLE TRIGGER ALL;
ROLLBACK TO s;
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
SAVEPOINT s;
ALTER TABLE ingest_side.sec_side_keys DISABLE TRIGGER ALL;
RELEASE s;
COMMIT;
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
-- (a failure elsewhere forgets nothing)
SELECT regress.try($$SELECT 1 / 0$$);
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
BEGIN;
SAVEPOINT s;
ALTER TABLE ingest_side.sec_side_keys ENABLE TRIGGER ALL;
ROLLBACK TO s;
COMMIT;
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
ALTER TABLE ingest_side.sec_side_keys ENABLE TRIGGER ALL;
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
-- taken in a transaction block only (as in pg_restore --single-transaction):
-- outside one, the worker would see the restore half done
ALTER TABLE ingest_side.sec_side_keys DISABLE TRIGGER ALL;
COPY ingest_side.sec_side_keys FROM '/dev/null';
BEGIN;
COPY ingest_side.sec_side_keys FROM '/dev/null';
COMMIT;
ALTER TABLE ingest_side.sec_side_keys ENABLE TRIGGER ALL;
-- an INSERT sent into it, as a dump made with --inserts restores its data:
-- refused the same way, and taken once the session disabled its triggers
SET ROLE sec_side_owner;
INSERT INTO ingest_side.sec_side_keys VALUES ('00000000-0000-0000-0000-000000000001', 'k1', 1);
RESET ROLE;
SET ROLE sec_side_other;
INSERT INTO ingest_side.sec_side_keys VALUES ('00000000-0000-0000-0000-000000000001', 'k1', 1);
RESET ROLE;
BEGIN;
ALTER TABLE ingest_side.sec_side_keys DISABLE TRIGGER ALL;
INSERT INTO ingest_side.sec_side_keys VALUES ('00000000-0000-0000-0000-000000000001', 'k1', 1);
SELECT count(*) AS restored_keys FROM ingest_side.sec_side_keys;
ROLLBACK;
-- a TRUNCATE sent of it (pg_restore -j sends one before it copies into
-- each table it made): refused to its owner and to a superuser, with its
-- triggers disabled or not, and before ingest.table_config names it;
-- anyone else gets TRUNCATE's own error; one in a function is the owner's
SET ROLE sec_side_owner;
TRUNCATE ingest_side.sec_side_keys;
RESET ROLE;
SET ROLE sec_side_other;
TRUNCATE ingest_side.sec_side_keys;
RESET ROLE;
BEGIN;
ALTER TABLE ingest_side.sec_side_keys DISABLE TRIGGER ALL;
DELETE FROM ingest.table_config WHERE event_table = 'sec_side'::regclass;
TRUNCATE TABLE ONLY ingest_side.sec_side_keys;
ROLLBACK;
BEGIN;
SELECT regress.try($$TRUNCATE ingest_side.sec_side_keys$$);
ROLLBACK;
-- a side table whose triggers were disabled before ingest.table_config
-- named it (pg_restore -j restores the configuration in another session)
CREATE TEMP TABLE sec_side_cfg AS SELECT * FROM ingest.table_config WHERE event_table = 'sec_side'::regclass;
DELETE FROM ingest.table_config WHERE event_table = 'sec_side'::regclass;
ALTER TABLE ingest_side.sec_side_keys DISABLE TRIGGER ALL;
INSERT INTO ingest.table_config SELECT * FROM sec_side_cfg;
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
ALTER TABLE ingest_side.sec_side_keys ENABLE TRIGGER ALL;
-- one that no configuration names yet, while a table has ingest's
-- triggers and no configuration (a data-only restore with several jobs
-- copies the configuration when it comes to it): refused too
BEGIN;
DELETE FROM ingest.table_config WHERE event_table = 'sec_side'::regclass;
SELECT regress.try($$COPY ingest_side.sec_side_keys FROM '/dev/null'$$);
ROLLBACK;
-- A partition whose triggers this session disabled, as a data-only
-- restore does: a MERGE through the table claims and counts its rows as
-- any MERGE does; an INSERT through it leaves them unclaimed and
-- uncounted, as an INSERT into the partition would
DO $$ BEGIN
    EXECUTE format('ALTER TABLE %s DISABLE TRIGGER ALL',
                   (SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'sec_side'::regclass));
END $$;
MERGE INTO sec_side t USING (SELECT 'm' || i AS tx, regress.h(0, i) AS ts FROM generate_series(1, 3) i) s
    ON t.organization_id = '00000000-0000-0000-0000-000000000001' AND t.transaction_id = s.tx
    WHEN NOT MATCHED THEN INSERT (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
        VALUES ('00000000-0000-0000-0000-000000000001', s.tx, 'c1', 'api', s.ts, 1);
INSERT INTO sec_side (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
    VALUES ('00000000-0000-0000-0000-000000000001', 'i1', 'c1', 'api', regress.h(0, 4), 1);
SELECT ingest.fold_rollups('sec_side') >= 0 AS folded;
SELECT (SELECT count(*) FROM sec_side) AS events,
       (SELECT count(*) FROM ingest_side.sec_side_keys) AS keys,
       (SELECT sum(events) FROM ingest_side.sec_side_rollup) AS counted;
-- its dedup trigger enabled again (by name here, or by another session):
-- its rows are claimed and counted again
DO $$ BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE TRIGGER ingest_dedup',
                   (SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'sec_side'::regclass));
END $$;
INSERT INTO sec_side (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
    VALUES ('00000000-0000-0000-0000-000000000001', 'i2', 'c1', 'api', regress.h(0, 5), 1);
SELECT ingest.fold_rollups('sec_side') >= 0 AS folded;
SELECT (SELECT count(*) FROM sec_side) AS events,
       (SELECT count(*) FROM ingest_side.sec_side_keys) AS keys,
       (SELECT sum(events) FROM ingest_side.sec_side_rollup) AS counted;
DROP TABLE sec_side;
DROP ROLE sec_side_owner, sec_side_other;

SELECT * FROM regress.invariants();
