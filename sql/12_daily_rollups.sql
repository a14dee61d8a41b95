-- Daily rollup rows: the fold keeps them the merge of each UTC day's hourly
-- rows; ingest.usage reads whole days from them, and equals raw
-- aggregation over any range, granularity and time zone.
SELECT ingest.create_event_table('dr', premake => 1);
SELECT regress.backdate('dr', -3), regress.backdate('dr', -2), regress.backdate('dr', -1);
-- events every 97 minutes and some seconds over four days, two
-- organizations, two codes, four customers, some values and decimals null
CREATE FUNCTION regress.dr_events(first int, last int, off_min int DEFAULT 0) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(format('00000000-0000-0000-0000-00000000000%s,d%s,c%s,%s,%s,"{""k"": ""k%s""}",%s,%s',
                             CASE WHEN n % 3 = 0 THEN 2 ELSE 1 END, n, n % 4, (ARRAY['api', 'tokens'])[n % 2 + 1],
                             regress.h(-3, 0) + make_interval(mins => (n * 97 + off_min) % (4 * 24 * 60), secs => n % 60),
                             n % 3, CASE WHEN n % 17 <> 0 THEN (n % 13)::text END,
                             CASE WHEN n % 5 = 0 THEN (n % 7) / 4.0 END), E'\n')
      FROM generate_series(first, last) n $$;
-- ingest.usage of organization 1 against raw aggregation: rows answered,
-- and rows that differ either way (any measure, bucket or dimensions)
CREATE FUNCTION regress.dr_diff(from_ts timestamptz, to_ts timestamptz, gran text DEFAULT 'total',
                                tz text DEFAULT 'UTC', rollup text DEFAULT 'default')
RETURNS text LANGUAGE sql AS $$
    WITH u AS (
        SELECT code, external_customer_id, dimensions, bucket, events, value_sum, decimal_sum,
               value_min, value_max, latest_value, latest_at
          FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001', from_ts, to_ts,
                            rollup => rollup, granularity => gran, time_zone => tz)
    ), r AS (
        SELECT e.code, e.external_customer_id,
               ingest_side.dims_of(e.properties, (SELECT rc.dimensions FROM ingest.rollup_config rc
                                                   WHERE rc.event_table = 'dr'::regclass AND rc.name = rollup)),
               CASE gran WHEN 'total' THEN from_ts WHEN 'hour' THEN date_trunc('hour', e."timestamp", 'UTC')
                         ELSE date_trunc('day', e."timestamp", tz) END,
               count(*), sum(e.value::numeric), sum(e.decimal_value), min(e.value), max(e.value),
               (array_agg(e.value ORDER BY e."timestamp" DESC, e.transaction_id COLLATE "C" DESC))[1],
               max(e."timestamp")
          FROM dr e
         WHERE e.organization_id = '00000000-0000-0000-0000-000000000001'
           AND e."timestamp" >= from_ts AND e."timestamp" < to_ts
         GROUP BY 1, 2, 3, 4
    )
    SELECT format('rows %s, differences %s', (SELECT count(*) FROM u),
                  (SELECT count(*) FROM ((TABLE u EXCEPT ALL TABLE r) UNION ALL (TABLE r EXCEPT ALL TABLE u)) x)) $$;
-- ingest.usage of organization 1 over the four days with code and customer
-- filters against the unfiltered answer filtered: rows answered, and rows
-- that differ either way
CREATE FUNCTION regress.dr_filters(gran text)
RETURNS TABLE(code text, customer text, rows bigint, differences bigint) LANGUAGE sql AS $$
    SELECT f.code, f.customer, (SELECT count(*) FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                        regress.h(-3, 0), regress.h(1, 0), f.code, f.customer,
                                        granularity => gran)),
           (SELECT count(*) FROM ((SELECT * FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                           regress.h(-3, 0), regress.h(1, 0), f.code, f.customer,
                                           granularity => gran)
                                   EXCEPT ALL
                                   SELECT * FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                           regress.h(-3, 0), regress.h(1, 0), granularity => gran) u
                                    WHERE u.code = COALESCE(f.code, u.code)
                                      AND u.external_customer_id = COALESCE(f.customer, u.external_customer_id))
                                  UNION ALL
                                  (SELECT * FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                           regress.h(-3, 0), regress.h(1, 0), granularity => gran) u
                                    WHERE u.code = COALESCE(f.code, u.code)
                                      AND u.external_customer_id = COALESCE(f.customer, u.external_customer_id)
                                   EXCEPT ALL
                                   SELECT * FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                           regress.h(-3, 0), regress.h(1, 0), f.code, f.customer,
                                           granularity => gran))) x)
      FROM (VALUES ('api', NULL), (NULL, 'c1'), ('tokens', 'c3')) f(code, customer) $$;
-- every kind of range, for one state of the table
CREATE FUNCTION regress.dr_ranges(rollup text DEFAULT 'default')
RETURNS TABLE(range text, granularity text, time_zone text, result text) LANGUAGE sql AS $$
    SELECT r.name, g.gran, z.tz, regress.dr_diff(r.lo, r.hi, g.gran, z.tz, rollup)
      FROM (VALUES ('whole days', regress.h(-3, 0), regress.h(1, 0)),
                   ('partial days', regress.h(-3, 5), regress.h(0, 7)),
                   ('partial hours', regress.h(-3, 5, 30), regress.h(0, 7, 15)),
                   ('one partial day', regress.h(-2, 1, 10), regress.h(-2, 22, 50)),
                   ('midnight to midnight and a bit', regress.h(-2, 0), regress.h(-1, 0, 1))) r(name, lo, hi),
           (VALUES ('total'), ('day'), ('hour')) g(gran),
           (VALUES ('UTC'), ('Etc/UTC'), ('Asia/Tokyo'), ('America/New_York')) z(tz)
     WHERE g.gran = 'day' OR z.tz = 'UTC'
     ORDER BY 1, 2, 3 $$;

SELECT loaded FROM ingest.load('dr', regress.dr_events(1, 1500));
-- days of a zone whose offset is not a whole number of hours are no union
-- of hours: refused, where they were answered approximately
SELECT regress.try($$SELECT * FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001', regress.h(-3, 0),
                                                regress.h(1, 0), granularity => 'day', time_zone => 'Asia/Kolkata')$$);
SELECT count(*) > 0 AS answered FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001', regress.h(-3, 0),
                                                  regress.h(1, 0), granularity => 'hour', time_zone => 'Asia/Kolkata');
-- also before 1970 (the days looked at began there: a range before it was
-- answered, the hour across local midnight in the wrong day)
SELECT regress.try($$SELECT * FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001', '1960-01-01 00:00+00',
                                                '1960-01-03 00:00+00', granularity => 'day', time_zone => 'Asia/Kolkata')$$);
-- and more than ten years ahead, where the days are no longer looked at
-- one by one: an hour answered across local midnight is refused (it was
-- answered in the day before)
SELECT ingest.create_event_table('fz', premake => 0) IS NOT NULL AS made;
SELECT count(*) AS made FROM ingest.create_partitions('fz', regress.today() + 3700, regress.today() + 3702);
INSERT INTO fz (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
VALUES ('00000000-0000-0000-0000-000000000001', 't1', 'c', 'api', regress.h(3701, 18, 45), 5);
SELECT ingest.fold_rollups('fz') >= 0 AS folded;
SELECT regress.try($$SELECT * FROM ingest.usage('fz', '00000000-0000-0000-0000-000000000001', regress.h(3700, 0),
                                                regress.h(3703, 0), granularity => 'day', time_zone => 'Asia/Kolkata')$$);
SELECT count(*) AS days FROM ingest.usage('fz', '00000000-0000-0000-0000-000000000001', regress.h(3700, 0),
                                          regress.h(3703, 0), granularity => 'day', time_zone => 'Asia/Tokyo');
DROP TABLE fz;
-- and one such day's total, from local midnight to local midnight, is the
-- raw answer (its partial hours read from raw events)
SELECT regress.dr_diff((regress.today() - 1)::timestamp AT TIME ZONE 'Asia/Kolkata',
                       regress.today()::timestamp AT TIME ZONE 'Asia/Kolkata', 'total', 'Asia/Kolkata')
       AS kolkata_day_total;
-- deltas not folded yet
SELECT count(*) AS daily_rows FROM ingest_side.dr_daily;
SELECT * FROM regress.dr_ranges();
SELECT ingest.fold_rollups('dr') > 0 AS folded;
SELECT count(*) > 0 AS daily_rows, count(*) FILTER (WHERE day <> date_trunc('day', day, 'UTC')) AS off_midnight
  FROM ingest_side.dr_daily;
-- the fold writes rows in their key's order, so that one organization's
-- rows of a day lie together: rows whose key sorts before the row before
-- them on disk
SELECT (SELECT count(*) FROM (SELECT k, lag(k) OVER (ORDER BY ctid) AS prev
                                FROM (SELECT ctid, row(rollup, organization_id, day, code,
                                                       external_customer_id, dims) AS k
                                        FROM ingest_side.dr_daily) y) y
         WHERE prev > k) AS daily_out_of_order,
       (SELECT count(*) FROM (SELECT k, lag(k) OVER (ORDER BY ctid) AS prev
                                FROM (SELECT ctid, row(organization_id, hour, rollup, code,
                                                       external_customer_id, dims) AS k
                                        FROM ingest_side.dr_rollup) h) h
         WHERE prev > k) AS hourly_out_of_order,
       (SELECT count(*) FROM ingest_side.dr_daily) > 10 AS enough_rows;
SELECT * FROM regress.daily_mismatch('dr');
SELECT * FROM regress.dr_ranges();
-- in total, whole days with no deltas are their daily rows merged per key
-- alone, filtered in the same statement
SELECT * FROM regress.dr_filters('total');
-- the path each kind of range takes (its calls once first, quietly:
-- PostgreSQL 18 reports at DEBUG1 a catalog cache it enlarges, which a
-- first call could do)
SELECT (SELECT count(*) FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                          regress.h(-3, 0), regress.h(1, 0)))
     + (SELECT count(*) FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                          regress.h(-3, 5), regress.h(0, 7)))
     + (SELECT count(*) FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                          regress.h(-3, 0), regress.h(1, 0), granularity => 'day'))
     + (SELECT count(*) FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                          regress.h(-3, 0), regress.h(-2, 0), granularity => 'hour')) > 0 AS warmed;
SET client_min_messages = debug1;
SELECT count(*) AS whole_days FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                                regress.h(-3, 0), regress.h(1, 0));
SELECT count(*) AS partial_days FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                                  regress.h(-3, 5), regress.h(0, 7));
SELECT count(*) AS per_day FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                             regress.h(-3, 0), regress.h(1, 0), granularity => 'day');
SELECT count(*) AS per_hour FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                              regress.h(-3, 0), regress.h(-2, 0), granularity => 'hour');
RESET client_min_messages;
-- deltas of the other organization only: organization 1's whole days are
-- still answered by its daily rows alone, and exactly
SELECT loaded FROM ingest.load('dr', regress.dr_events(3003, 3003));
SELECT count(*) AS deltas,
       count(*) FILTER (WHERE organization_id = '00000000-0000-0000-0000-000000000001') AS of_organization_1
  FROM ingest_side.dr_deltas;
SELECT * FROM regress.dr_ranges() WHERE granularity = 'total';
SET client_min_messages = debug1;
SELECT count(*) AS whole_days FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                                regress.h(-3, 0), regress.h(1, 0));
RESET client_min_messages;
SELECT ingest.fold_rollups('dr') > 0 AS folded;
-- more events in the same days: folded deltas merge into the daily rows
SELECT loaded FROM ingest.load('dr', regress.dr_events(1501, 2500, 13));
SELECT * FROM regress.dr_diff(regress.h(-3, 0), regress.h(1, 0));
SELECT ingest.fold_rollups('dr') > 0 AS folded;
SELECT * FROM regress.daily_mismatch('dr');
SELECT * FROM regress.dr_ranges();
-- events of two days, not folded: per UTC day, those days' rows merge
-- their deltas and the other days' daily rows are answered as they stand,
-- with the code and customer filters, all in (bucket, code, customer) order
SELECT loaded FROM ingest.load('dr', regress.dr_events(9001, 9006, 600));
SELECT count(DISTINCT date_trunc('day', hour, 'UTC')) AS days_with_deltas,
       count(DISTINCT organization_id) AS organizations FROM ingest_side.dr_deltas;
SELECT * FROM regress.dr_ranges() WHERE granularity = 'day' AND time_zone IN ('UTC', 'Etc/UTC');
SELECT * FROM regress.dr_filters('day');
-- in total, the days with deltas merge them with the others' daily rows
SELECT * FROM regress.dr_filters('total');
SET client_min_messages = debug1;
SELECT count(*) AS whole_days FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                                regress.h(-3, 0), regress.h(1, 0));
SELECT count(*) AS per_day FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                             regress.h(-3, 0), regress.h(1, 0), granularity => 'day');
RESET client_min_messages;
SELECT count(*) AS rows,
       count(*) FILTER (WHERE (bucket, code, external_customer_id) <= (pb, pc, pe)) AS out_of_order
  FROM (SELECT u.bucket, u.code, u.external_customer_id, lag(u.bucket) OVER w AS pb,
               lag(u.code) OVER w AS pc, lag(u.external_customer_id) OVER w AS pe
          FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001', regress.h(-3, 0), regress.h(1, 0),
                            granularity => 'day') WITH ORDINALITY u
        WINDOW w AS (ORDER BY u.ordinality)) x;
SELECT ingest.fold_rollups('dr') > 0 AS folded;

-- Whole days come from the daily rows: a damaged daily row shows in totals
-- and UTC days over it, not in hours, nor in days of another zone.
WITH damaged AS (UPDATE ingest_side.dr_daily SET events = events + 1000
                  WHERE organization_id = '00000000-0000-0000-0000-000000000001' AND day = regress.h(-2, 0)
                    AND code = 'tokens' AND external_customer_id = 'c1' RETURNING 1)
SELECT count(*) AS damaged FROM damaged;
SELECT regress.dr_diff(regress.h(-3, 0), regress.h(1, 0)) AS total,
       regress.dr_diff(regress.h(-3, 0), regress.h(1, 0), 'day') AS day,
       regress.dr_diff(regress.h(-3, 0), regress.h(1, 0), 'hour') AS hour,
       regress.dr_diff(regress.h(-3, 0), regress.h(1, 0), 'day', 'Asia/Tokyo') AS tokyo,
       regress.dr_diff(regress.h(-2, 1), regress.h(-1, 0)) AS partial_day;
-- a stale hour in that day, not folded yet: the day is read from its hours
DELETE FROM dr WHERE transaction_id = (SELECT min(transaction_id) FROM dr
                                        WHERE organization_id = '00000000-0000-0000-0000-000000000001'
                                          AND "timestamp" >= regress.h(-2, 10) AND "timestamp" < regress.h(-2, 11));
SELECT organization_id IS NOT NULL AS one_organization, hi - lo AS span FROM ingest_side.dr_stale;
SELECT * FROM regress.dr_ranges();
SET client_min_messages = debug1;
SELECT count(*) AS whole_days FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                                regress.h(-3, 0), regress.h(1, 0));
RESET client_min_messages;
-- the fold recomputes the day from its hours: the damage is gone
SELECT ingest.fold_rollups('dr') >= 0 AS folded;
SELECT count(*) AS stale_marks FROM ingest_side.dr_stale;
SELECT * FROM regress.daily_mismatch('dr');
SELECT * FROM regress.dr_ranges();

-- UPDATE marks hours of another organization: organization 1's days stay
-- daily, exact; then every organization's hours (rollup_rebuild)
UPDATE dr SET value = value + 1
 WHERE organization_id = '00000000-0000-0000-0000-000000000002' AND "timestamp" < regress.h(-1, 3);
SELECT count(*) > 1 AS marks, bool_and(organization_id IS NOT NULL) AS one_organization FROM ingest_side.dr_stale;
SELECT * FROM regress.dr_diff(regress.h(-3, 0), regress.h(1, 0));
SELECT ingest.fold_rollups('dr') >= 0 AS folded;
SELECT * FROM regress.daily_mismatch('dr');
SELECT ingest.rollup_rebuild('dr', regress.h(-2, 5), regress.h(-1, 2)) > 0 AS rebuilt;
SELECT * FROM regress.daily_mismatch('dr');
SELECT * FROM regress.dr_ranges();

-- TRUNCATE of a day's partition: every organization's hours of the day
TRUNCATE dr_old1;
SELECT organization_id IS NULL AS every_organization, lo = regress.h(-1, 0) AS from_midnight FROM ingest_side.dr_stale;
SELECT * FROM regress.dr_ranges();
SELECT ingest.fold_rollups('dr') >= 0 AS folded;
SELECT count(*) AS day_rows_left FROM ingest_side.dr_daily WHERE day = regress.h(-1, 0);
SELECT * FROM regress.daily_mismatch('dr');
SELECT * FROM regress.dr_ranges();

-- A rollup being built is read from raw events; once built, its daily rows
-- are the merge of its hourly rows.
SELECT ingest.create_rollup('dr', 'by_k', ARRAY['k']);
SELECT loaded FROM ingest.load('dr', regress.dr_events(2501, 2600, 29));
SELECT * FROM regress.dr_ranges('by_k') WHERE granularity <> 'hour';
SELECT ingest.fold_rollups('dr') > 0 AS folded;
CALL regress.fold_until_built('dr', 'by_k');
SELECT building_xid IS NULL AS built FROM ingest.rollup_config WHERE event_table = 'dr'::regclass AND name = 'by_k';
SELECT count(*) > 0 AS by_k_days FROM ingest_side.dr_daily WHERE rollup = 'by_k';
SELECT * FROM regress.daily_mismatch('dr');
SELECT * FROM regress.dr_ranges('by_k');
SELECT ingest.drop_rollup('dr', 'by_k');
SELECT count(*) AS by_k_days FROM ingest_side.dr_daily WHERE rollup = 'by_k';

-- Rollup retention: hours past it go once their raw events are retired
-- (they went while the raw events were there, and usage() answered those
-- hours with nothing); days wholly past it go, the day it cuts keeps the
-- merge of its remaining hours; usage() refuses a range that starts
-- before the hours kept.
SELECT count(*) > 0 AS old_days FROM ingest_side.dr_daily WHERE day < regress.h(-2, 0);
SELECT ingest.configure('dr', rollup_retention => '2 days');
SELECT ingest.fold_rollups('dr') >= 0;
SELECT count(*) > 0 AS old_days FROM ingest_side.dr_daily WHERE day < regress.h(-2, 0);
SELECT * FROM regress.dr_ranges() WHERE granularity = 'total';
ALTER TABLE dr DETACH PARTITION dr_old3;
ALTER TABLE dr DETACH PARTITION dr_old2;
SELECT ingest.fold_rollups('dr') >= 0;
SELECT count(*) AS old_days FROM ingest_side.dr_daily WHERE day < regress.h(-2, 0);
SELECT * FROM regress.daily_mismatch('dr');
SELECT left(regress.try($$SELECT * FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                                                     regress.h(-3, 0), regress.h(0, 0))$$), 40) AS refused;
-- a day made again before retired days past rollup retention (a hole)
-- does not bring their hours back: usage over them is refused, not
-- answered with nothing
SELECT ingest.create_event_table('dh', premake => 0);
SELECT count(*) FROM ingest.create_partitions('dh', regress.today() - 8, regress.today());
INSERT INTO dh (organization_id, transaction_id, external_customer_id, code, timestamp, value)
SELECT '00000000-0000-0000-0000-000000000001', 'h' || i, 'c', 'api', regress.h(-8, 0) + i * interval '1 hour', 1
  FROM generate_series(0, 8 * 24 - 1) i;
SELECT ingest.fold_rollups('dh') > 0 AS folded;
SELECT ingest.configure('dh', retention => '3 days', rollup_retention => '1 day');
SELECT count(*) AS retired FROM ingest.run_maintenance('dh') WHERE action IN ('detach', 'drop');
SELECT ingest.fold_rollups('dh') >= 0 AS folded;
SELECT ingest.configure('dh', retention => '30 days');
SELECT count(*) FROM ingest.create_partitions('dh', regress.today() - 7, regress.today() - 7);
SELECT ingest.fold_rollups('dh') >= 0 AS folded;
SELECT left(regress.try($$SELECT * FROM ingest.usage('dh', '00000000-0000-0000-0000-000000000001',
                                                     regress.h(-6, 0), regress.h(-5, 0))$$), 5) AS hole;
SELECT left(regress.try($$SELECT * FROM ingest.usage('dh', '00000000-0000-0000-0000-000000000001',
                                                     regress.h(-7, 0), regress.h(-1, 0))$$), 5) AS across_hole;
SELECT events FROM ingest.usage('dh', '00000000-0000-0000-0000-000000000001', regress.h(-7, 0), regress.h(-6, 0));
SELECT events FROM ingest.usage('dh', '00000000-0000-0000-0000-000000000001', regress.h(-2, 0), regress.h(-1, 0));
DROP TABLE dh;
-- days that begin on a half hour: from the first retained day's start,
-- the hours past rollup retention are partial (answered from raw events),
-- then whole and kept: answered, not refused
SELECT ingest.create_event_table('dk', premake => 0, time_zone => 'Asia/Kolkata') IS NOT NULL AS made;
-- (6 or 7 days: today in Kolkata is tomorrow in UTC from 18:30 UTC)
SELECT count(*) >= 6 AS made FROM ingest.create_partitions('dk', regress.today() - 6, regress.today());
INSERT INTO dk (organization_id, transaction_id, external_customer_id, code, timestamp, value)
SELECT '00000000-0000-0000-0000-000000000001', 'k' || i, 'c', 'api',
       (SELECT min(lower_bound) FROM ingest.partitions WHERE event_table = 'dk'::regclass) + i * interval '20 minutes', 1
  FROM generate_series(0, 6 * 72 - 1) i;
SELECT ingest.fold_rollups('dk') > 0 AS folded;
SELECT ingest.configure('dk', retention => '3 days', rollup_retention => '1 day');
SELECT count(*) > 0 AS retired FROM ingest.run_maintenance('dk') WHERE action IN ('detach', 'drop');
SELECT ingest.fold_rollups('dk') >= 0 AS folded;
SELECT extract(minute FROM lo) AS starts_at_minute,
       (SELECT sum(events) FROM ingest.usage('dk', '00000000-0000-0000-0000-000000000001', lo, regress.h(0, 0)))
     = (SELECT count(*) FROM dk WHERE timestamp >= lo AND timestamp < regress.h(0, 0)) AS answered_as_raw
  FROM (SELECT min(lower_bound) AS lo FROM ingest.partitions WHERE event_table = 'dk'::regclass AND state = 'attached') x;
DROP TABLE dk;
-- the days attached again, without rollup retention, their hours come back
SELECT ingest.configure('dr', rollup_retention => '0');
SELECT regress.try(format('ALTER TABLE dr ATTACH PARTITION dr_old3 FOR VALUES FROM (%L) TO (%L)',
                          regress.h(-3, 0), regress.h(-2, 0)));
SELECT regress.try(format('ALTER TABLE dr ATTACH PARTITION dr_old2 FOR VALUES FROM (%L) TO (%L)',
                          regress.h(-2, 0), regress.h(-1, 0)));
SELECT ingest.rollup_rebuild('dr', '-infinity', 'infinity') > 0 AS rebuilt;
SELECT count(*) > 0 AS old_days FROM ingest_side.dr_daily WHERE day < regress.h(-2, 0);
SELECT * FROM regress.daily_mismatch('dr');
SELECT * FROM regress.dr_ranges() WHERE granularity = 'total';

-- the daily table is a side table like the others: the extension owner's,
-- named in the configuration, gone with the table
SELECT rollup_days AS daily, pg_get_userbyid(c.relowner) = (SELECT pg_get_userbyid(extowner) FROM pg_extension
                                                             WHERE extname = 'ingest') AS extension_owned
  FROM ingest.table_config t JOIN pg_class c ON c.oid = t.rollup_days WHERE t.event_table = 'dr'::regclass;
SELECT ingest.create_event_table('dx');
SELECT rollup_days FROM ingest.table_config WHERE event_table = 'dx'::regclass;
DROP TABLE dx;
SELECT to_regclass('ingest_side.dx_daily') AS gone;

SELECT * FROM regress.invariants();

-- The merge's latest event (src/rollupmerge.c) is the one that an array_agg
-- ordered by (latest_at DESC, latest_tx COLLATE "C" DESC) picks, NULLs first:
-- on timestamp ties ('a' > 'B' in "C"), a NULL latest value, NULL instants
-- and ids, multibyte ids and prefixes; stored (short varlena headers).
CREATE TABLE regress.latest_rows AS
SELECT g, v, t, x FROM (VALUES (1, 1.0::float8, '2026-01-01'::timestamptz, 'a'), (1, 2.0, '2026-01-01', 'B'),
               (2, NULL, '2026-01-02', 'x'), (2, 5.0, '2026-01-01', 'y'),
               (3, 1.0, NULL, 'a'), (3, 2.0, '2026-01-03', 'b'),
               (4, 1.0, '2026-01-01', NULL), (4, 2.0, '2026-01-01', 'z'),
               (5, 1.0, '2026-01-01', 'é'), (5, 2.0, '2026-01-01', 'z'),
               (6, 3.0, '2026-01-01', 'ab'), (6, 4.0, '2026-01-01', 'a'),
               (7, 1.0, NULL, 'a'), (7, 2.0, NULL, 'b'), (7, 3.0, '2026-01-05', 'c'),
               (8, 1.0, '2026-01-01', 'only')) s(g, v, t, x);
-- (a view: planned when read, so under each setting below)
CREATE VIEW regress.latest_check AS
SELECT g, ingest_internal.latest_value(v, t, x) AS latest_value,
       ingest_internal.latest_tx(v, t, x) AS latest_tx,
       ingest_internal.latest_value(v, t, x) IS NOT DISTINCT FROM
           (array_agg(v ORDER BY t DESC, x COLLATE "C" DESC))[1] AS value_same,
       ingest_internal.latest_tx(v, t, x) IS NOT DISTINCT FROM
           (array_agg(x ORDER BY t DESC, x COLLATE "C" DESC))[1] AS tx_same
  FROM regress.latest_rows GROUP BY g;
SELECT * FROM regress.latest_check ORDER BY g;
SET enable_sort = off;
SELECT count(*) AS hashed_differ FROM regress.latest_check WHERE NOT (value_same AND tx_same);
RESET enable_sort;
SET enable_hashagg = off;
SELECT count(*) AS sorted_differ FROM regress.latest_check WHERE NOT (value_same AND tx_same);
RESET enable_hashagg;
-- no rows: NULL, as array_agg's
SELECT ingest_internal.latest_value(v, t, x) IS NULL AND ingest_internal.latest_tx(v, t, x) IS NULL AS none
  FROM regress.latest_rows WHERE false;
-- as a window aggregate whose frame grows row by row
SELECT count(*) AS window_differ FROM (
    SELECT ingest_internal.latest_tx(v, t, x) OVER w AS wtx,
           ingest_internal.latest_value(v, t, x) OVER w AS wv, row_number() OVER w AS n
      FROM regress.latest_rows
    WINDOW w AS (ORDER BY g, x NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) a,
    LATERAL (SELECT b.v, b.x
               FROM (SELECT q.*, row_number() OVER (ORDER BY g, x NULLS FIRST) AS n
                       FROM regress.latest_rows q) b
              WHERE b.n <= a.n
              ORDER BY b.t DESC, b.x COLLATE "C" DESC LIMIT 1) e
 WHERE a.wtx IS DISTINCT FROM e.x OR a.wv IS DISTINCT FROM e.v;
DROP TABLE regress.latest_rows CASCADE;

-- Daily buckets in a zone with a day longer than 25 hours
-- (Antarctica/Troll, 2024-10-27: +02 to +00 at 03:00): the look for days
-- on whole UTC hours never passed that day, and the call never ended.
SET statement_timeout = '60s';
SELECT count(*) >= 0 AS answered
  FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001', '2024-10-20', '2024-11-01',
                    granularity => 'day', time_zone => 'Antarctica/Troll');
RESET statement_timeout;

-- A TRUNCATE's mark has no end: a range with no end read every day up to
-- the end of time (and failed on "timestamp out of range").
TRUNCATE dr;
SET statement_timeout = '60s';
SELECT count(*) AS rows_left
  FROM ingest.usage('dr', '00000000-0000-0000-0000-000000000001',
                    date_trunc('day', now(), 'UTC') - interval '40 days', 'infinity');
RESET statement_timeout;
