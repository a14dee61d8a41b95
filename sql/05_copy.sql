-- COPY ... FROM STDIN into a managed table goes through the loader.
SELECT ingest.create_event_table('cp');

-- timestamps come from a column default (today); the payload names the
-- other columns
ALTER TABLE cp ALTER COLUMN "timestamp" SET DEFAULT now();
COPY cp (organization_id, transaction_id, external_customer_id, code, value) FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-000000000001,c1,cust,api,1
00000000-0000-0000-0000-000000000001,c2,cust,api,2
00000000-0000-0000-0000-000000000001,c1,cust,api,1
00000000-0000-0000-0000-000000000001,c3,cust,api,not-a-number
\.
SELECT transaction_id, value FROM cp ORDER BY 1;
SELECT line_number, sqlstate, source, kind FROM ingest.rejects WHERE event_table = 'cp'::regclass ORDER BY id;
-- a replay stores nothing twice; text format with its own NULL marker
COPY cp (organization_id, transaction_id, external_customer_id, code, value) FROM STDIN;
00000000-0000-0000-0000-000000000001	c2	cust	api	2
00000000-0000-0000-0000-000000000001	c4	cust	api	\N
\.
SELECT transaction_id, value FROM cp ORDER BY 1;
-- with the hook off, plain COPY still deduplicates, through the row trigger
SET ingest.copy_hook = off;
COPY cp (organization_id, transaction_id, external_customer_id, code, value) FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-000000000001,c4,cust,api,4
00000000-0000-0000-0000-000000000001,c5,cust,api,5
\.
RESET ingest.copy_hook;
SELECT transaction_id, count(*) FROM cp GROUP BY 1 ORDER BY 1;
-- forms the loader does not take run as plain COPY: a WHERE clause
COPY cp (organization_id, transaction_id, external_customer_id, code, value) FROM STDIN (FORMAT csv) WHERE value > 6;
00000000-0000-0000-0000-000000000001,c6,cust,api,6
00000000-0000-0000-0000-000000000001,c7,cust,api,7
00000000-0000-0000-0000-000000000001,c1,cust,api,8
\.
SELECT transaction_id, count(*) FROM cp GROUP BY 1 ORDER BY 1;
-- COPY into other tables is untouched
CREATE TABLE plain_t (a int);
COPY plain_t FROM STDIN;
1
\.
SELECT * FROM plain_t;
-- on_error abort fails the COPY at the bad line
SELECT ingest.configure('cp', on_error => 'abort');
COPY cp (organization_id, transaction_id, external_customer_id, code, value) FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-000000000001,c8,cust,api,1
00000000-0000-0000-0000-000000000001,c9,cust,api,x
\.
SELECT count(*) FROM cp WHERE transaction_id IN ('c8', 'c9');
-- FORCE_NOT_NULL and FORCE_NULL act as in plain COPY, which such a COPY
-- runs as (the loader ignored them: an empty customer was NULL and set
-- aside, an empty quoted value was set aside); DEFAULT too (PostgreSQL 16,
-- test/t/011_copy_on_error.pl)
SELECT ingest.configure('cp', on_error => 'reject');
COPY cp (organization_id, transaction_id, external_customer_id, code, value) FROM STDIN (FORMAT csv, FORCE_NOT_NULL (external_customer_id), FORCE_NULL (value));
00000000-0000-0000-0000-000000000001,f1,,api,""
\.
SELECT transaction_id, external_customer_id = '' AS empty_customer, value IS NULL AS null_value
  FROM cp WHERE transaction_id = 'f1';

SELECT * FROM regress.invariants();
