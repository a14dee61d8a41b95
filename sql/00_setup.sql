-- Helpers shared by the regression tests, in schema regress.
CREATE SCHEMA regress;
-- Days are UTC; pg_regress runs sessions in PST8PDT.
CREATE FUNCTION regress.today() RETURNS date
    LANGUAGE sql AS $$ SELECT (now() AT TIME ZONE 'UTC')::date $$;
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
