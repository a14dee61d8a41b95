-- Helpers shared by the regression tests, in schema regress.
CREATE SCHEMA regress;
GRANT USAGE ON SCHEMA regress TO PUBLIC;
-- Days are UTC; pg_regress runs sessions in PST8PDT.
CREATE FUNCTION regress.today() RETURNS date
    LANGUAGE sql AS $$ SELECT (now() AT TIME ZONE 'UTC')::date $$;
-- An instant of day today + days (UTC), as a timestamp.
CREATE FUNCTION regress.h(days int, hours int, minutes int DEFAULT 0) RETURNS timestamptz
LANGUAGE sql AS $$ SELECT (regress.today() + days)::timestamp AT TIME ZONE 'UTC'
                          + make_interval(hours => hours, mins => minutes) $$;
-- Run a statement; return "ok" or its SQLSTATE, message and detail.
CREATE FUNCTION regress.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE detail text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || SQLERRM || COALESCE(' DETAIL: ' || NULLIF(detail, ''), '');
END $$;
-- Attach a partition for UTC day today + off, named <table>_old<-off>.
CREATE FUNCTION regress.backdate(tbl regclass, off int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE d date := regress.today() + off;
BEGIN
    EXECUTE format('CREATE TABLE %I (LIKE %s)', tbl::text || '_old' || -off, tbl);
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', tbl,
                   tbl::text || '_old' || -off, d::timestamp AT TIME ZONE 'UTC',
                   (d + 1)::timestamp AT TIME ZONE 'UTC');
END $$;
-- ALTER TABLE the partition of tbl that holds now, with "action".
CREATE FUNCTION regress.alter_today_partition(tbl regclass, action text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ', (SELECT b.partition FROM ingest_internal.bounds b
                                        WHERE b.relid = tbl AND b.lower_bound <= now() AND now() < b.upper_bound))
            || action;
END $$;
-- A partition (or partition index) name with its date shown as an offset
-- from today.
CREATE FUNCTION regress.rel(part text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN part ~ '_p\d{8}'
                THEN regexp_replace(part, '_p\d{8}', '_p[today'
                     || to_char(substring(part from '_p(\d{8})')::date - regress.today(), 'SGFM0') || ']')
                ELSE part END $$;
-- Maintenance of the partition lifecycle alone: index phases and closing
-- days have their own test (06_indexes).
CREATE FUNCTION regress.lifecycle(tbl regclass, dry boolean DEFAULT false)
RETURNS TABLE(event_table regclass, action text, partition text, detail text)
LANGUAGE sql AS $$
    SELECT * FROM ingest.run_maintenance(tbl, dry_run => dry) m
     WHERE m.action IN ('create', 'detach', 'finalize', 'drop', 'warning') $$;
-- The rule of ingest, asserted with pgTAP after every test file that
-- writes: for every managed table, the key ledger holds exactly the keys of
-- the stored events, every rollup equals the raw events, and the daily rows
-- are the merge of the hourly rows of their day, before and after a fold.
CREATE EXTENSION pgtap;
-- The daily rows that are not the merge of their day's hourly rows, and the
-- merges that have no equal daily row.
CREATE FUNCTION regress.daily_mismatch(tbl regclass) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE c ingest.table_config;
BEGIN
    SELECT * INTO c FROM ingest.table_config t WHERE t.event_table = tbl;
    RETURN QUERY EXECUTE format($q$
        WITH m AS (SELECT s.rollup, s.organization_id, date_trunc('day', s.hour, 'UTC') AS day, s.code,
                          s.external_customer_id, s.dims, %s
                     FROM %s s GROUP BY 1, 2, 3, 4, 5, 6)
        (SELECT 'missing ' || m::text FROM m EXCEPT ALL SELECT 'missing ' || y::text FROM %s y)
        UNION ALL
        (SELECT 'extra ' || y::text FROM %s y EXCEPT ALL SELECT 'extra ' || m::text FROM m)$q$,
        ingest_internal.rollup_merge_sql(), c.rollup_hours, c.rollup_days, c.rollup_days);
END $$;
CREATE FUNCTION regress.invariants() RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    c record;
    r record;
    n bigint;
    pass text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_class WHERE relname = '__tcache__' AND relpersistence = 't') THEN
        PERFORM no_plan();
    END IF;
    FOREACH pass IN ARRAY ARRAY['as written', 'after a fold'] LOOP
        IF pass = 'after a fold' THEN
            PERFORM ingest.fold_rollups();
        END IF;
        FOR c IN SELECT * FROM ingest.table_config ORDER BY event_table::text LOOP
            EXECUTE format('SELECT count(*) FROM (SELECT organization_id, transaction_id COLLATE "C" FROM %s '
                           'EXCEPT ALL SELECT organization_id, transaction_id FROM %s) x',
                           c.event_table, c.ledger) INTO n;
            RETURN NEXT is(n, 0::bigint, format('%s %s: every event has its key in the ledger', c.event_table, pass));
            EXECUTE format('SELECT count(*) FROM (SELECT organization_id, transaction_id FROM %s '
                           'EXCEPT ALL SELECT organization_id, transaction_id COLLATE "C" FROM %s) x',
                           c.ledger, c.event_table) INTO n;
            RETURN NEXT is(n, 0::bigint, format('%s %s: every key in the ledger has its event', c.event_table, pass));
            FOR r IN SELECT rc.name FROM ingest.rollup_config rc WHERE rc.event_table = c.event_table ORDER BY 1 LOOP
                RETURN NEXT is_empty(format('SELECT * FROM ingest.rollup_verify(%L, ''-infinity'', ''infinity'', %L)',
                                            c.event_table, r.name),
                                     format('%s %s: rollup %s equals the raw events', c.event_table, pass, r.name));
            END LOOP;
            RETURN NEXT is_empty(format('SELECT * FROM regress.daily_mismatch(%L)', c.event_table),
                                 format('%s %s: the daily rows merge the hourly rows', c.event_table, pass));
        END LOOP;
    END LOOP;
END $$;
-- Fold until a rollup being built is built: its build waits for every
-- transaction with an xid from before it (an autoanalyze's, on a busy
-- machine); at most 100 folds, a tenth of a second apart.
CREATE PROCEDURE regress.fold_until_built(tbl regclass, rollup text) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..100 LOOP
        PERFORM ingest.fold_rollups(tbl);
        COMMIT;
        EXIT WHEN (SELECT rc.building_xid IS NULL FROM ingest.rollup_config rc
                    WHERE rc.event_table = tbl AND rc.name = rollup);
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
