-- ingest.load_file streams its file in batches and chunks: every case
-- loads, sets aside and numbers exactly as ingest.load of the same bytes,
-- across batches (1,000 rows or 8 MB) and read chunks (64 kB); a file over
-- 1 GB is read, not refused; a named pipe, which has no size, is read to
-- its end.
SELECT ingest.create_event_table('lf');

-- Write bytes to a server-side file (in the data directory).
CREATE FUNCTION regress.lf_write(name text, content bytea) RETURNS void LANGUAGE plpgsql AS $$
DECLARE lo oid := lo_from_bytea(0, content);
BEGIN
    PERFORM lo_export(lo, current_setting('data_directory') || '/' || name);
    PERFORM lo_unlink(lo);
END $$;
-- A file's rows, rejects and counts through ingest.load_file, then (the
-- table emptied) through ingest.load of the file's bytes: whether both give
-- the same events and the same rejects (line, text, SQLSTATE, message).
CREATE FUNCTION regress.lf_compare(name text, fmt text DEFAULT 'csv', hdr boolean DEFAULT false,
                                   cols text[] DEFAULT NULL)
RETURNS TABLE(loaded bigint, duplicates bigint, rejected bigint, conflicts bigint,
              reject_lines bigint[], same_counts boolean, same_events boolean, same_rejects boolean)
LANGUAGE plpgsql AS $$
DECLARE
    path text := current_setting('data_directory') || '/' || name;
    f record;
    p record;
    f_events text;
    f_rejects text;
    f_lines bigint[];
BEGIN
    TRUNCATE lf;
    DELETE FROM ingest.rejects;
    SELECT * INTO f FROM ingest.load_file('lf', path, fmt, hdr, cols);
    SELECT md5(string_agg(e::text, E'\n' ORDER BY e::text)) INTO f_events
      FROM (SELECT organization_id, transaction_id, external_customer_id, code, "timestamp",
                   properties, value, decimal_value FROM lf) e;
    SELECT md5(string_agg(r::text, E'\n' ORDER BY r::text)), array_agg(r.line_number ORDER BY r.line_number)
      INTO f_rejects, f_lines
      FROM (SELECT line_number, raw, sqlstate, message, kind FROM ingest.rejects
             WHERE source = 'file ' || path) r;
    TRUNCATE lf;
    DELETE FROM ingest.rejects;
    IF fmt = 'binary' THEN
        SELECT * INTO p FROM ingest.load('lf', pg_read_binary_file(path), fmt, hdr, cols);
    ELSE
        SELECT * INTO p FROM ingest.load('lf', pg_read_file(path), fmt, hdr, cols);
    END IF;
    RETURN QUERY SELECT f.loaded, f.duplicates, f.rejected, f.conflicts, f_lines,
        (f.loaded, f.duplicates, f.rejected, f.conflicts) = (p.loaded, p.duplicates, p.rejected, p.conflicts),
        f_events IS NOT DISTINCT FROM
            (SELECT md5(string_agg(e::text, E'\n' ORDER BY e::text))
               FROM (SELECT organization_id, transaction_id, external_customer_id, code, "timestamp",
                            properties, value, decimal_value FROM lf) e),
        f_rejects IS NOT DISTINCT FROM
            (SELECT md5(string_agg(r::text, E'\n' ORDER BY r::text))
               FROM (SELECT line_number, raw, sqlstate, message, kind FROM ingest.rejects
                      WHERE source = 'ingest.load') r);
END $$;
-- Run a statement; its SQLSTATE, message and the first line of its context.
CREATE FUNCTION regress.try_context(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE ctx text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS ctx = PG_EXCEPTION_CONTEXT;
    RETURN SQLSTATE || ': ' || SQLERRM || ' CONTEXT: ' || split_part(ctx, E'\n', 1);
END $$;

-- csv with a header, over 8 MB in 70 batches: values that do not convert,
-- a day without partition, a quoted field over two lines, in-file
-- duplicates and conflicts in later batches than their first occurrence
SELECT regress.lf_write('big.csv', convert_to(
    'organization_id,transaction_id,external_customer_id,code,timestamp,properties,value,decimal_value' || E'\n' ||
    string_agg(format('00000000-0000-0000-0000-000000000001,%s,%s,api,%s,"{""pad"": ""%s""}",%s,%s',
                      't' || CASE WHEN g > 69990 THEN g - 60000 ELSE g END,
                      CASE WHEN g = 50000 THEN E'"two\nlines"' ELSE 'c' || g % 7 END,
                      CASE WHEN g = 45000 THEN '2000-01-01 00:00:00+00' ELSE date_trunc('hour', now())::text END,
                      repeat('x', 30),
                      CASE WHEN g % 20011 = 0 THEN 'bad' WHEN g > 69995 THEN (g - 60000)::text ELSE g::text END,
                      g * 0.5), E'\n' ORDER BY g) || E'\n', 'UTF8'))
  FROM generate_series(1, 70000) g;
SELECT (pg_stat_file(current_setting('data_directory') || '/big.csv')).size > 8 * 1024 * 1024 AS over_8mb;
SELECT * FROM regress.lf_compare('big.csv', hdr => true);

-- text, a column subset, rows of 10 kB: batches cut at 8 MB, not 1,000 rows
SELECT regress.lf_write('wide.txt', convert_to(
    string_agg(format(E'%s\t00000000-0000-0000-0000-000000000002\tw%s\t%s\tc%s\t%s',
                      date_trunc('hour', now()), g,
                      CASE WHEN g IN (700, 1500) THEN '\N' ELSE 'api' END, g % 3,
                      '{"pad": "' || repeat('y', 10000) || '"}'), E'\n' ORDER BY g) || E'\n', 'UTF8'))
  FROM generate_series(1, 1600) g;
SELECT * FROM regress.lf_compare('wide.txt', 'text',
    cols => ARRAY['timestamp', 'organization_id', 'transaction_id', 'code', 'external_customer_id', 'properties']);

-- JSON lines cut across 64 kB chunks: lines of every length, multibyte
-- characters (2, 3 and 4 bytes) falling on the chunk edges, CRLF, blank
-- lines, a line of 200 kB, lines that are not JSON objects, no final newline
SELECT regress.lf_write('lines.jsonl', convert_to(
    string_agg(CASE WHEN g % 97 = 0 THEN ''
                    WHEN g = 300 THEN 'not json'
                    WHEN g = 301 THEN '[1, 2]'
                    ELSE jsonb_build_object('organization_id', '00000000-0000-0000-0000-000000000003',
                                            'transaction_id', 'j' || g, 'external_customer_id', chr(233) || chr(8364) || chr(119070) || g,
                                            'code', 'api', 'timestamp', date_trunc('hour', now()),
                                            'properties', jsonb_build_object('s', repeat(chr(233) || chr(8364) || chr(119070), CASE WHEN g = 400 THEN 20000 ELSE g % 500 END)),
                                            'value', g)::text
               END || CASE WHEN g % 5 = 0 THEN E'\r' ELSE '' END,
               E'\n' ORDER BY g), 'UTF8'))
  FROM generate_series(1, 3000) g;
SELECT (pg_stat_file(current_setting('data_directory') || '/lines.jsonl')).size > 16 * 65536 AS many_chunks;
SELECT * FROM regress.lf_compare('lines.jsonl', 'jsonl');

-- binary over several batches: a NULL in a NOT NULL column, a day without
-- partition, a duplicate
COPY (SELECT '00000000-0000-0000-0000-000000000004'::uuid, 'b' || (g % 2999), 'c', CASE WHEN g = 1234 THEN NULL ELSE 'api' END,
             CASE WHEN g = 2345 THEN '2000-01-01'::timestamptz ELSE date_trunc('hour', now()) END,
             '{}'::jsonb, g::float8, NULL::numeric
        FROM generate_series(1, 3000) g) TO PROGRAM 'cat > binary.bin' (FORMAT binary);
SELECT * FROM regress.lf_compare('binary.bin', 'binary');

-- rows over ingest.max_event_bytes are set aside with their lines
SET ingest.max_event_bytes = 2000;
SELECT regress.lf_write('sizes.csv', convert_to(
    string_agg(format('00000000-0000-0000-0000-000000000005,s%s,c,api,%s,"{""pad"": ""%s""}",1,',
                      g, date_trunc('hour', now()), repeat('z', CASE WHEN g % 400 = 0 THEN 3000 ELSE 10 END)),
               E'\n' ORDER BY g), 'UTF8'))
  FROM generate_series(1, 2500) g;
SELECT * FROM regress.lf_compare('sizes.csv');
RESET ingest.max_event_bytes;

-- an unterminated quoted field: the rest of the file is one rejected row
SELECT regress.lf_write('open_quote.csv', convert_to(
    string_agg(format('00000000-0000-0000-0000-000000000006,q%s,c,api,%s,{},1,', g, date_trunc('hour', now())),
               E'\n' ORDER BY g) || E'\n00000000-0000-0000-0000-000000000006,q0,"c,api\nmore\n', 'UTF8'))
  FROM generate_series(1, 1500) g;
SELECT * FROM regress.lf_compare('open_quote.csv');

-- on_error => 'abort': a bad row in a later batch fails the call, nothing stays
TRUNCATE lf;
SELECT regress.try($$SELECT * FROM ingest.load_file('lf', current_setting('data_directory') || '/big.csv',
                                                      header => true, on_error => 'abort')$$);
SELECT count(*) FROM lf;

-- "\." ends COPY's text data: data after it fails the call, here in a
-- later chunk than the marker; white space after it does not
SELECT regress.lf_write('marker.txt', convert_to(
    string_agg(format(E'00000000-0000-0000-0000-000000000007\tm%s\tc\tapi\t%s\t{}\t1\t\\N', g, date_trunc('hour', now())),
               E'\n' ORDER BY g) || E'\n\\.\n' || repeat(' ', 100000) || E'\n' || E'more\tdata' || E'\n', 'UTF8'))
  FROM generate_series(1, 1500) g;
SELECT regress.try($$SELECT * FROM ingest.load_file('lf', current_setting('data_directory') || '/marker.txt', 'text')$$);
SELECT count(*) FROM lf;
SELECT regress.lf_write('marker_end.txt', convert_to(
    string_agg(format(E'00000000-0000-0000-0000-000000000007\tm%s\tc\tapi\t%s\t{}\t1\t\\N', g, date_trunc('hour', now())),
               E'\n' ORDER BY g) || E'\n\\.\n' || repeat(E' \n', 50000), 'UTF8'))
  FROM generate_series(1, 1500) g;
SELECT * FROM ingest.load_file('lf', current_setting('data_directory') || '/marker_end.txt', 'text');
-- a "\." line inside a quoted csv field is data, as for COPY: here the
-- field begins in the file's first 64 kB and its "\." line is past them
TRUNCATE lf;
SELECT regress.lf_write('marker_quoted.csv', convert_to(
    l1 || repeat('x', 65536 - 300 - length(l1 || '""}",1,' || E'\n')) || '""}",1,' || E'\n'
    || format(E'00000000-0000-0000-0000-000000000007,qq,c,"%s\n\\.\n",%s,{},1,\n', repeat('y', 600), ts), 'UTF8'))
  FROM (SELECT date_trunc('hour', now()) AS ts) t,
       LATERAL (SELECT format('00000000-0000-0000-0000-000000000007,q1,c,api,%s,"{""p"": ""', ts) AS l1) l;
SELECT * FROM ingest.load_file('lf', current_setting('data_directory') || '/marker_quoted.csv');
SELECT transaction_id, length(code), right(code, 4) = E'\n\\.\n' AS marker_kept FROM lf ORDER BY 1;

TRUNCATE lf;
-- bytes not in the database encoding fail the call, as for ingest.load of
-- bytea: far into the file, and a character cut by the file's end
SELECT regress.lf_write('bad_utf8.csv',
    convert_to(string_agg(format('00000000-0000-0000-0000-000000000008,u%s,c,api,%s,{},1,', g, date_trunc('hour', now())),
                          E'\n' ORDER BY g) || E'\n', 'UTF8')
    || '\x30ff0a'::bytea)
  FROM generate_series(1, 2000) g;
SELECT regress.try_context($$SELECT * FROM ingest.load_file('lf', current_setting('data_directory') || '/bad_utf8.csv')$$);
SELECT regress.lf_write('cut_utf8.jsonl', convert_to('{"organization_id": "00000000-0000-0000-0000-000000000008"}' || E'\n' || '{"code": "', 'UTF8')
                                          || '\xe282'::bytea);
SELECT regress.try_context($$SELECT * FROM ingest.load_file('lf', current_setting('data_directory') || '/cut_utf8.jsonl', 'jsonl')$$);
SELECT count(*) FROM lf;
-- errors while reading name ingest.load_file and the table: binary cut short
SELECT regress.lf_write('cut.bin', substring(pg_read_binary_file(current_setting('data_directory') || '/binary.bin') for 200));
SELECT regress.try_context($$SELECT * FROM ingest.load_file('lf', current_setting('data_directory') || '/cut.bin', 'binary')$$);

-- a read-only transaction is refused, naming the function
BEGIN READ ONLY;
SELECT regress.try($$SELECT * FROM ingest.load_file('lf', current_setting('data_directory') || '/big.csv')$$);
ROLLBACK;

-- No size limit: a file of 1 GB and more is read, not refused.  Its rows
-- are followed by a hole (a sparse file, quick to make and read), whose
-- zero bytes are invalid text: the call fails on line 4, having read the
-- three rows before it.
SELECT regress.lf_write('huge.csv', convert_to(
    string_agg(format('00000000-0000-0000-0000-000000000009,h%s,c,api,%s,{},1,', g, date_trunc('hour', now())),
               E'\n' ORDER BY g) || E'\n', 'UTF8'))
  FROM generate_series(1, 3) g;
COPY (SELECT) TO PROGRAM 'cat > /dev/null; truncate -s 1100000000 huge.csv';
SELECT (pg_stat_file(current_setting('data_directory') || '/huge.csv')).size AS size;
SELECT regress.try_context($$SELECT * FROM ingest.load_file('lf', current_setting('data_directory') || '/huge.csv')$$);
COPY (SELECT) TO PROGRAM 'cat > /dev/null; rm huge.csv';

-- A named pipe has no size: it is read until its writer closes it.
COPY (SELECT) TO PROGRAM 'cat > /dev/null; rm -f pipe.csv && mkfifo pipe.csv && (timeout 60 sh -c ''cat big.csv > pipe.csv'' < /dev/null > /dev/null 2>&1 &)';
TRUNCATE lf;
SELECT * FROM ingest.load_file('lf', current_setting('data_directory') || '/pipe.csv', header => true);
COPY (SELECT) TO PROGRAM 'cat > /dev/null; rm pipe.csv';

SELECT * FROM regress.invariants();
