-- ingest.load: formats, dedup, rejects, privileges and errors.
SELECT ingest.create_event_table('ld');
-- a payload of n csv rows for organization o, transaction ids <prefix>1..n, today
CREATE FUNCTION regress.csv(o int, prefix text, n int, code text DEFAULT 'api') RETURNS text
LANGUAGE sql AS $$
    SELECT string_agg(format('00000000-0000-0000-0000-%s,%s%s,cust%s,%s,%s,"{""k"": %s}",%s,%s',
                             lpad(o::text, 12, '0'), prefix, g, g % 3, code,
                             now(), g, g, g * 1.5), E'\n') || E'\n'
      FROM generate_series(1, n) g $$;

-- csv: first occurrence wins within the payload
SELECT * FROM ingest.load('ld', regress.csv(1, 'a', 5) || regress.csv(1, 'a', 2));
SELECT transaction_id, external_customer_id, code, properties, value, decimal_value
  FROM ld ORDER BY transaction_id;
-- against stored rows, the stored one wins; a different payload is a conflict
SELECT * FROM ingest.load('ld', regress.csv(1, 'a', 3, 'other') || regress.csv(1, 'b', 2));
SELECT code, count(*) FROM ld GROUP BY code ORDER BY code;
SELECT line_number, sqlstate, kind, message FROM ingest.rejects ORDER BY id;
-- a retry re-stamped into another day is still a duplicate
SELECT * FROM ingest.load('ld', '00000000-0000-0000-0000-000000000001,a1,cust1,api,'
                                 || (now() + interval '1 day') || ',{},1,1.5');
-- the same key in another organization is another event
SELECT * FROM ingest.load('ld', regress.csv(2, 'a', 1));

-- plain INSERT skips stored keys too, like ON CONFLICT DO NOTHING
INSERT INTO ld (organization_id, transaction_id, external_customer_id, code, "timestamp")
VALUES ('00000000-0000-0000-0000-000000000001', 'a1', 'x', 'x', now()),
       ('00000000-0000-0000-0000-000000000001', 'i1', 'x', 'x', now()),
       ('00000000-0000-0000-0000-000000000001', 'i1', 'x', 'x', now());
SELECT transaction_id, count(*) FROM ld WHERE transaction_id IN ('a1', 'i1') GROUP BY 1 ORDER BY 1;
-- and the loader sees keys stored by INSERT
SELECT * FROM ingest.load('ld', '00000000-0000-0000-0000-000000000001,i1,cust1,x,' || now() || ',{},,');

-- text format, a header, a column subset in another order (defaults fill the rest)
SELECT * FROM ingest.load('ld', E'code\ttransaction_id\torganization_id\ttimestamp\texternal_customer_id\n'
                                 || E'txt\tt1\t00000000-0000-0000-0000-000000000003\t' || now() || E'\tc\n'
                                 || E'txt\tt2\t00000000-0000-0000-0000-000000000003\t' || now() || E'\t\\N\n',
                          format => 'text', header => true,
                          columns => ARRAY['code', 'transaction_id', 'organization_id', 'timestamp', 'external_customer_id']);
SELECT transaction_id, properties, value, created_at IS NOT NULL AS has_created_at
  FROM ld WHERE code = 'txt';

-- jsonl: keys are column names; absent keys take defaults; properties nested
SELECT * FROM ingest.load('ld', format => 'jsonl', data =>
    '{"organization_id": "00000000-0000-0000-0000-000000000004", "transaction_id": "j1", "external_customer_id": "c", "code": "tokens", "timestamp": "' || now() || E'", "properties": {"model": "m1", "tier": [1, 2]}, "value": 12.5}\n'
 || E'\n'
 || '{"organization_id": "00000000-0000-0000-0000-000000000004", "transaction_id": "j2", "external_customer_id": "c", "code": "tokens", "timestamp": "' || now() || E'", "decimal_value": 0.1}\n'
 || E'[1, 2]\n'
 || E'{"organization_id": "nope"}\n');
SELECT transaction_id, properties, value, decimal_value FROM ld WHERE code = 'tokens' ORDER BY 1;

-- bytea carries the same formats
SELECT * FROM ingest.load('ld', convert_to(regress.csv(5, 'by', 2), 'UTF8'));

-- COPY binary, as bytea: a NULL in a NOT NULL column is still set aside
DO $$ BEGIN
    EXECUTE format($q$COPY (SELECT '00000000-0000-0000-0000-000000000013'::uuid, 'b' || g,
                                   CASE WHEN g = 2 THEN NULL ELSE 'c' END, 'api', now(), '{"b": 1}'::jsonb, g::float8, 0.5
                              FROM generate_series(1, 3) g) TO %L (FORMAT binary)$q$,
                   current_setting('data_directory') || '/ingest_load.bin');
END $$;
SELECT * FROM ingest.load('ld', pg_read_binary_file(current_setting('data_directory') || '/ingest_load.bin'),
                          format => 'binary');
SELECT * FROM ingest.load('ld', pg_read_binary_file(current_setting('data_directory') || '/ingest_load.bin'),
                          format => 'binary');
-- the format's name in any case, as COPY's options
SELECT * FROM ingest.load('ld', pg_read_binary_file(current_setting('data_directory') || '/ingest_load.bin'),
                          format => 'BINARY');
SELECT transaction_id, properties, value FROM ld WHERE organization_id = '00000000-0000-0000-0000-000000000013' ORDER BY 1;
SELECT regress.try($$SELECT * FROM ingest.load('ld', 'x', format => 'binary')$$);
SELECT regress.try($$SELECT * FROM ingest.load('ld', '\x0102'::bytea, format => 'binary')$$);

-- every reject class, with the other rows loaded
SET ingest.max_event_bytes = '2kB';
SELECT * FROM ingest.load('ld',
       '00000000-0000-0000-0000-000000000006,r1,c,ok,' || now() || E',{},1,\n'
    || '00000000-0000-0000-0000-000000000006,r3,c,bad_number,' || now() || E',{},abc,\n'
    || E'00000000-0000-0000-0000-000000000006,r4,,null_customer,' || now() || E',{},1,\n'
    || '00000000-0000-0000-0000-000000000006,r5,c,' || repeat('x', 3000) || ',' || now() || E',{},1,\n'
    || E'00000000-0000-0000-0000-000000000006,r6,c,too_old,2001-01-01,{},1,\n'
    || '00000000-0000-0000-0000-000000000006,r7,c,too_new,' || (now() + interval '30 days') || E',{},1,\n'
    || E'00000000-0000-0000-0000-000000000006,r8,c,short\n'
    || '00000000-0000-0000-0000-000000000006,r9,c,ok,' || now() || E',{},9,\n'
    || E'00000000-0000-0000-0000-000000000006,"r2,c,unterminated quote\n'
    || '00000000-0000-0000-0000-000000000006,r10,c,after_it,' || now() || E',{},9,\n');
RESET ingest.max_event_bytes;
SELECT transaction_id FROM ld WHERE organization_id = '00000000-0000-0000-0000-000000000006' ORDER BY 1;
SELECT line_number, sqlstate, regexp_replace(regexp_replace(left(message, 60), 'timestamp .*', 'timestamp ...'), 'row of [0-9]+ bytes', 'row of N bytes') AS message, left(raw, 40) AS raw
  FROM ingest.rejects WHERE raw LIKE '%-000000000006,%' ORDER BY line_number;
-- any other input COPY's reader stops at (a stray carriage return) fails
-- the call, as it fails COPY: the rest of the input was set aside as one
-- rejected row, empty, and its rows after it were lost
SELECT regress.try(format($$SELECT * FROM ingest.load('ld', %L)$$,
       E'00000000-0000-0000-0000-000000000016,cr1,c,k,' || now() || E',{},1,\n'
    || E'00000000-0000-0000-0000-000000000016,cr2,c\rx,k,' || now() || E',{},1,\n'
    || E'00000000-0000-0000-0000-000000000016,cr3,c,k,' || now() || E',{},1,\n'));
SELECT count(*) AS stored, (SELECT count(*) FROM ingest.rejects WHERE raw LIKE '%-000000000016,%') AS rejected
  FROM ld WHERE organization_id = '00000000-0000-0000-0000-000000000016';

-- on_error => 'abort': the first bad row fails the call, with its line
SELECT regress.try($$SELECT * FROM ingest.load('ld', E'00000000-0000-0000-0000-000000000007,x1,c,k,2026-01-01 00:00+00,{},1,\n'
                                                   || E'00000000-0000-0000-0000-000000000007,x2,c,k,not-a-date,{},1,\n', on_error => 'abort')$$);
SELECT ingest.configure('ld', on_error => 'abort');
SELECT regress.try($$SELECT * FROM ingest.load('ld', E'bad\n')$$);
SELECT * FROM ingest.load('ld', E'00000000-0000-0000-0000-000000000007,x3,c,k,not-a-date,{},1,\n', on_error => 'reject');
SELECT ingest.configure('ld', on_error => 'reject');
SELECT count(*) FROM ld WHERE organization_id = '00000000-0000-0000-0000-000000000007';

-- one call is atomic
BEGIN;
SELECT * FROM ingest.load('ld', regress.csv(8, 'z', 3));
ROLLBACK;
SELECT count(*) FROM ld WHERE organization_id = '00000000-0000-0000-0000-000000000008';
SELECT * FROM ingest.load('ld', regress.csv(8, 'z', 3));

-- the ledger holds one key per stored event
SELECT (SELECT count(*) FROM ld) = (SELECT count(*) FROM ingest_side.ld_keys) AS ledger_matches;

-- retiring a day forgets its keys: the day's events are set aside from then on
SELECT regress.backdate('ld', -5);
-- (hours, not days: the session's zone has DST; the partition is a UTC day)
INSERT INTO ld (organization_id, transaction_id, external_customer_id, code, "timestamp")
VALUES ('00000000-0000-0000-0000-000000000009', 'old1', 'c', 'k', now() - interval '120 hours');
SELECT count(*) FROM ingest_side.ld_keys WHERE transaction_id = 'old1';
SELECT ingest.configure('ld', retention => '2 days');
SELECT action, regress.rel(partition) FROM regress.lifecycle('ld');
SELECT count(*) FROM ingest_side.ld_keys WHERE transaction_id = 'old1';
SELECT * FROM ingest.load('ld', '00000000-0000-0000-0000-000000000009,old1,c,k,' || (now() - interval '120 hours') || ',{},,');

-- bad calls
SELECT regress.try($$SELECT * FROM ingest.load('no_such', 'x')$$);
CREATE TABLE unmanaged (LIKE ld);
SELECT regress.try($$SELECT * FROM ingest.load('unmanaged', 'x')$$);
SELECT regress.try($$SELECT * FROM ingest.load('ld', 'x', format => 'xml')$$);
SELECT regress.try($$SELECT * FROM ingest.load('ld', 'x', columns => ARRAY['code', 'nope'])$$);
SELECT regress.try($$SELECT * FROM ingest.load('ld', 'x', columns => ARRAY['code', 'code'])$$);
SELECT regress.try($$SELECT * FROM ingest.load('ld', 'x', columns => ARRAY[]::text[])$$);
SELECT regress.try($$SELECT * FROM ingest.load('ld', 'x', on_error => 'skip')$$);
SELECT regress.try($$SELECT * FROM ingest.load('ld', NULL::text)$$);
SELECT regress.try($$SELECT * FROM ingest.load('ld', 'x', format => 'jsonl', header => true)$$);
SELECT regress.try($$SELECT * FROM ingest.load('ld', '\xff'::bytea)$$);
SELECT regress.try($$SELECT ingest.configure('ld', on_error => 'ignore')$$);

-- a server-side file
DO $$ BEGIN
    EXECUTE format($q$COPY (SELECT '00000000-0000-0000-0000-000000000012', 'f' || g, 'c', 'api', now(), '{}',
                                   CASE WHEN g = 2 THEN 'bad' ELSE g::text END, NULL
                              FROM generate_series(1, 3) g) TO %L (FORMAT csv)$q$,
                   current_setting('data_directory') || '/ingest_load.csv');
END $$;
SELECT * FROM ingest.load_file('ld', current_setting('data_directory') || '/ingest_load.csv');
SELECT line_number, sqlstate, source LIKE 'file %/ingest_load.csv' AS from_file
  FROM ingest.rejects WHERE source LIKE 'file %';
SELECT transaction_id FROM ld WHERE organization_id = '00000000-0000-0000-0000-000000000012' ORDER BY 1;
SELECT regress.try($$SELECT * FROM ingest.load_file('ld', '/nonexistent/file.csv')$$);

-- privileges as for COPY FROM: INSERT on the table or on every named column
CREATE ROLE loader_role;
GRANT USAGE ON SCHEMA regress TO loader_role;
GRANT EXECUTE ON FUNCTION regress.csv(int, text, int, text) TO loader_role;
SET ROLE loader_role;
SELECT regress.try($$SELECT * FROM ingest.load('ld', regress.csv(10, 'p', 1))$$);
RESET ROLE;
GRANT INSERT (organization_id, transaction_id, external_customer_id, code, "timestamp") ON ld TO loader_role;
SET ROLE loader_role;
SELECT regress.try($$SELECT * FROM ingest.load('ld', regress.csv(10, 'p', 1))$$);
SELECT * FROM ingest.load('ld', '00000000-0000-0000-0000-000000000010,p1,c,k,' || now(),
                          columns => ARRAY['organization_id', 'transaction_id', 'external_customer_id', 'code', 'timestamp']);
-- the loader's rejects are visible to it, for the tables it can read: none here
SELECT count(*) FROM ingest.rejects;
-- server files need pg_read_server_files
SELECT regress.try($$SELECT * FROM ingest.load_file('ld', '/etc/hostname')$$);
RESET ROLE;
GRANT INSERT ON ld TO loader_role;
SET ROLE loader_role;
SELECT * FROM ingest.load('ld', regress.csv(10, 'p', 2));
-- plain INSERT by a non-superuser deduplicates too
INSERT INTO ld (organization_id, transaction_id, external_customer_id, code, "timestamp")
VALUES ('00000000-0000-0000-0000-000000000010', 'p1', 'c', 'k', now()),
       ('00000000-0000-0000-0000-000000000010', 'p9', 'c', 'k', now());
RESET ROLE;
SELECT transaction_id, count(*) FROM ld WHERE organization_id = '00000000-0000-0000-0000-000000000010'
 GROUP BY 1 ORDER BY 1;
-- row-level security is refused, as by COPY FROM
ALTER TABLE ld ENABLE ROW LEVEL SECURITY;
SET ROLE loader_role;
SELECT regress.try($$SELECT * FROM ingest.load('ld', regress.csv(11, 'q', 1))$$);
RESET ROLE;
ALTER TABLE ld DISABLE ROW LEVEL SECURITY;

-- An adopted table may leave the key columns nullable: a row without a key
-- is set aside (it crashed the server before), by every write path.
CREATE TABLE nullkey (organization_id uuid, transaction_id text, external_customer_id text NOT NULL,
                      code text NOT NULL, "timestamp" timestamptz NOT NULL,
                      properties jsonb NOT NULL DEFAULT '{}', value double precision,
                      decimal_value numeric, created_at timestamptz NOT NULL DEFAULT now())
  PARTITION BY RANGE ("timestamp");
SELECT ingest.manage_table('nullkey');
SELECT count(*) > 0 AS made FROM ingest.run_maintenance('nullkey');
CREATE TABLE nullkey_2099 PARTITION OF nullkey FOR VALUES FROM ('2099-01-01 00:00+00') TO ('2099-01-02 00:00+00');
SELECT * FROM ingest.load('nullkey', format(E',k1,c,api,%s,{},1,\n00000000-0000-0000-0000-000000000001,,c,api,%s,{},1,\n00000000-0000-0000-0000-000000000001,k2,c,api,%s,{},1,\n',
                                            now(), now(), now()));
COPY nullkey (organization_id, transaction_id, external_customer_id, code, "timestamp") FROM STDIN (FORMAT csv);
,k3,c,api,2099-01-01
00000000-0000-0000-0000-000000000001,k4,c,api,2099-01-01
\.
SELECT line_number, sqlstate, message FROM ingest.rejects
 WHERE event_table = 'nullkey'::regclass AND sqlstate = '23502' ORDER BY id;
SELECT regress.try($$INSERT INTO nullkey (organization_id, transaction_id, external_customer_id, code, "timestamp")
                     VALUES (NULL, 'k5', 'c', 'api', now())$$);
SELECT regress.try($$UPDATE nullkey SET organization_id = NULL WHERE transaction_id = 'k2'$$);
SELECT regress.try($$UPDATE nullkey SET transaction_id = NULL WHERE transaction_id = 'k4'$$);
SELECT regress.try($$MERGE INTO nullkey t USING (SELECT NULL::uuid AS o) s ON false
                     WHEN NOT MATCHED THEN INSERT (organization_id, transaction_id, external_customer_id, code, "timestamp")
                                           VALUES (s.o, 'k6', 'c', 'api', now())$$);
SELECT transaction_id, organization_id IS NOT NULL AS has_org FROM nullkey ORDER BY 1;
DROP TABLE nullkey;
-- Nor may the columns it rolls up and routes by be null: a load of such a
-- row crashed the server, and an UPDATE to one left the fold failing for
-- good; each is set aside (the loader, COPY) or refused (INSERT, UPDATE)
-- with 23502, or for a null "timestamp" with 23514 (no partition takes it:
-- a default partition is refused).
CREATE TABLE nullroll (organization_id uuid NOT NULL, transaction_id text NOT NULL, external_customer_id text,
                       code text, "timestamp" timestamptz,
                       properties jsonb NOT NULL DEFAULT '{}', value double precision,
                       decimal_value numeric, created_at timestamptz NOT NULL DEFAULT now())
  PARTITION BY RANGE ("timestamp");
SELECT ingest.manage_table('nullroll');
SELECT count(*) > 0 AS made FROM ingest.run_maintenance('nullroll');
SELECT * FROM ingest.load('nullroll', format(E'00000000-0000-0000-0000-000000000001,r1,c,,%s,{},1,\n00000000-0000-0000-0000-000000000001,r2,,api,%s,{},1,\n00000000-0000-0000-0000-000000000001,r3,c,api,,{},1,\n00000000-0000-0000-0000-000000000001,r4,c,api,%s,{},1,\n',
                                             now(), now(), now()));
COPY nullroll (organization_id, transaction_id, external_customer_id, code, "timestamp") FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-000000000001,r5,c,,2099-01-01
\.
SELECT line_number, sqlstate, message FROM ingest.rejects
 WHERE event_table = 'nullroll'::regclass ORDER BY id;
SELECT regress.try($$INSERT INTO nullroll (organization_id, transaction_id, external_customer_id, code, "timestamp")
                     VALUES ('00000000-0000-0000-0000-000000000001', 'r7', 'c', NULL, now())$$);
SELECT regress.try($$INSERT INTO nullroll (organization_id, transaction_id, external_customer_id, code, "timestamp")
                     VALUES ('00000000-0000-0000-0000-000000000001', 'r8', 'c', 'api', NULL)$$);
SELECT regress.try($$UPDATE nullroll SET code = NULL WHERE transaction_id = 'r4'$$);
SELECT regress.try($$UPDATE nullroll SET external_customer_id = NULL WHERE transaction_id = 'r4'$$);
SELECT regress.try($$UPDATE nullroll SET "timestamp" = NULL WHERE transaction_id = 'r4'$$);
SELECT ingest.fold_rollups('nullroll') >= 0 AS folded;
SELECT transaction_id FROM nullroll ORDER BY 1;
DROP TABLE nullroll;

-- What COPY checks, the loader checks: a DEFERRABLE unique constraint,
-- which COPY checks at the end of the statement (the loader wrote both
-- rows), is left to COPY, and ingest.load refuses the table (0A000); a NOT
-- NULL of a partition alone (the loader stored the NULL); a NOT NULL
-- generated column, which the loader checked before computing it (every
-- row was set aside).
SELECT ingest.create_event_table('cx');
ALTER TABLE cx ALTER COLUMN "timestamp" SET DEFAULT now();
ALTER TABLE cx ADD CONSTRAINT cx_u UNIQUE (external_customer_id, code, "timestamp") DEFERRABLE;
SELECT regress.try(format($$SELECT * FROM ingest.load('cx', %L)$$,
       format(E'00000000-0000-0000-0000-000000000001,d1,c,api,%s,{},1,\n', now())));
\set VERBOSITY sqlstate
COPY cx (organization_id, transaction_id, external_customer_id, code) FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-000000000001,d2,c,api
00000000-0000-0000-0000-000000000001,d3,c,api
\.
\set VERBOSITY default
SELECT count(*) AS stored FROM cx;
ALTER TABLE cx DROP CONSTRAINT cx_u;
-- so is a DEFERRABLE exclusion constraint (of a partition: PostgreSQL 15
-- has none on a partitioned table), which COPY checks at the end of the
-- statement too
SELECT regress.alter_today_partition('cx', 'ADD CONSTRAINT cx_x EXCLUDE USING btree (external_customer_id WITH =) DEFERRABLE');
SELECT regress.try(format($$SELECT * FROM ingest.load('cx', %L)$$,
       format(E'00000000-0000-0000-0000-000000000001,x1,c,api,%s,{},1,\n', now())));
\set VERBOSITY sqlstate
COPY cx (organization_id, transaction_id, external_customer_id, code) FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-000000000001,x2,c,api
00000000-0000-0000-0000-000000000001,x3,c,api
\.
\set VERBOSITY default
SELECT count(*) AS stored FROM cx;
SELECT regress.alter_today_partition('cx', 'DROP CONSTRAINT cx_x');
SELECT regress.alter_today_partition('cx', 'ALTER COLUMN value SET NOT NULL');
SELECT left(regress.try(format($$SELECT * FROM ingest.load('cx', %L)$$,
       format(E'00000000-0000-0000-0000-000000000001,n1,c,api,%s,{},,\n', now()))), 5) AS sqlstate;
SELECT count(*) AS stored_null FROM cx WHERE value IS NULL;
ALTER TABLE cx ADD COLUMN twice double precision GENERATED ALWAYS AS (coalesce(value, 0) * 2) STORED NOT NULL;
SELECT * FROM ingest.load('cx', format(E'00000000-0000-0000-0000-000000000001,g1,c,api,%s,{},4,\n', now()));
SELECT transaction_id, twice FROM cx WHERE transaction_id = 'g1';
-- tableoid in a generation expression and a CHECK is the partition's, as
-- COPY gives it (the loader gave 0: stored, or a false 23514)
ALTER TABLE cx ADD COLUMN part oid GENERATED ALWAYS AS (tableoid) STORED,
               ADD CONSTRAINT cx_oid CHECK (tableoid <> 0);
SELECT * FROM ingest.load('cx', format(E'00000000-0000-0000-0000-000000000001,t1,c,api,%s,{},4,\n', now()));
SELECT transaction_id, part = tableoid AS own_partition FROM cx WHERE transaction_id = 't1';
DROP TABLE cx;

SELECT * FROM regress.invariants();
