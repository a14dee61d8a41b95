-- Every write path and operation keeps the key ledger equal to the stored
-- events' keys and every rollup equal to the raw events: DELETE, UPDATE
-- (key, timestamp across days, each measure and dimension), INSERT into a
-- partition, MERGE, TRUNCATE of a partition and of the table, DETACH,
-- ATTACH and DROP of a partition by hand, also by DROP SCHEMA ... CASCADE
-- and DROP OWNED BY; writes in replica mode are refused.
SELECT ingest.create_event_table('wp', premake => 1);
SELECT ingest.create_rollup('wp', 'by_model', ARRAY['model']);
SELECT building_xid IS NULL AS ready FROM ingest.rollup_config WHERE event_table = 'wp'::regclass AND name = 'by_model';
CALL regress.fold_until_built('wp', 'by_model');
SELECT building_xid IS NULL AS ready FROM ingest.rollup_config WHERE event_table = 'wp'::regclass AND name = 'by_model';

-- a CSV row of organization ...aa
CREATE FUNCTION regress.wp(tx text, cust text, code text, ts timestamptz, v float8,
                           d numeric DEFAULT NULL, model text DEFAULT 'm1') RETURNS text
LANGUAGE sql AS $$
    SELECT format('00000000-0000-0000-0000-0000000000aa,%s,%s,%s,%s,"{""model"": ""%s""}",%s,%s',
                  tx, cust, code, ts, model, v, d) $$;
-- the keys in the ledger, and the events stored (key and day offset)
CREATE FUNCTION regress.wp_keys() RETURNS text LANGUAGE sql AS $$
    SELECT COALESCE(string_agg(transaction_id, ' ' ORDER BY transaction_id), '') FROM ingest_side.wp_keys $$;
CREATE FUNCTION regress.wp_events() RETURNS text LANGUAGE sql AS $$
    SELECT COALESCE(string_agg(transaction_id || '@' || ("timestamp" AT TIME ZONE 'UTC')::date - regress.today(),
                               ' ' ORDER BY transaction_id), '') FROM wp $$;
-- usage of today and tomorrow, per day
CREATE FUNCTION regress.wp_usage(rollup text DEFAULT NULL)
RETURNS TABLE(day int, code text, customer text, dims jsonb, events bigint, value_sum numeric,
              decimal_sum numeric, value_min float8, value_max float8, latest_value float8)
LANGUAGE sql AS $$
    SELECT (bucket AT TIME ZONE 'UTC')::date - regress.today(), code, external_customer_id, dimensions,
           events, value_sum, decimal_sum, value_min, value_max, latest_value
      FROM ingest.usage('wp', '00000000-0000-0000-0000-0000000000aa', regress.h(0, 0), regress.h(2, 0),
                        rollup => rollup, granularity => 'day') $$;
-- the ledger equals the events and both rollups equal the raw events
CREATE FUNCTION regress.wp_exact() RETURNS boolean LANGUAGE sql AS $$
    SELECT regress.wp_keys() = (SELECT COALESCE(string_agg(transaction_id, ' ' ORDER BY transaction_id), '') FROM wp)
       AND NOT EXISTS (SELECT FROM ingest.rollup_verify('wp', '-infinity', 'infinity'))
       AND NOT EXISTS (SELECT FROM ingest.rollup_verify('wp', '-infinity', 'infinity', 'by_model')) $$;
-- the name of the partition of day today + off
CREATE FUNCTION regress.wp_part(off int) RETURNS text LANGUAGE sql AS $$
    SELECT 'wp_p' || to_char(regress.today() + off, 'YYYYMMDD') $$;

SELECT * FROM ingest.load('wp', concat_ws(E'\n',
    regress.wp('e1', 'c1', 'api', regress.h(0, 1), 1, 1.5),
    regress.wp('e2', 'c1', 'api', regress.h(0, 1, 30), 2, NULL, 'm2'),
    regress.wp('e3', 'c2', 'tokens', regress.h(0, 2), 10, 2),
    regress.wp('e4', 'c2', 'tokens', regress.h(0, 2, 30), 20)));
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
SELECT * FROM regress.wp_usage();
SELECT * FROM regress.wp_usage('by_model');

-- DELETE frees the key: the corrected event, re-sent, is stored
DELETE FROM wp WHERE transaction_id = 'e2';
SELECT regress.wp_keys(), regress.wp_exact();
SELECT * FROM regress.wp_usage();
SELECT * FROM ingest.load('wp', regress.wp('e2', 'c1', 'api', regress.h(0, 1, 30), 5, NULL, 'm2'));
SELECT regress.wp_keys(), regress.wp_exact();
SELECT * FROM regress.wp_usage();
SELECT ingest.fold_rollups('wp') > 0 AS folded, regress.wp_exact();
SELECT * FROM regress.wp_usage('by_model');

-- UPDATE of the key claims the new one and frees the old one
UPDATE wp SET transaction_id = 'e9' WHERE transaction_id = 'e4';
SELECT regress.wp_keys(), regress.wp_exact();
SELECT loaded, duplicates FROM ingest.load('wp', regress.wp('e9', 'c2', 'tokens', regress.h(0, 2, 30), 20));
SELECT loaded, duplicates FROM ingest.load('wp', regress.wp('e4', 'c2', 'tokens', regress.h(0, 3), 7));
SELECT regress.wp_keys(), regress.wp_exact();
-- as a unique index would: a key stored already, or given twice, is refused
SELECT regress.try($$UPDATE wp SET transaction_id = 'e1' WHERE transaction_id = 'e9'$$);
SELECT regress.try($$UPDATE wp SET transaction_id = 'dup' WHERE transaction_id IN ('e3', 'e9')$$);
-- also when the key two rows end up sharing is one of theirs already
SELECT regress.try($$UPDATE wp SET transaction_id = 'e3' WHERE transaction_id IN ('e3', 'e9')$$);
SELECT regress.wp_keys(), regress.wp_exact();

-- UPDATE of the timestamp across days moves the event to tomorrow's
-- partition, with its key
UPDATE wp SET "timestamp" = "timestamp" + interval '1 day' WHERE transaction_id = 'e1';
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
SELECT * FROM regress.wp_usage();
SELECT loaded, duplicates, conflicts FROM ingest.load('wp', regress.wp('e1', 'c1', 'api', regress.h(0, 1), 1, 1.5));

-- UPDATE of each measure and dimension moves its contribution
UPDATE wp SET value = 100 WHERE transaction_id = 'e3';
UPDATE wp SET decimal_value = 0.25 WHERE transaction_id = 'e2';
UPDATE wp SET code = 'api' WHERE transaction_id = 'e9';
UPDATE wp SET external_customer_id = 'c3' WHERE transaction_id = 'e4';
UPDATE wp SET properties = '{"model": "m3"}' WHERE transaction_id = 'e3';
SELECT regress.wp_exact();
SELECT * FROM regress.wp_usage();
SELECT * FROM regress.wp_usage('by_model');
SELECT ingest.fold_rollups('wp') > 0 AS folded, regress.wp_exact();
SELECT * FROM regress.wp_usage('by_model');
-- the ledger's payload follows the update: the new payload is a plain
-- duplicate, the old one a conflict
SELECT duplicates, conflicts FROM ingest.load('wp', regress.wp('e3', 'c2', 'tokens', regress.h(0, 2), 100, 2, 'm3'));
SELECT duplicates, conflicts FROM ingest.load('wp', regress.wp('e3', 'c2', 'tokens', regress.h(0, 2), 10, 2));

-- INSERT straight into a partition claims and feeds like INSERT into the
-- table (the id is given: on 15 a partition has no identity of its own, on
-- 17 and later it shares the table's, GENERATED ALWAYS)
SELECT regress.try(format($$INSERT INTO %I (id, organization_id, transaction_id, external_customer_id, code, "timestamp", value)
                           OVERRIDING SYSTEM VALUE
                           VALUES (1001, '00000000-0000-0000-0000-0000000000aa', 'p1', 'c1', 'api', %L, 3),
                                  (1002, '00000000-0000-0000-0000-0000000000aa', 'e3', 'c1', 'api', %L, 3)$$,
                          regress.wp_part(0), regress.h(0, 4), regress.h(0, 4)));
SELECT regress.wp_keys(), regress.wp_exact();
SELECT * FROM regress.wp_usage();

-- MERGE: matched rows updated or deleted, unmatched ones inserted with
-- their keys claimed; inserting a stored key is refused
MERGE INTO wp w
USING (VALUES ('e9', 1), ('m1', 4), ('p1', 0)) s(tx, v)
   ON w.organization_id = '00000000-0000-0000-0000-0000000000aa' AND w.transaction_id = s.tx
 WHEN MATCHED AND s.v = 0 THEN DELETE
 WHEN MATCHED THEN UPDATE SET value = s.v
 WHEN NOT MATCHED THEN
      INSERT (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
      VALUES ('00000000-0000-0000-0000-0000000000aa', s.tx, 'c1', 'api', regress.h(0, 5), s.v);
SELECT regress.wp_keys(), regress.wp_exact();
SELECT * FROM regress.wp_usage();
SELECT regress.try($$
    MERGE INTO wp w USING (VALUES ('e3')) s(tx) ON false
     WHEN NOT MATCHED THEN
          INSERT (organization_id, transaction_id, external_customer_id, code, "timestamp")
          VALUES ('00000000-0000-0000-0000-0000000000aa', s.tx, 'c1', 'api', regress.h(0, 5))$$);
SELECT regress.wp_keys(), regress.wp_exact();

-- TRUNCATE of a partition: its events' keys are free, its hours recomputed
SELECT regress.try(format('TRUNCATE %I', regress.wp_part(1)));
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
SELECT * FROM regress.wp_usage();
SELECT loaded FROM ingest.load('wp', regress.wp('e1', 'c1', 'api', regress.h(1, 1), 1, 1.5));

-- DETACH by hand takes the partition's events out; ATTACH brings them back
SELECT regress.try(format('ALTER TABLE wp DETACH PARTITION %I', regress.wp_part(1)));
SELECT regress.wp_keys(), regress.wp_exact();
SELECT * FROM regress.wp_usage();
SELECT regress.try(format('ALTER TABLE wp ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                          regress.wp_part(1), regress.h(1, 0), regress.h(2, 0)));
SELECT regress.wp_keys(), regress.wp_exact();
SELECT * FROM regress.wp_usage();
-- a table holding a stored key cannot come in
SELECT regress.try(format('ALTER TABLE wp DETACH PARTITION %I', regress.wp_part(1)));
SELECT regress.try(format($$INSERT INTO %I (id, organization_id, transaction_id, external_customer_id, code, "timestamp")
                           VALUES (1003, '00000000-0000-0000-0000-0000000000aa', 'e3', 'c1', 'api', %L)$$,
                          regress.wp_part(1), regress.h(1, 2)));
SELECT regress.try(format('ALTER TABLE wp ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                          regress.wp_part(1), regress.h(1, 0), regress.h(2, 0)));
SELECT regress.wp_keys(), regress.wp_exact();
-- DETACH ... CONCURRENTLY commits halfway: refused
SELECT regress.try(format('ALTER TABLE wp DETACH PARTITION %I CONCURRENTLY', regress.wp_part(0)));

-- DROP of a partition by hand: its events' keys go
SELECT regress.try(format('DELETE FROM %I WHERE transaction_id = %L', regress.wp_part(1), 'e3'));
SELECT regress.try(format('ALTER TABLE wp ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                          regress.wp_part(1), regress.h(1, 0), regress.h(2, 0)));
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
SELECT regress.try(format('DROP TABLE %I', regress.wp_part(1)));
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
SELECT * FROM regress.wp_usage();

-- TRUNCATE of the table: every key is free, every hour recomputed
TRUNCATE wp;
SELECT regress.wp_keys(), regress.wp_exact();
SELECT * FROM regress.wp_usage();
SELECT loaded FROM ingest.load('wp', concat_ws(E'\n',
    regress.wp('e1', 'c1', 'api', regress.h(0, 1), 1, 1.5),
    regress.wp('e2', 'c1', 'api', regress.h(0, 1, 30), 2, NULL, 'm2')));
SELECT regress.wp_keys(), regress.wp_exact();
SELECT * FROM regress.wp_usage();

-- a row an UPDATE moves keeps its key even while another command runs in
-- the UPDATE (a set-returning function evaluated lazily); tomorrow's
-- partition, dropped above, is made again first
SELECT action, regress.rel(partition) FROM regress.lifecycle('wp');
CREATE FUNCTION regress.srf() RETURNS SETOF float8 LANGUAGE sql AS 'SELECT generate_series(1, 10)::float8';
UPDATE wp SET "timestamp" = "timestamp" + interval '1 day', value = (SELECT regress.srf() LIMIT 1)
 WHERE transaction_id = 'e2';
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
-- and a COPY run inside an UPDATE of another table deduplicates as COPY
CREATE TABLE regress.other (id int);
INSERT INTO regress.other VALUES (1);
DO $$ BEGIN
    EXECUTE format($q$COPY (SELECT '00000000-0000-0000-0000-0000000000aa', 'e1', 'c1', 'api', %L, '{}', 1, NULL)
                      TO %L (FORMAT csv)$q$, regress.h(0, 1), current_setting('data_directory') || '/wp_dup.csv');
END $$;
CREATE FUNCTION regress.import() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('COPY wp (organization_id, transaction_id, external_customer_id, code, "timestamp", properties, '
                   'value, decimal_value) FROM %L (FORMAT csv)', current_setting('data_directory') || '/wp_dup.csv');
    RETURN 2;
END $$;
UPDATE regress.other SET id = regress.import();
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
-- and one run inside an UPDATE of this very table too: its rows are
-- inserted (their keys claimed), not rows the UPDATE moves
UPDATE wp SET value = value WHERE transaction_id = 'e2' AND regress.import() = 2;
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
-- data-modifying WITH: each row by the command that writes it; an UPDATE
-- in a WITH moves its row, an INSERT in a WITH under an UPDATE claims its
-- key, and a statement that writes the table by two kinds of command is
-- refused (its inserted and moved rows could not be told apart)
WITH m AS (UPDATE wp SET "timestamp" = "timestamp" + interval '1 day' WHERE transaction_id = 'e1' RETURNING 1)
SELECT count(*) AS moved FROM m;
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
WITH i AS (INSERT INTO wp (organization_id, transaction_id, external_customer_id, code, "timestamp")
           VALUES ('00000000-0000-0000-0000-0000000000aa', 'e1', 'c1', 'api', regress.h(0, 2)),
                  ('00000000-0000-0000-0000-0000000000aa', 'cte1', 'c1', 'api', regress.h(0, 2))
           RETURNING transaction_id)
UPDATE regress.other SET id = (SELECT count(*) FROM i);
SELECT id AS inserted FROM regress.other;
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
SELECT regress.try($$
    WITH d AS (DELETE FROM wp WHERE transaction_id = 'cte1' RETURNING *)
    INSERT INTO wp (organization_id, transaction_id, external_customer_id, code, "timestamp")
    SELECT organization_id, transaction_id, external_customer_id, code, "timestamp" FROM d$$);
-- also when each writes another day of it (the DELETE pruned to today's
-- partition, the INSERT into tomorrow's, named): the key the DELETE frees
-- at the end made the INSERT skip its row, and the event was gone
SELECT regress.try(format($f$
    WITH d AS (DELETE FROM wp WHERE transaction_id = 'cte1' AND "timestamp" >= %L AND "timestamp" < %L
               RETURNING *)
    INSERT INTO %s (organization_id, transaction_id, external_customer_id, code, "timestamp")
    SELECT organization_id, transaction_id, external_customer_id, code, "timestamp" + interval '1 day' FROM d$f$,
    regress.h(0, 0), regress.h(1, 0),
    (SELECT partition FROM ingest.partitions WHERE event_table = 'wp'::regclass AND day = regress.today() + 1)));
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
-- a cursor whose fetch failed in a subtransaction is dropped without its
-- command ending: the dedup trigger never looks at what it left
BEGIN;
DECLARE cur CURSOR FOR SELECT 1 / (g - 3) FROM generate_series(1, 5) g;
SAVEPOINT s;
SELECT regress.try('FETCH ALL FROM cur');
ROLLBACK TO s;
CLOSE cur;
SET LOCAL ingest.copy_hook = off;
SELECT regress.import();
COMMIT;
SELECT regress.wp_keys(), regress.wp_events(), regress.wp_exact();
-- (back as the tests below expect it)
UPDATE wp SET "timestamp" = "timestamp" - interval '1 day' WHERE transaction_id = 'e1';
DELETE FROM wp WHERE transaction_id = 'cte1';

-- CREATE TABLE IF NOT EXISTS ... PARTITION OF a partition that exists does
-- nothing, as PostgreSQL does: it left the partition's replica identity
-- reset (as the extension's owner, for a role that does not own the table)
CREATE TABLE wp_2099 PARTITION OF wp FOR VALUES FROM ('2099-01-01 00:00+00') TO ('2099-01-02 00:00+00');
ALTER TABLE wp_2099 REPLICA IDENTITY NOTHING;
CREATE ROLE wp_stranger;
GRANT CREATE ON SCHEMA public TO wp_stranger;
SET ROLE wp_stranger;
CREATE TABLE IF NOT EXISTS public.wp_2099 PARTITION OF wp
    FOR VALUES FROM ('2099-01-01 00:00+00') TO ('2099-01-02 00:00+00');
RESET ROLE;
SELECT relreplident FROM pg_class WHERE oid = 'wp_2099'::regclass;
DROP TABLE wp_2099;
REVOKE CREATE ON SCHEMA public FROM wp_stranger;
DROP ROLE wp_stranger;

-- MERGE that would move a row to another day is refused (PostgreSQL 15
-- shows such a row in no transition table)
SELECT regress.try($$
    MERGE INTO wp w USING (VALUES ('e1')) s(tx)
       ON w.organization_id = '00000000-0000-0000-0000-0000000000aa' AND w.transaction_id = s.tx
     WHEN MATCHED THEN UPDATE SET "timestamp" = w."timestamp" + interval '1 day'
     WHEN NOT MATCHED THEN INSERT (organization_id, transaction_id, external_customer_id, code, "timestamp")
          VALUES ('00000000-0000-0000-0000-0000000000aa', s.tx, 'c1', 'api', regress.h(0, 5))$$);
-- INSERT ... ON CONFLICT could skip a row after its key was claimed, when
-- the table has a unique index: refused there, deduplicated elsewhere
INSERT INTO wp (organization_id, transaction_id, external_customer_id, code, "timestamp")
VALUES ('00000000-0000-0000-0000-0000000000aa', 'oc1', 'c1', 'api', regress.h(0, 6)),
       ('00000000-0000-0000-0000-0000000000aa', 'e1', 'c1', 'api', regress.h(0, 6))
ON CONFLICT DO NOTHING;
CREATE UNIQUE INDEX wp_unique ON wp (organization_id, code, "timestamp");
SELECT regress.try($$INSERT INTO wp (organization_id, transaction_id, external_customer_id, code, "timestamp")
                     VALUES ('00000000-0000-0000-0000-0000000000aa', 'oc2', 'c1', 'api', regress.h(0, 6))
                     ON CONFLICT DO NOTHING$$);
-- also when a data-modifying WITH wrote the partition first without it
SELECT regress.try($$
    WITH x AS (INSERT INTO wp (organization_id, transaction_id, external_customer_id, code, "timestamp")
               VALUES ('00000000-0000-0000-0000-0000000000aa', 'oc4', 'c1', 'api', regress.h(0, 7))
               RETURNING "timestamp")
    INSERT INTO wp (organization_id, transaction_id, external_customer_id, code, "timestamp")
    SELECT '00000000-0000-0000-0000-0000000000aa', 'oc5', 'c1', 'api', "timestamp" FROM x
    ON CONFLICT DO NOTHING$$);
DROP INDEX wp_unique;
-- an exclusion constraint arbitrates ON CONFLICT DO NOTHING as well
DO $$ BEGIN
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT wp_excl EXCLUDE USING btree (transaction_id WITH =)',
                   (SELECT partition FROM ingest.partitions WHERE event_table = 'wp'::regclass AND day = regress.today()));
END $$;
SELECT regress.try($$INSERT INTO wp (organization_id, transaction_id, external_customer_id, code, "timestamp")
                     VALUES ('00000000-0000-0000-0000-0000000000aa', 'oc3', 'c1', 'api', regress.h(0, 6))
                     ON CONFLICT DO NOTHING$$);
DO $$ BEGIN
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT wp_excl',
                   (SELECT partition FROM ingest.partitions WHERE event_table = 'wp'::regclass AND day = regress.today()));
END $$;
SELECT regress.wp_keys(), regress.wp_exact();

-- rollup hours older than the raw events retained stay as they were,
-- whatever happens to the retained ones later (here TRUNCATE)
SELECT regress.backdate('wp', -3);
SELECT loaded FROM ingest.load('wp', regress.wp('old1', 'c9', 'api', regress.h(-3, 2), 42));
SELECT ingest.fold_rollups('wp') > 0 AS folded;
SELECT ingest.configure('wp', retention => '2 days');
SELECT action, regress.rel(partition) FROM regress.lifecycle('wp');
SELECT ingest.configure('wp', retention => '0');
SELECT events, value_sum FROM ingest.usage('wp', '00000000-0000-0000-0000-0000000000aa',
                                           regress.h(-3, 0), regress.h(-2, 0));
TRUNCATE wp;
SELECT ingest.fold_rollups('wp') >= 0 AS folded;
SELECT events, value_sum FROM ingest.usage('wp', '00000000-0000-0000-0000-0000000000aa',
                                           regress.h(-3, 0), regress.h(-2, 0));
SELECT loaded FROM ingest.load('wp', concat_ws(E'\n',
    regress.wp('e1', 'c1', 'api', regress.h(0, 1), 1, 1.5),
    regress.wp('e2', 'c1', 'api', regress.h(0, 1, 30), 2, NULL, 'm2')));
SELECT regress.wp_keys(), regress.wp_exact();

-- the side tables belong to the extension's owner; the table's owner gets
-- their rows, follows ALTER TABLE ... OWNER TO, and writes them for its
-- own statements, but can put nothing of its own (a trigger, a rule) on
-- them that ingest would run
CREATE ROLE wp_owner;
ALTER TABLE wp OWNER TO wp_owner;
SELECT c.relname, c.relowner = (SELECT extowner FROM pg_extension WHERE extname = 'ingest') AS extension_owned,
       has_table_privilege('wp_owner', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE') AS owner_writes,
       has_table_privilege('wp_owner', c.oid, 'TRIGGER') AS owner_triggers,
       pg_get_userbyid(c.relowner) = 'wp_owner' AS owner_owns
  FROM ingest.table_config t
  JOIN pg_class c ON c.oid IN (t.ledger, t.rollup_hours, t.rollup_deltas, t.rollup_stale, t.usage_view)
 WHERE t.event_table = 'wp'::regclass ORDER BY 1;
CREATE FUNCTION regress.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
SET ROLE wp_owner;
SELECT regress.try($$CREATE TRIGGER mine AFTER INSERT ON ingest_side.wp_rollup FOR EACH STATEMENT EXECUTE FUNCTION regress.noop()$$);
SELECT regress.try($$CREATE RULE mine AS ON INSERT TO ingest_side.wp_deltas DO INSTEAD NOTHING$$);
RESET ROLE;
DELETE FROM wp WHERE transaction_id = 'e1';
SELECT regress.wp_keys(), regress.wp_exact();
-- a change of owner inside a transaction that already wrote the table:
-- the next row claims its key as the new owner, not the old one (who has
-- lost the ledger)
CREATE ROLE wp_owner2;
BEGIN;
INSERT INTO wp (organization_id, transaction_id, external_customer_id, code, "timestamp")
VALUES ('00000000-0000-0000-0000-0000000000aa', 'o1', 'c1', 'api', regress.h(0, 2));
ALTER TABLE wp OWNER TO wp_owner2;
INSERT INTO wp (organization_id, transaction_id, external_customer_id, code, "timestamp")
VALUES ('00000000-0000-0000-0000-0000000000aa', 'o2', 'c1', 'api', regress.h(0, 2));
COMMIT;
SELECT has_table_privilege('wp_owner', t.ledger, 'INSERT') AS old_owner_writes,
       has_table_privilege('wp_owner2', t.ledger, 'INSERT') AS new_owner_writes
  FROM ingest.table_config t WHERE t.event_table = 'wp'::regclass;
SELECT regress.wp_keys(), regress.wp_exact();

-- A partition can go without a DROP TABLE naming it: by DROP SCHEMA ...
-- CASCADE, or DROP OWNED BY its owner.  Its events' keys go all the same
-- (the events can be sent again) and its hours are recomputed.
CREATE SCHEMA wp_elsewhere;
SELECT regress.try(format('CREATE TABLE wp_elsewhere.wp_p5 PARTITION OF wp FOR VALUES FROM (%L) TO (%L)',
                          regress.h(5, 0), regress.h(6, 0)));
SELECT loaded FROM ingest.load('wp', concat_ws(E'\n',
    regress.wp('s1', 'c1', 'api', regress.h(5, 1), 1), regress.wp('s2', 'c1', 'api', regress.h(5, 2), 2)));
SELECT regress.wp_keys(), regress.wp_exact();
DROP SCHEMA wp_elsewhere CASCADE;
SELECT regress.wp_keys(), regress.wp_exact();
SELECT loaded, duplicates FROM ingest.load('wp', regress.wp('s1', 'c1', 'api', regress.h(0, 3), 1));
SELECT regress.wp_keys(), regress.wp_exact();
CREATE ROLE wp_part_owner;
SELECT regress.try(format('CREATE TABLE wp_p6 PARTITION OF wp FOR VALUES FROM (%L) TO (%L)',
                          regress.h(6, 0), regress.h(7, 0)));
ALTER TABLE wp_p6 OWNER TO wp_part_owner;
SELECT loaded FROM ingest.load('wp', regress.wp('s2', 'c1', 'api', regress.h(6, 1), 2));
SELECT regress.wp_keys(), regress.wp_exact();
DROP OWNED BY wp_part_owner;
SELECT regress.wp_keys(), regress.wp_exact();
SELECT loaded, duplicates FROM ingest.load('wp', regress.wp('s2', 'c1', 'api', regress.h(0, 3), 2));
SELECT regress.wp_keys(), regress.wp_exact();
-- DROP TABLE by the owner of a partition who has no right to the table:
-- the keys are read through the table, as its owner
SELECT regress.try(format('CREATE TABLE wp_p7 PARTITION OF wp FOR VALUES FROM (%L) TO (%L)',
                          regress.h(7, 0), regress.h(8, 0)));
ALTER TABLE wp_p7 OWNER TO wp_part_owner;
SELECT loaded FROM ingest.load('wp', regress.wp('s3', 'c1', 'api', regress.h(7, 1), 2));
SET ROLE wp_part_owner;
DROP TABLE wp_p7;
RESET ROLE;
SELECT regress.wp_keys(), regress.wp_exact();
DROP ROLE wp_part_owner;
-- the partition's rows are read before its TOAST table goes (large
-- properties, stored out of line), and its bounds mean the same whatever
-- DateStyle and TimeZone say
CREATE SCHEMA wp_elsewhere;
SELECT regress.try(format('CREATE TABLE wp_elsewhere.wp_p8 PARTITION OF wp FOR VALUES FROM (%L) TO (%L)',
                          regress.h(8, 0), regress.h(9, 0)));
SELECT loaded FROM ingest.load('wp', concat_ws(E'\n',
    format('00000000-0000-0000-0000-0000000000aa,s4,c1,api,%s,"{""big"": ""%s""}",1,', regress.h(8, 0, 30),
           (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i)),
    regress.wp('s5', 'c1', 'api', regress.h(8, 23, 30), 1)));
SELECT pg_relation_size(reltoastrelid) > 0 AS stored_out_of_line FROM pg_class WHERE oid = 'wp_elsewhere.wp_p8'::regclass;
SET DateStyle = 'SQL, MDY';
SET TimeZone = 'Asia/Shanghai';
DROP SCHEMA wp_elsewhere CASCADE;
RESET DateStyle;
RESET TimeZone;
SELECT regress.wp_keys(), regress.wp_exact();
-- a drop rolled back (a subtransaction) and done again in one statement
-- takes the rows out the second time too
CREATE SCHEMA wp_elsewhere;
SELECT regress.try(format('CREATE TABLE wp_elsewhere.wp_p8 PARTITION OF wp FOR VALUES FROM (%L) TO (%L)',
                          regress.h(8, 0), regress.h(9, 0)));
SELECT loaded FROM ingest.load('wp', regress.wp('s7', 'c1', 'api', regress.h(8, 1), 1));
DO $$
BEGIN
    BEGIN
        DROP SCHEMA wp_elsewhere CASCADE;
        RAISE EXCEPTION 'undo';
    EXCEPTION WHEN raise_exception THEN NULL;
    END;
    DROP SCHEMA wp_elsewhere CASCADE;
END $$;
SELECT regress.wp_keys(), regress.wp_exact();
-- rows a policy would hide from the table's owner (FORCE ROW LEVEL
-- SECURITY) cannot be read to take them out: refused, not half done
SELECT regress.try(format('CREATE TABLE wp_p9 PARTITION OF wp FOR VALUES FROM (%L) TO (%L)',
                          regress.h(9, 0), regress.h(10, 0)));
SELECT loaded FROM ingest.load('wp', regress.wp('s6', 'c1', 'hidden', regress.h(9, 1), 1));
ALTER TABLE wp ENABLE ROW LEVEL SECURITY;
ALTER TABLE wp FORCE ROW LEVEL SECURITY;
CREATE POLICY wp_hide ON wp USING (code <> 'hidden');
SELECT regress.try('DROP TABLE wp_p9');
DROP POLICY wp_hide ON wp;
ALTER TABLE wp NO FORCE ROW LEVEL SECURITY;
ALTER TABLE wp DISABLE ROW LEVEL SECURITY;
DROP TABLE wp_p9;
SELECT regress.wp_keys(), regress.wp_exact();
-- ... nor to adopt a table (its ledger had the visible rows' keys alone)
CREATE TABLE wp_adopt (LIKE wp INCLUDING ALL) PARTITION BY RANGE ("timestamp");
SELECT regress.try(format('CREATE TABLE wp_adopt_d PARTITION OF wp_adopt FOR VALUES FROM (%L) TO (%L)',
                          regress.h(0, 0), regress.h(1, 0)));
INSERT INTO wp_adopt (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
VALUES ('00000000-0000-0000-0000-0000000000aa', 'a1', 'c1', 'api', regress.h(0, 1), 1),
       ('00000000-0000-0000-0000-0000000000aa', 'a2', 'c1', 'hidden', regress.h(0, 1), 1);
ALTER TABLE wp_adopt OWNER TO wp_owner2;
ALTER TABLE wp_adopt_d OWNER TO wp_owner2;
ALTER TABLE wp_adopt ENABLE ROW LEVEL SECURITY;
ALTER TABLE wp_adopt FORCE ROW LEVEL SECURITY;
CREATE POLICY wp_adopt_hide ON wp_adopt USING (code <> 'hidden');
SELECT regress.try($$SELECT ingest.manage_table('wp_adopt')$$);
SELECT count(*) AS adopted FROM ingest.table_config WHERE event_table = 'wp_adopt'::regclass;
DROP TABLE wp_adopt;
-- ... nor to retire a day (the visible rows' keys alone left the ledger)
SELECT ingest.create_event_table('wp_ret', retention => '30 days') IS NOT NULL AS made;
CREATE TABLE wp_ret_old (LIKE wp_ret);
SELECT regress.try(format('ALTER TABLE wp_ret ATTACH PARTITION wp_ret_old FOR VALUES FROM (%L) TO (%L)',
                          regress.h(-40, 0), regress.h(-39, 0)));
SELECT loaded FROM ingest.load('wp_ret', regress.wp('r1', 'c1', 'api', regress.h(-40, 1), 1) || E'\n'
                                       || regress.wp('r2', 'c1', 'hidden', regress.h(-40, 1), 1));
ALTER TABLE wp_ret OWNER TO wp_owner2;
ALTER TABLE wp_ret_old OWNER TO wp_owner2;
ALTER TABLE wp_ret_old ENABLE ROW LEVEL SECURITY;
ALTER TABLE wp_ret_old FORCE ROW LEVEL SECURITY;
CREATE POLICY wp_ret_hide ON wp_ret_old USING (code <> 'hidden');
SELECT action, CASE WHEN detail LIKE 'error%' THEN detail ELSE 'ok' END AS outcome
  FROM ingest.run_maintenance('wp_ret') WHERE action IN ('detach', 'drop');
-- the detach had begun: the day waits detach-pending, with its keys
SELECT (SELECT i.inhdetachpending FROM pg_inherits i WHERE i.inhrelid = to_regclass('wp_ret_old')) AS detach_pending,
       count(*) AS keys FROM ingest_side.wp_ret_keys;
-- dropped by hand, it is refused as its retirement was (its keys stayed,
-- read through the table, which does not show a day detach pending)
SELECT left(regress.try('DROP TABLE wp_ret_old'), 5) AS refused;
SELECT count(*) AS keys FROM ingest_side.wp_ret_keys;
DROP TABLE wp_ret;
-- ... nor to attach a partition (its visible rows' keys alone were claimed)
-- (no identity column: PostgreSQL 17 refuses one in a partition attached)
CREATE TABLE wp_att (LIKE wp INCLUDING DEFAULTS);
INSERT INTO wp_att (id, organization_id, transaction_id, external_customer_id, code, "timestamp", value)
VALUES (900001, '00000000-0000-0000-0000-0000000000aa', 'att1', 'c1', 'api', regress.h(9, 1), 1),
       (900002, '00000000-0000-0000-0000-0000000000aa', 'att2', 'c1', 'hidden', regress.h(9, 1), 1);
ALTER TABLE wp_att OWNER TO wp_owner2;
ALTER TABLE wp_att ENABLE ROW LEVEL SECURITY;
ALTER TABLE wp_att FORCE ROW LEVEL SECURITY;
CREATE POLICY wp_att_hide ON wp_att USING (code <> 'hidden');
SELECT regress.try(format('ALTER TABLE wp ATTACH PARTITION wp_att FOR VALUES FROM (%L) TO (%L)',
                          regress.h(9, 0), regress.h(10, 0)));
SELECT count(*) AS attached FROM pg_inherits WHERE inhrelid = 'wp_att'::regclass;
DROP TABLE wp_att;
-- ... nor to truncate a partition (its visible rows' keys alone were forgotten)
SELECT regress.try(format('CREATE TABLE wp_tr PARTITION OF wp FOR VALUES FROM (%L) TO (%L)',
                          regress.h(9, 0), regress.h(10, 0)));
SELECT loaded FROM ingest.load('wp', regress.wp('tr1', 'c1', 'api', regress.h(9, 1), 1) || E'\n'
                                   || regress.wp('tr2', 'c1', 'hidden', regress.h(9, 1), 1));
ALTER TABLE wp_tr OWNER TO wp_owner2;
ALTER TABLE wp_tr ENABLE ROW LEVEL SECURITY;
ALTER TABLE wp_tr FORCE ROW LEVEL SECURITY;
CREATE POLICY wp_tr_hide ON wp_tr USING (code <> 'hidden');
SELECT regress.try('TRUNCATE wp_tr');
SELECT count(*) AS rows_kept FROM wp_tr;
DROP POLICY wp_tr_hide ON wp_tr;
ALTER TABLE wp_tr NO FORCE ROW LEVEL SECURITY;
ALTER TABLE wp_tr DISABLE ROW LEVEL SECURITY;
TRUNCATE wp_tr;
DROP TABLE wp_tr;
SELECT regress.wp_keys(), regress.wp_exact();
-- a managed table that goes with its schema, a partition of it elsewhere:
-- its whole state goes with it
CREATE SCHEMA wp_gone;
SELECT ingest.create_event_table('wp_gone.gev', premake => 0) IS NOT NULL AS made;
SELECT regress.try(format('CREATE TABLE public.gev_elsewhere PARTITION OF wp_gone.gev FOR VALUES FROM (%L) TO (%L)',
                          regress.h(5, 0), regress.h(6, 0)));
SELECT loaded FROM ingest.load('wp_gone.gev', regress.wp('g1', 'c1', 'api', regress.h(5, 1), 1));
DROP SCHEMA wp_gone CASCADE;
SELECT count(*) AS config_left FROM ingest.table_config WHERE event_table::text LIKE '%gev%';
SELECT to_regclass('public.gev_elsewhere') IS NULL AS partition_gone;

-- Keys too wide for the side tables' indexes (a transaction_id over 2000
-- bytes, or a code and a customer over 2000 together) could be neither
-- claimed nor folded: the loader sets the row aside, INSERT and UPDATE fail
SELECT loaded, rejected FROM ingest.load('wp', concat_ws(E'\n',
    regress.wp((SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i), 'c1', 'api', regress.h(0, 2), 1),
    regress.wp('w1', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i), 'api', regress.h(0, 2), 1),
    regress.wp('w2', 'c1', 'api', regress.h(0, 2), 1)));
SELECT sqlstate, message FROM ingest.rejects WHERE event_table = 'wp'::regclass AND sqlstate = '54000' ORDER BY message;
SELECT regress.try(format($$INSERT INTO wp (organization_id, transaction_id, external_customer_id, code, "timestamp")
                            VALUES ('00000000-0000-0000-0000-0000000000aa', %L, 'c1', 'api', %L)$$,
                          (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i), regress.h(0, 2)));
SELECT regress.try($$UPDATE wp SET code = (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i)
                      WHERE transaction_id = 'w2'$$);
SELECT regress.wp_keys(), regress.wp_exact();

-- session_replication_role = replica (logical replication's apply, or a
-- session that sets it): ingest's triggers do not fire, so writes other
-- than the loader's are refused; the loader keeps the side state itself
SET session_replication_role = replica;
SELECT regress.try(format($$INSERT INTO wp (organization_id, transaction_id, external_customer_id, code, "timestamp")
                            VALUES ('00000000-0000-0000-0000-0000000000aa', 'r0', 'c1', 'api', %L)$$, regress.h(0, 2)));
SELECT regress.try($$UPDATE wp SET value = 9 WHERE transaction_id = 'e2'$$);
SELECT regress.try($$DELETE FROM wp WHERE transaction_id = 'e2'$$);
SELECT regress.try(format('TRUNCATE %I', regress.wp_part(0)));
SELECT regress.try('TRUNCATE wp');
SELECT loaded FROM ingest.load('wp', regress.wp('r1', 'c1', 'api', regress.h(0, 3), 1));
RESET session_replication_role;
SELECT regress.wp_keys(), regress.wp_exact();

-- Every partition fires ingest's statement triggers, and no BEFORE INSERT
-- row trigger of it fires after ingest claims a row's key; else a statement
-- naming it escapes the ledger and the rollups.  Refused: a table attached
-- with such a trigger (it stored t1-x under the key t1), one partitioned
-- itself (its partitions, named, fired no ingest trigger), a foreign one,
-- and a default partition (its rows before the first day were read as
-- retired: a DELETE there left the rollup as it was)
SELECT ingest.create_event_table('ps', premake => 1);
CREATE FUNCTION regress.ps_exact() RETURNS boolean LANGUAGE sql AS $$
    SELECT (SELECT COALESCE(string_agg(transaction_id, ' ' ORDER BY transaction_id), '') FROM ingest_side.ps_keys)
         = (SELECT COALESCE(string_agg(transaction_id, ' ' ORDER BY transaction_id), '') FROM ps)
       AND NOT EXISTS (SELECT FROM ingest.rollup_verify('ps', '-infinity', 'infinity')) $$;
CREATE FUNCTION regress.ps_insert(tx text, ts timestamptz) RETURNS text LANGUAGE sql AS $$
    SELECT left(regress.try(format($q$INSERT INTO ps (organization_id, transaction_id, external_customer_id, code,
                                                      "timestamp", value)
                                      VALUES ('00000000-0000-0000-0000-0000000000aa', %L, 'c1', 'api', %L, 1)$q$,
                                   tx, ts)), 5) $$;
CREATE FUNCTION regress.ps_rekey() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.transaction_id := NEW.transaction_id || '-x'; RETURN NEW; END $$;
CREATE TABLE ps_y (LIKE ps INCLUDING DEFAULTS);
CREATE TRIGGER zz_rekey BEFORE INSERT ON ps_y FOR EACH ROW EXECUTE FUNCTION regress.ps_rekey();
SELECT regress.try(format('ALTER TABLE ps ATTACH PARTITION ps_y FOR VALUES FROM (%L) TO (%L)',
                          regress.h(-1, 0), regress.h(0, 0)));
SELECT regress.ps_insert('t1', regress.h(-1, 1)), regress.ps_exact();
CREATE TABLE ps_z (LIKE ps INCLUDING DEFAULTS) PARTITION BY LIST (code);
CREATE TABLE ps_z_api PARTITION OF ps_z FOR VALUES IN ('api');
SELECT regress.try(format('ALTER TABLE ps ATTACH PARTITION ps_z FOR VALUES FROM (%L) TO (%L)',
                          regress.h(-1, 0), regress.h(0, 0)));
SELECT regress.ps_insert('a', regress.h(-1, 4)), regress.ps_insert('b', regress.h(-1, 4));
UPDATE ps_z_api SET transaction_id = 'c' WHERE transaction_id = 'a';
DELETE FROM ps_z_api WHERE transaction_id = 'b';
SELECT regress.ps_exact();
SELECT regress.try(format('CREATE TABLE ps_w PARTITION OF ps FOR VALUES FROM (%L) TO (%L) PARTITION BY LIST (code)',
                          regress.h(-2, 0), regress.h(-1, 0)));
CREATE FOREIGN DATA WRAPPER ps_dummy;
CREATE SERVER ps_nowhere FOREIGN DATA WRAPPER ps_dummy;
SELECT regress.try(format('CREATE FOREIGN TABLE ps_f PARTITION OF ps FOR VALUES FROM (%L) TO (%L) SERVER ps_nowhere',
                          regress.h(-2, 0), regress.h(-1, 0)));
SELECT regress.try('CREATE TABLE ps_def PARTITION OF ps DEFAULT');
SELECT regress.ps_insert('old1', '2020-01-01 10:00+00');
DELETE FROM ps WHERE transaction_id = 'old1';
SELECT ingest.fold_rollups('ps') >= 0 AS folded, regress.ps_exact();
SELECT count(*) AS old_usage_rows FROM ingest.usage('ps', '00000000-0000-0000-0000-0000000000aa',
                                                    '2020-01-01 00:00+00', '2020-01-02 00:00+00');

-- MERGE whose UPDATE action moves a row to another day (a BEFORE UPDATE
-- row trigger changes "timestamp", as SET "timestamp" would, which is
-- refused above) is refused, with or without an INSERT action: the moved
-- row was in no transition table, and kept its old day's usage
SELECT regress.ps_insert('m1', regress.h(0, 1));
CREATE FUNCTION regress.ps_next_day() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW."timestamp" := NEW."timestamp" + interval '1 day'; RETURN NEW; END $$;
CREATE TRIGGER a_next_day BEFORE UPDATE ON ps FOR EACH ROW EXECUTE FUNCTION regress.ps_next_day();
SELECT regress.try($$MERGE INTO ps e USING (VALUES ('m1')) s(tx) ON e.transaction_id = s.tx
                      WHEN MATCHED THEN UPDATE SET value = 5$$);
SELECT regress.try($$MERGE INTO ps e USING (VALUES ('m1'), ('m2')) s(tx) ON e.transaction_id = s.tx
                      WHEN MATCHED THEN UPDATE SET value = 6
                      WHEN NOT MATCHED THEN INSERT (organization_id, transaction_id, external_customer_id, code,
                                                    "timestamp", value)
                           VALUES ('00000000-0000-0000-0000-0000000000aa', s.tx, 'c1', 'api', regress.h(0, 2), 1)$$);
SELECT ingest.fold_rollups('ps') >= 0 AS folded, regress.ps_exact();
-- a plain UPDATE moves it and its usage; a MERGE that moves no row inserts
UPDATE ps SET value = 7 WHERE transaction_id = 'm1';
DROP TRIGGER a_next_day ON ps;
SELECT regress.try($$MERGE INTO ps e USING (VALUES ('m1'), ('m2')) s(tx) ON e.transaction_id = s.tx
                      WHEN MATCHED THEN UPDATE SET value = 8
                      WHEN NOT MATCHED THEN INSERT (organization_id, transaction_id, external_customer_id, code,
                                                    "timestamp", value)
                           VALUES ('00000000-0000-0000-0000-0000000000aa', s.tx, 'c1', 'api', regress.h(0, 2), 1)$$);
SELECT transaction_id, ("timestamp" AT TIME ZONE 'UTC')::date - regress.today() AS day, value
  FROM ps ORDER BY 1;
SELECT ingest.fold_rollups('ps') >= 0 AS folded, regress.ps_exact();

-- MERGE's refusal of SET "timestamp" looks at column names: a partition
-- made after a DROP COLUMN of the table numbers its columns its own way
-- (properties where the table has "timestamp"), and a MERGE setting
-- properties was refused
CREATE TABLE pm_ev (LIKE ps INCLUDING DEFAULTS INCLUDING IDENTITY) PARTITION BY RANGE ("timestamp");
SELECT ingest.manage_table('pm_ev', premake => 0);
ALTER TABLE pm_ev DROP COLUMN id;
SELECT count(*) AS made FROM ingest.create_partitions('pm_ev', regress.today(), regress.today() + 1);
SELECT regress.try($$MERGE INTO pm_ev t
    USING (VALUES ('00000000-0000-0000-0000-0000000000aa'::uuid, 'p1')) s(org, tx)
       ON t.organization_id = s.org AND t.transaction_id = s.tx
     WHEN MATCHED THEN UPDATE SET properties = '{"a": 1}'
     WHEN NOT MATCHED THEN INSERT (organization_id, transaction_id, external_customer_id, code, "timestamp")
          VALUES (s.org, s.tx, 'c1', 'api', regress.h(0, 1))$$);
SELECT regress.try($$MERGE INTO pm_ev t
    USING (VALUES ('00000000-0000-0000-0000-0000000000aa'::uuid, 'p2')) s(org, tx)
       ON t.organization_id = s.org AND t.transaction_id = s.tx
     WHEN MATCHED THEN UPDATE SET "timestamp" = t."timestamp" + interval '1 day'
     WHEN NOT MATCHED THEN INSERT (organization_id, transaction_id, external_customer_id, code, "timestamp")
          VALUES (s.org, s.tx, 'c1', 'api', regress.h(0, 1))$$);
SELECT transaction_id FROM pm_ev ORDER BY 1;
DROP TABLE pm_ev;

-- partition bounds are read the same whatever the session's DateStyle and
-- TimeZone: under SQL style in Asia/Kolkata, "05:30:00 IST" read back as
-- Israel's time, the retained hours began at 04:00 UTC and a fold took the
-- stale mark of the 01:00 hour without recomputing it
SELECT regress.ps_insert('d1', regress.h(0, 1));
SELECT ingest.fold_rollups('ps') >= 0 AS folded;
BEGIN;
DELETE FROM ps WHERE transaction_id = 'd1';
SET LOCAL datestyle = 'SQL, MDY';
SET LOCAL timezone = 'Asia/Kolkata';
SELECT ingest.fold_rollups('ps') >= 0 AS folded;
COMMIT;
SELECT regress.ps_exact();

-- What would stop ingest following a table's rows is refused: renaming or
-- replacing its own triggers (a renamed ingest_dedup had the table taken
-- for one mid-restore, and a duplicate was stored; DROP TRIGGER is let
-- through, for pg_restore --clean), renaming a billing column through the
-- row type (then loads crashed the server) or dropping one by a cascade
-- (not when the table goes too), and an unlogged partition (a crash
-- emptied it while the ledger kept its keys; an unlogged partitioned
-- table holds no rows)
SELECT regress.try('ALTER TRIGGER ingest_dedup ON ps RENAME TO aaa_dedup');
SELECT regress.try('CREATE OR REPLACE TRIGGER ingest_dedup BEFORE INSERT ON ps
                    FOR EACH ROW EXECUTE FUNCTION regress.ps_rekey()');
SELECT regress.ps_insert('r1', regress.h(0, 1)), regress.ps_insert('r1', regress.h(0, 1));
SELECT regress.ps_exact();
CREATE COLLATION regress_c2 FROM "C";
CREATE TABLE ps_ra (LIKE ps INCLUDING DEFAULTS) PARTITION BY RANGE ("timestamp");
ALTER TABLE ps_ra ALTER COLUMN external_customer_id TYPE text COLLATE regress_c2;
SELECT ingest.manage_table('ps_ra');
SELECT regress.try('ALTER TYPE ps_ra RENAME ATTRIBUTE code TO code_old');
SELECT regress.try('DROP COLLATION regress_c2 CASCADE');
SELECT regress.try(format('CREATE UNLOGGED TABLE ps_u PARTITION OF ps FOR VALUES FROM (%L) TO (%L)',
                          regress.h(-2, 0), regress.h(-1, 0)));
SELECT regress.try(format('ALTER TABLE %s SET UNLOGGED',
                          (SELECT partition FROM ingest.partitions WHERE event_table = 'ps'::regclass
                            ORDER BY day DESC LIMIT 1)));
SELECT regress.ps_exact();

-- Taking out the oldest partition by hand retires its day, whose rollup
-- hours then stay: the hours its changes marked stale are folded first.
-- They were passed over for good, outside the retained hours: a deleted
-- event stayed billed, an update's old value too.  Under REPEATABLE READ,
-- where no fold runs, it is refused until they are folded.
SELECT ingest.create_event_table('od', premake => 0) IS NOT NULL AS made;
SELECT count(*) AS made FROM ingest.create_partitions('od', regress.today() - 3, regress.today() - 1);
INSERT INTO od (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
VALUES ('00000000-0000-0000-0000-0000000000aa', 't1', 'c1', 'api', regress.h(-3, 12), 5),
       ('00000000-0000-0000-0000-0000000000aa', 't2', 'c1', 'api', regress.h(-3, 12), 7),
       ('00000000-0000-0000-0000-0000000000aa', 't3', 'c1', 'api', regress.h(-2, 12), 1),
       ('00000000-0000-0000-0000-0000000000aa', 't4', 'c1', 'api', regress.h(-1, 12), 1);
SELECT ingest.fold_rollups('od') >= 0 AS folded;
CREATE FUNCTION regress.od_oldest() RETURNS text LANGUAGE sql AS $$
    SELECT partition FROM ingest.partitions WHERE event_table = 'od'::regclass AND state = 'attached'
     ORDER BY day LIMIT 1 $$;
CREATE FUNCTION regress.od_usage(d int) RETURNS text LANGUAGE sql AS $$
    SELECT COALESCE(string_agg(events || ' ' || value_sum, ', '), 'none')
      FROM ingest.usage('od', '00000000-0000-0000-0000-0000000000aa', regress.h(d, 0), regress.h(d + 1, 0)) $$;
DELETE FROM od WHERE transaction_id = 't2';
SELECT regress.try(format('ALTER TABLE od DETACH PARTITION %s', regress.od_oldest()));
SELECT ingest.fold_rollups('od') >= 0 AS folded, regress.od_usage(-3) AS day_3;
BEGIN;
UPDATE od SET value = 50 WHERE transaction_id = 't3';
SELECT regress.try(format('DROP TABLE %s', regress.od_oldest()));
COMMIT;
SELECT ingest.fold_rollups('od') >= 0 AS folded, regress.od_usage(-2) AS day_2;
BEGIN ISOLATION LEVEL REPEATABLE READ;
DELETE FROM od WHERE transaction_id = 't4';
SELECT regress.try(format('DROP TABLE %s', regress.od_oldest())) AS refused;
ROLLBACK;
SELECT regress.od_usage(-1) AS day_1;
-- a later partition's hours stay retained: taking it out with changes not
-- folded is no refusal, nor a fold under its lock
SELECT count(*) AS made FROM ingest.create_partitions('od', regress.today() + 1, regress.today() + 1);
INSERT INTO od (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
VALUES ('00000000-0000-0000-0000-0000000000aa', 't6', 'c1', 'api', regress.h(1, 1), 3);
SELECT ingest.fold_rollups('od') >= 0 AS folded;
BEGIN ISOLATION LEVEL REPEATABLE READ;
DELETE FROM od WHERE transaction_id = 't6';
SELECT regress.try(format('DROP TABLE %s', (SELECT partition FROM ingest.partitions WHERE event_table = 'od'::regclass
                                              AND state = 'attached' ORDER BY day DESC LIMIT 1)));
COMMIT;
SELECT ingest.fold_rollups('od') >= 0 AS folded, regress.od_usage(1) AS day1;
-- the two oldest in one statement: the second one's marks were passed over
INSERT INTO od (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
VALUES ('00000000-0000-0000-0000-0000000000aa', 't5', 'c1', 'api', regress.h(0, 1), 3);
SELECT ingest.fold_rollups('od') >= 0 AS folded;
DELETE FROM od WHERE transaction_id = 't5';
SELECT regress.try(format('DROP TABLE %s, %s', regress.od_oldest(),
                          (SELECT partition FROM ingest.partitions WHERE event_table = 'od'::regclass
                              AND state = 'attached' ORDER BY day OFFSET 1 LIMIT 1)));
SELECT ingest.fold_rollups('od') >= 0 AS folded, regress.od_usage(0) AS day_0;
DROP TABLE od;
DO $$ BEGIN
    EXECUTE (SELECT 'DROP TABLE ' || string_agg(c.oid::regclass::text, ', ')
               FROM pg_class c WHERE c.relname LIKE 'od\_p%' AND c.relkind = 'r');
END $$;
DROP FUNCTION regress.od_oldest(), regress.od_usage(int);
-- DROP SCHEMA ... CASCADE of a schema that holds a partition whose keys are
-- stored out of line: its rows are read before their TOAST index goes (it
-- failed with XX000, "no valid index found for toast relation"); the
-- TOAST index REINDEX CONCURRENTLY drops is no partition leaving
SELECT ingest.create_event_table('tk', premake => 0) IS NOT NULL AS made;
CREATE SCHEMA tk_s;
SELECT regress.try(format('CREATE TABLE tk_s.tk_old PARTITION OF tk FOR VALUES FROM (%L) TO (%L)',
                          regress.h(-5, 0), regress.h(-4, 0)));
INSERT INTO tk (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
SELECT '00000000-0000-0000-0000-0000000000aa', (SELECT string_agg(md5(i::text || n), '') FROM generate_series(1, 62) i),
       'c1', 'api', regress.h(-5, 1), n
  FROM generate_series(1, 3) n;
SELECT pg_relation_size(reltoastrelid) > 0 AS stored_out_of_line FROM pg_class WHERE oid = 'tk_s.tk_old'::regclass;
REINDEX TABLE CONCURRENTLY tk_s.tk_old;
SELECT count(*) AS keys FROM ingest_side.tk_keys;
SET client_min_messages = warning;
SELECT regress.try('DROP SCHEMA tk_s CASCADE');
RESET client_min_messages;
SELECT count(*) AS keys FROM ingest_side.tk_keys;
DROP TABLE tk;
CREATE SCHEMA ps_app;
CREATE TABLE ps_app.ev (LIKE ps INCLUDING DEFAULTS) PARTITION BY RANGE ("timestamp");
-- made after the table, it is dropped first, and its column with it
CREATE COLLATION ps_app.bytes FROM "C";
ALTER TABLE ps_app.ev ALTER COLUMN transaction_id TYPE text COLLATE ps_app.bytes;
SELECT ingest.manage_table('ps_app.ev');
SET client_min_messages = warning;
SELECT regress.try('DROP SCHEMA ps_app CASCADE');
RESET client_min_messages;
DO $$ BEGIN
    -- PostgreSQL 18 has no unlogged partitioned tables
    IF current_setting('server_version_num')::int < 180000 THEN
        CREATE UNLOGGED TABLE ps_ul (LIKE ps INCLUDING DEFAULTS) PARTITION BY RANGE ("timestamp");
    ELSE
        CREATE TABLE ps_ul (LIKE ps INCLUDING DEFAULTS) PARTITION BY RANGE ("timestamp");
    END IF;
END $$;
SELECT regress.try($$SELECT ingest.manage_table('ps_ul')$$);
DROP TABLE ps_ul;
DROP TABLE ps_ra;
-- a partition's TOAST index dropped by name (a superuser's, with
-- allow_system_table_mods) is no partition leaving: its keys stay (they
-- were forgotten)
SELECT ingest.create_event_table('ps_ti', premake => 0);
INSERT INTO ps_ti (organization_id, transaction_id, external_customer_id, code, timestamp, value)
VALUES ('00000000-0000-0000-0000-000000000001', 't1', 'c', 'api', now(), 1);
SET allow_system_table_mods = on;
DO $$ BEGIN
    EXECUTE (SELECT format('DROP INDEX pg_toast.%I', i.relname)
               FROM pg_inherits h JOIN pg_class p ON p.oid = h.inhrelid
               JOIN pg_index x ON x.indrelid = p.reltoastrelid JOIN pg_class i ON i.oid = x.indexrelid
              WHERE h.inhparent = 'ps_ti'::regclass);
END $$;
RESET allow_system_table_mods;
SELECT (SELECT count(*) FROM ps_ti) AS events, (SELECT count(*) FROM ingest_side.ps_ti_keys) AS keys;
DROP TABLE ps_ti;
DROP COLLATION regress_c2;
DROP TABLE ps, ps_y, ps_z;
DROP SERVER ps_nowhere;
DROP FOREIGN DATA WRAPPER ps_dummy;

SELECT * FROM regress.invariants();
