
-- ingest 0.2.0 to 0.3.0, part 3 of 3: each managed table gets its side
-- tables, filled from the extension-wide ones, and its new triggers.
DO $migrate$
DECLARE
    t     regclass;
    cfg   ingest.table_config;
    n     bigint;
    total bigint;
BEGIN
    -- Every table must have the shape 0.3.0 follows before any is read:
    -- the update reads them as the superuser running it, and a column an
    -- owner retyped (0.2.0 let them) would run the owner's cast as that
    -- superuser; a foreign partition, its wrapper.
    FOR t IN SELECT c.event_table FROM ingest.table_config c ORDER BY 1 LOOP
        PERFORM ingest_internal.check_shape(t);
        PERFORM ingest_internal.refuse_untrackable(p.relid)
           FROM pg_catalog.pg_partition_tree(t) p;
    END LOOP;
    FOR t IN SELECT c.event_table FROM ingest.table_config c ORDER BY 1 LOOP
        -- the 0.2.0 usage view makes way for the new one
        EXECUTE pg_catalog.format('DROP VIEW IF EXISTS %I.%I',
            (SELECT n.nspname FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t),
            pg_catalog.left((SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = t), 49)
                || '_usage_hourly');
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS ingest_dedup ON %s', t);
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS ingest_rollup ON %s', t);
        PERFORM ingest_internal.start_side_tables(t);
        SELECT * INTO cfg FROM ingest.table_config c WHERE c.event_table = t;
        -- made by this script, they would be members of the extension,
        -- which pg_dump leaves out: they are the table's
        EXECUTE pg_catalog.format('ALTER EXTENSION ingest DROP TABLE %s', cfg.ledger);
        EXECUTE pg_catalog.format('ALTER EXTENSION ingest DROP TABLE %s', cfg.rollup_hours);
        EXECUTE pg_catalog.format('ALTER EXTENSION ingest DROP TABLE %s', cfg.rollup_deltas);
        EXECUTE pg_catalog.format('ALTER EXTENSION ingest DROP TABLE %s', cfg.rollup_stale);
        EXECUTE pg_catalog.format('ALTER EXTENSION ingest DROP TABLE %s', cfg.rollup_days);
        EXECUTE pg_catalog.format('ALTER EXTENSION ingest DROP VIEW %s', cfg.usage_view);
        -- 0.2.0 did not follow DELETE, UPDATE or TRUNCATE: the ledger is
        -- made anew from the events, and every retained hour is recomputed
        -- by the first fold (older rollup hours are kept as they are)
        EXECUTE pg_catalog.format(
            'INSERT INTO %s SELECT e.organization_id, e.transaction_id, ingest_side.payload_hash(e) '
            '  FROM %s e ORDER BY 1, 2 ON CONFLICT DO NOTHING', cfg.ledger, t);
        GET DIAGNOSTICS n = ROW_COUNT;
        EXECUTE pg_catalog.format('SELECT count(*) FROM %s', t) INTO total;
        IF n < total THEN
            -- a ledger a key short of its events would forget the key
            -- when one of them is deleted, while the other still has it
            RAISE EXCEPTION 'table "%" stores % events whose key another event has', t, total - n
                USING ERRCODE = 'unique_violation',
                      DETAIL = 'Earlier versions stored a second event under a key after an UPDATE of its transaction_id; 0.3.0 keeps one event per key.',
                      HINT = 'Delete the duplicates, keeping one event per key, then run ALTER EXTENSION ingest UPDATE again.';
        END IF;
        EXECUTE pg_catalog.format(
            'INSERT INTO %s SELECT r.rollup, r.organization_id, r.hour, r.code, r.external_customer_id, '
            '       r.dims, r.events, r.value_sum, r.decimal_sum, r.value_min, r.value_max, '
            '       r.latest_value, r.latest_at, r.latest_tx '
            '  FROM ingest_internal.rollup_hours r WHERE r.relid = $1', cfg.rollup_hours)
          USING t;
        EXECUTE pg_catalog.format(
            'INSERT INTO %s SELECT r.rollup, r.organization_id, r.hour, r.code, r.external_customer_id, '
            '       r.dims, r.events, r.value_sum, r.decimal_sum, r.value_min, r.value_max, '
            '       r.latest_value, r.latest_at, r.latest_tx '
            '  FROM ingest_internal.rollup_deltas r WHERE r.relid = $1', cfg.rollup_deltas)
          USING t;
        -- the daily rows of every day, from its hours
        PERFORM ingest_internal.refresh_days(t, ARRAY[NULL]::pg_catalog.uuid[],
                                             ARRAY['-infinity']::pg_catalog.timestamptz[],
                                             ARRAY['infinity']::pg_catalog.timestamptz[]);
        -- rollup hours between two partitions were retired days' in 0.2.0
        -- (which did not follow a partition dropped by hand): a hole of
        -- retired days, kept as it is (raw_ranges)
        EXECUTE pg_catalog.format($q$
            UPDATE ingest.table_config c
               SET retired = COALESCE((
                   SELECT pg_catalog.range_agg(g.r) FROM pg_catalog.unnest(
                       (SELECT pg_catalog.tstzmultirange(pg_catalog.tstzrange(min(b.lower_bound), max(b.upper_bound)))
                               OPERATOR(pg_catalog.-)
                               pg_catalog.range_agg(pg_catalog.tstzrange(b.lower_bound, b.upper_bound))
                          FROM ingest_internal.bounds b
                         WHERE b.relid = $1 AND NOT b.is_default AND NOT b.detach_pending)) g(r)
                    WHERE EXISTS (SELECT FROM %s h WHERE h.hour OPERATOR(pg_catalog.<@) g.r)), '{}')
             WHERE c.event_table = $1$q$, cfg.rollup_hours)
          USING t;
        PERFORM ingest_internal.mark_stale(t, NULL, lower(ingest_internal.raw_hours(t)), 'infinity');
        PERFORM ingest_internal.install_triggers(t);
    END LOOP;
END
$migrate$;

-- 0.3.0 gives managed tables a replica identity that new partitions
-- inherit (FULL where the table had none): ACCESS EXCLUSIVE on each table
-- and its partitions for the rest of the update's transaction.
SELECT ingest_internal.start_replica_identity(c.event_table)
  FROM ingest.table_config c ORDER BY c.event_table;

DROP TABLE ingest_internal.event_keys;
DROP TABLE ingest_internal.rollup_deltas;
DROP TABLE ingest_internal.rollup_hours;
DROP FUNCTION ingest_internal.rollup_after_insert();
DROP FUNCTION ingest_internal.payload_hash(record);
DROP FUNCTION ingest_internal.dims_of(jsonb, text[]);
DROP FUNCTION ingest_internal.dedup_row();
