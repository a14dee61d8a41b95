-- ingest.create_event_table, the config table and the views.
-- Dates are shown relative to regress.today() (UTC).

SELECT ingest.create_event_table('events');

-- the billing-event schema
SELECT attname, format_type(atttypid, atttypmod), attnotnull, attidentity,
       pg_get_expr(d.adbin, d.adrelid) AS default
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE attrelid = 'events'::regclass AND attnum > 0 ORDER BY attnum;
SELECT pg_get_partkeydef('events'::regclass);

-- today plus three days, each one UTC day
SELECT partition::text = 'events_p' || to_char(day, 'YYYYMMDD') AS named_by_day,
       day - regress.today() AS day_offset,
       lower_bound = (day::timestamp AT TIME ZONE 'UTC') AS starts_at_midnight,
       upper_bound - lower_bound AS length, state
  FROM ingest.partitions WHERE event_table = 'events'::regclass ORDER BY day;

SELECT event_table, time_zone, retention, premake, retention_action, managed_by
  FROM ingest.table_config;
SELECT event_table, partitions, newest_day - oldest_day AS span_days,
       last_maintenance, last_error, consecutive_failures
  FROM ingest.event_tables;

-- rows land in the day partitions; a day without a partition is PostgreSQL's error
INSERT INTO events (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
VALUES ('00000000-0000-0000-0000-000000000001', 't1', 'c1', 'api_call', now(), 1);
SELECT tableoid::regclass::text = 'events_p' || to_char(regress.today(), 'YYYYMMDD') AS in_today,
       properties, id > 0 AS has_id FROM events;
SELECT regress.try($$INSERT INTO events (organization_id, transaction_id, external_customer_id, code, "timestamp")
                    VALUES (gen_random_uuid(), 't2', 'c1', 'x', now() - interval '30 days')$$) ~ '^23514: no partition of relation "events" found for row' AS no_partition;

-- other time zones, names that need quoting
CREATE SCHEMA "My ""Schema""";
SELECT ingest.create_event_table('"My ""Schema"""."Ev ents"', retention => '30 days',
                                 premake => 1, time_zone => 'Asia/Kolkata');
SELECT event_table, time_zone, retention, premake FROM ingest.table_config ORDER BY event_table::text;
SELECT partition::text LIKE '"My ""Schema"""."Ev ents_p%"' AS quoted,
       lower_bound = (day::timestamp AT TIME ZONE 'Asia/Kolkata') AS kolkata_midnight,
       upper_bound - lower_bound AS length
  FROM ingest.partitions WHERE event_table = '"My ""Schema"""."Ev ents"'::regclass ORDER BY day;

-- partition owner follows the table's owner
CREATE ROLE ingest_owner;
GRANT CREATE ON SCHEMA public TO ingest_owner;
SELECT ingest.create_event_table('owned');
ALTER TABLE owned OWNER TO ingest_owner;
SELECT ingest.configure('owned', premake => 4);
SELECT action, partition::text LIKE 'public.owned_p%' FROM ingest.run_maintenance('owned');
SELECT DISTINCT pg_get_userbyid(c.relowner)
  FROM ingest.partitions p JOIN pg_class c ON c.oid = p.partition
 WHERE p.event_table = 'owned'::regclass AND p.day = regress.today() + 4;

-- bad input
SELECT regress.try($$SELECT ingest.create_event_table('events')$$);
SELECT regress.try($$SELECT ingest.create_event_table('e2', premake => -1)$$);
SELECT regress.try($$SELECT ingest.create_event_table('e2', premake => 400)$$);
SELECT regress.try($$SELECT ingest.create_event_table('e2', retention => '23 hours')$$);
SELECT regress.try($$SELECT ingest.create_event_table('e2', time_zone => 'Mars/Olympus')$$);
SELECT regress.try($$SELECT ingest.create_event_table('no_such_schema.e2')$$);
SELECT regress.try($$SELECT ingest.create_event_table('a.b.c.d')$$);
SELECT regress.try($$SELECT ingest.create_event_table(NULL)$$);
-- nothing half-made
SELECT count(*) FROM pg_class WHERE relname LIKE 'e2%';
SELECT count(*) FROM ingest.table_config WHERE event_table::text LIKE 'e2%';

SELECT * FROM regress.invariants();
