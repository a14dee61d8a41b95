# pg_dump -Fc / pg_restore of a database with two managed tables, while the
# worker runs in every database: table "a" with a rollup by a property key,
# rejects and declared indexes; table "b" whose oldest rollup hours are older
# than its raw retention.  Each restore exits 0 and brings back the same
# events, ledger, rejects and usage; a replay of every stored event stores
# nothing; the worker goes on managing the restored tables.  A restore with
# pg_restore -j is refused, at every side table.  Then a dump taken while
# loads run restores to a consistent database.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
ingest.rollup_fold_interval = 1
ingest.close_delay = 0
max_worker_processes = 16
});
$node->start;

my $tmp = PostgreSQL::Test::Utils::tempdir;
my @orgs = map { sprintf('00000000-0000-0000-0000-%012d', $_) } 1 .. 4;

sub sql { my ($db, $q) = @_; return $node->safe_psql($db, $q); }
sub poll
{
	my ($db, $query, $what) = @_;
	ok($node->poll_query_until($db, $query), $what);
}

$node->safe_psql('postgres', 'CREATE DATABASE src');

# Helpers, in the source database (a dump carries them along): UTC day
# starts, one CSV line per event, and the events of each table.
sql('src', q{
	CREATE EXTENSION ingest;
	CREATE FUNCTION d(off int) RETURNS timestamptz LANGUAGE sql STABLE
		AS $$ SELECT ((now() AT TIME ZONE 'UTC')::date + off)::timestamp AT TIME ZONE 'UTC' $$;
	-- attach a partition for UTC day today + off, named <table>_old<-off>
	CREATE FUNCTION backdate(tbl regclass, off int) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		EXECUTE format('CREATE TABLE %I (LIKE %s)', tbl::text || '_old' || -off, tbl);
		EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
					   tbl, tbl::text || '_old' || -off, d(off), d(off + 1));
	END $$;
	CREATE FUNCTION csv(org uuid, tx text, cust text, code text, ts timestamptz,
						props jsonb, v float8, dv numeric) RETURNS text LANGUAGE sql STABLE
		AS $$ SELECT format('%s,%s,%s,%s,%s,%s,%s,%s', org, tx, cust, code, ts,
							'"' || replace(props::text, '"', '""') || '"', v, dv) $$;
	-- every stored event of a table as one CSV payload
	CREATE FUNCTION stored(tbl regclass) RETURNS text LANGUAGE plpgsql STABLE AS $$
	DECLARE r text;
	BEGIN
		EXECUTE format('SELECT string_agg(csv(organization_id, transaction_id, external_customer_id, code,
								"timestamp", properties, value, decimal_value), E''\n'') FROM %s', tbl) INTO r;
		RETURN r;
	END $$;
	-- n events of organization "org", key prefix "pfx", every "step" from "t0"
	CREATE FUNCTION gen(org int, pfx text, t0 timestamptz, step interval, n int) RETURNS text
	LANGUAGE sql STABLE AS $$
		SELECT string_agg(csv(format('00000000-0000-0000-0000-%s', lpad(org::text, 12, '0'))::uuid,
							  pfx || '-' || org || '-' || i, 'c' || (i % 3),
							  CASE WHEN i % 4 = 0 THEN 'tokens' ELSE 'api' END,
							  t0 + i * step,
							  CASE i % 4 WHEN 0 THEN '{"model": "m1"}' WHEN 1 THEN '{"model": "m2"}'
										 WHEN 2 THEN '{"model": "m1", "region": "eu"}' ELSE '{}' END::jsonb,
							  CASE WHEN i % 10 = 0 THEN NULL ELSE (i % 7) * 1.25 + org END,
							  CASE WHEN i % 5 = 0 THEN NULL ELSE round(i / 3.0, 4) END), E'\n' ORDER BY i)
		  FROM generate_series(1, n) i $$;
	-- events of "b" on the day it will retire
	CREATE FUNCTION b_old_events() RETURNS text LANGUAGE sql STABLE AS $$
		SELECT gen(1, 'bo', d(-3), interval '37 minutes', 30) || E'\n'
			|| gen(4, 'bo', d(-3), interval '41 minutes', 25) $$;
	-- the state compared between databases
	CREATE FUNCTION events_digest(tbl regclass) RETURNS text LANGUAGE plpgsql STABLE AS $$
	DECLARE r text;
	BEGIN
		EXECUTE format('SELECT count(*) || '' '' || md5(COALESCE(string_agg(format(''%%s|%%s|%%s|%%s|%%s|%%s|%%s|%%s|%%s'',
						   organization_id, transaction_id, external_customer_id, code, "timestamp", properties,
						   value, decimal_value, created_at), E''\n'' ORDER BY organization_id, transaction_id COLLATE "C"), ''''))
						FROM %s', tbl) INTO r;
		RETURN r;
	END $$;
	CREATE FUNCTION ledger_digest(tbl regclass) RETURNS text LANGUAGE plpgsql STABLE AS $$
	DECLARE r text;
	BEGIN
		EXECUTE format('SELECT count(*) || '' '' || md5(COALESCE(string_agg(format(''%%s|%%s|%%s'',
						   organization_id, transaction_id, payload_hash), E''\n''
						   ORDER BY organization_id, transaction_id COLLATE "C"), ''''))
						FROM %s', (SELECT ledger FROM ingest.table_config WHERE event_table = tbl)) INTO r;
		RETURN r;
	END $$;
	-- keys stored but not in the ledger, in the ledger but not stored, or
	-- with another payload hash: empty when the ledger is exact
	CREATE FUNCTION ledger_mismatch(tbl regclass) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
	DECLARE r bigint;
	BEGIN
		EXECUTE format('SELECT count(*) FROM (SELECT organization_id, transaction_id COLLATE "C" AS tx,
							   ingest_side.payload_hash(e) AS h FROM %s e) e
						  FULL JOIN %s k ON k.organization_id = e.organization_id AND k.transaction_id = e.tx
						 WHERE e.h IS NULL OR k.payload_hash IS NULL OR k.payload_hash <> e.h',
					   tbl, (SELECT ledger FROM ingest.table_config WHERE event_table = tbl)) INTO r;
		RETURN r;
	END $$;
	CREATE FUNCTION rejects_digest() RETURNS text LANGUAGE sql STABLE AS $$
		SELECT count(*) || E'\n' || COALESCE(string_agg(format('%s|%s|%s|%s|%s|%s|%s', event_table, source,
				   line_number, raw, sqlstate, message, kind), E'\n' ORDER BY id), '')
		  FROM ingest.rejects $$;
	-- ingest.usage of one organization, by hour, for one rollup, as text
	CREATE FUNCTION usage_text(tbl regclass, org text, lo timestamptz, hi timestamptz, ru text,
							   gran text DEFAULT 'hour') RETURNS text LANGUAGE sql STABLE AS $$
		SELECT COALESCE(string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', u.bucket, u.code,
				   u.external_customer_id, u.dimensions, u.events, u.value_sum, u.decimal_sum,
				   u.value_min, u.value_max, u.latest_value, u.latest_at), E'\n'
				   ORDER BY u.bucket, u.code, u.external_customer_id, u.dimensions::text), '(none)')
		  FROM ingest.usage(tbl, org::uuid, lo, hi, rollup => ru, granularity => gran) u $$;
	CREATE FUNCTION verify_count(tbl regclass, ru text) RETURNS bigint LANGUAGE sql STABLE AS $$
		SELECT count(*) FROM ingest.rollup_verify(tbl, '-infinity', 'infinity', ru) $$;
});

# Table "a": yesterday and today, a rollup by model, declared indexes.
sql('src', q{SELECT ingest.create_event_table('a', premake => 1); SELECT backdate('a', -1)});
my $r = sql('src', q{
	-- 150 events an organization every 17 minutes from yesterday 00:00
	SELECT string_agg(l::text, ' ' ORDER BY o)
	  FROM generate_series(1, 3) o, ingest.load('a', gen(o, 'a', d(-1), interval '17 minutes', 150)) l;
});
is($r, '(150,0,0,0) (150,0,0,0) (150,0,0,0)', 'a: events of yesterday and today loaded');
sql('src', q{SELECT ingest.create_rollup('a', 'by_model', ARRAY['model'])});
$r = sql('src', q{
	-- more after the rollup is declared, a duplicate, a conflict, bad rows
	SELECT l::text FROM ingest.load('a', gen(1, 'a2', d(-1) + interval '30 minutes', interval '23 minutes', 80)
		|| E'\n' || csv('00000000-0000-0000-0000-000000000002', 'a-2-5', 'c2', 'api', d(-1) + 5 * interval '17 minutes',
						'{"model": "m2"}', 7.25, 1.6667)
		|| E'\n' || split_part(gen(2, 'a', d(-1), interval '17 minutes', 6), E'\n', 6)
		|| E'\n' || '00000000-0000-0000-0000-000000000003,bad-1,c1,api,' || d(0) || ',{},oops,'
		|| E'\n' || csv('00000000-0000-0000-0000-000000000003', 'bad-2', 'c1', 'api', d(-10), '{}', 1, NULL)) l;
});
is($r, '(80,2,2,1)', 'a: one load with a duplicate, a conflict and two bad rows');
# A bulk of today's events, so that a restore takes long enough for the
# worker to come by meanwhile.
$r = sql('src', q{
	SELECT sum(l.loaded) FROM generate_series(1, 3) o,
		ingest.load('a', gen(o, 'bulk', d(0), interval '2 seconds', 8000)) l;
});
is($r, '24000', 'a: a bulk of today loaded');
sql('src', q{
	SELECT ingest.add_index('a', ARRAY['(properties->>''model'')', 'timestamp'], name => 'model_ts');
	SELECT ingest.add_index('a', ARRAY['code'], phase => 'always', name => 'code_always');
});

# Table "b": events three days ago, yesterday and today; then a two-day
# retention retires the oldest day, whose hours stay in the rollup.
sql('src', q{SELECT ingest.create_event_table('b', premake => 1);
	SELECT backdate('b', -3); SELECT backdate('b', -1)});
$r = sql('src', q{
	SELECT string_agg(l::text, ' ' ORDER BY x) FROM (
		SELECT 1 AS x, l FROM ingest.load('b', b_old_events()) l
		UNION ALL SELECT 2, l FROM ingest.load('b', gen(1, 'b', d(-1), interval '29 minutes', 90)
												 || E'\n' || gen(2, 'b', d(-1), interval '31 minutes', 90)) l
		UNION ALL SELECT 3, l FROM ingest.load('b', '00000000-0000-0000-0000-000000000001,short,c1,api,not-a-time,{},1,') l) s;
});
is($r, '(55,0,0,0) (180,0,0,0) (0,0,1,0)', 'b: events loaded, one short row rejected');

poll('src', q{SELECT building_xid IS NULL FROM ingest.rollup_config
			   WHERE event_table = 'a'::regclass AND name = 'by_model'},
	'the worker builds the by_model rollup');
poll('src', q{SELECT NOT EXISTS (SELECT FROM ingest_side.a_deltas) AND NOT EXISTS (SELECT FROM ingest_side.b_deltas)},
	'the worker folds every delta');
my $b_old_before = sql('src', qq{SELECT string_agg(usage_text('b', o, d(-3), d(-2), NULL), E'\n---\n' ORDER BY o)
	FROM unnest('{$orgs[0],$orgs[3]}'::text[]) o});
my $b_old_sums = qq{SELECT string_agg((SELECT sum(events) FROM ingest.usage('b', o, d(-3), d(-2)))::text, ' ' ORDER BY o)
	FROM unnest('{$orgs[0],$orgs[3]}'::uuid[]) o};
is(sql('src', $b_old_sums), '30 25', 'b: usage of the old day');

sql('src', q{SELECT ingest.configure('b', retention => '2 days')});
poll('src', q{SELECT NOT EXISTS (SELECT FROM pg_class WHERE relname = 'b_old3')},
	'b: the worker retires the day past retention');
is(sql('src', q{SELECT count(*) FILTER (WHERE "timestamp" < d(-2)) || ' ' || count(*) FROM b}), '0 180',
	'b: its raw events are gone');
is(sql('src', q{SELECT count(*) > 0 AND min(hour) < ingest_internal.raw_since('b')
				 FROM ingest_side.b_rollup}),
	't', 'b: its oldest rollup hours are older than its raw events');
is(sql('src', qq{SELECT string_agg(usage_text('b', o, d(-3), d(-2), NULL), E'\n---\n' ORDER BY o)
	FROM unnest('{$orgs[0],$orgs[3]}'::text[]) o}), $b_old_before,
	'b: usage of the retired day still answers, from the rollup');
is(sql('src', $b_old_sums), '30 25', 'b: the same sums');

poll('src', q{SELECT count(*) > 0 AND bool_and(status = 'present' OR (status = 'deferred' AND phase = 'closed'))
				AND bool_and(status = 'present') FILTER (WHERE partition = 'a_old1'::regclass)
			   FROM ingest.indexes},
	'the worker builds the declared indexes, those of closed days too');

# What the source holds, to compare the restored databases with.
my %q = (
	'events a' => q{SELECT events_digest('a')},
	'events b' => q{SELECT events_digest('b')},
	'ledger a' => q{SELECT ledger_digest('a')},
	'ledger b' => q{SELECT ledger_digest('b')},
	'rollup rows' => q{SELECT count(*) || ' ' || md5(string_agg(r::text, E'\n' ORDER BY r::text))
						 FROM (SELECT * FROM ingest_side.a_rollup UNION ALL SELECT * FROM ingest_side.b_rollup) r},
	'daily rows' => q{SELECT count(*) || ' ' || md5(string_agg(r::text, E'\n' ORDER BY r::text))
						 FROM (SELECT * FROM ingest_side.a_daily UNION ALL SELECT * FROM ingest_side.b_daily) r},
	'rejects' => q{SELECT rejects_digest()},
	'partitions' => q{SELECT string_agg(format('%s|%s|%s', event_table, partition, state), E'\n'
										ORDER BY event_table::text, day) FROM ingest.partitions},
	'table config' => q{SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s', event_table, retention, premake,
								ledger, rollup_hours, rollup_deltas, rollup_stale, usage_view, rollup_days), E'\n'
								ORDER BY event_table::text) FROM ingest.table_config},
	'rollup config' => q{SELECT string_agg(format('%s|%s|%s|%s|%s', event_table, name, dimensions, known_from,
								 building_xid), E'\n' ORDER BY event_table::text, name) FROM ingest.rollup_config},
	'index config' => q{SELECT string_agg(format('%s|%s|%s|%s|%s', event_table, name, columns, method, phase), E'\n'
								ORDER BY event_table::text, name) FROM ingest.index_config},
	'indexes' => q{SELECT string_agg(format('%s|%s|%s', partition, name, status), E'\n'
								ORDER BY partition::text, name) FROM ingest.indexes},
	'index definitions' => q{SELECT string_agg(indexdef, E'\n' ORDER BY indexdef) FROM pg_indexes
								WHERE schemaname IN ('public', 'ingest_side')},
	'deltas and stale marks' => q{SELECT (SELECT count(*) FROM ingest_side.a_deltas) + (SELECT count(*) FROM ingest_side.b_deltas)
								+ (SELECT count(*) FROM ingest_side.a_stale) + (SELECT count(*) FROM ingest_side.b_stale)},
);
my %want = map { $_ => sql('src', $q{$_}) } keys %q;
is($want{'deltas and stale marks'}, '0', 'source: every delta folded');
like($want{rejects}, qr/^4\n/, 'source: four rejects (a conflict, two bad rows, a short row)');
like($want{indexes}, qr/a_old1\|model_ts\|present/, 'source: the closed day has its declared index');

# ingest.usage of every organization, for every rollup, over ranges that
# cover everything (b's retired day too), in one query.
my @usage;
for my $o (@orgs)
{
	push @usage, [ "a $o default", "usage_text('a', '$o', d(-1), d(2), NULL)" ],
	  [ "a $o by_model", "usage_text('a', '$o', d(-1), d(2), 'by_model')" ],
	  [ "a $o by_model daily", "usage_text('a', '$o', d(-1), d(2), 'by_model', 'day')" ],
	  [ "b $o default", "usage_text('b', '$o', d(-5), d(2), NULL)" ],
	  [ "b $o total", "usage_text('b', '$o', d(-5), d(2), NULL, 'total')" ],
	  [ "b $o retired day", "usage_text('b', '$o', d(-3), d(-2), NULL)" ];
}
my $usage_q = 'SELECT ' . join(" || E'\\n=====\\n' || ", map { $_->[1] } @usage);
sub usage_of
{
	my @parts = split /\n=====\n/, sql(shift, $usage_q), -1;
	return { map { $usage[$_][0] => $parts[$_] } 0 .. $#usage };
}
my $want_usage = usage_of('src');
is($want_usage->{"b $orgs[3] retired day"}, (split /\n---\n/, $b_old_before)[1],
	'source: an organization known only from retired hours has usage');
is(scalar(grep { $want_usage->{$_->[0]} eq '(none)' } @usage), 3 + 4,
	'source: usage is empty only where no event was');
my $verify_q = q{SELECT verify_count('a', 'default') || ' ' || verify_count('a', 'by_model') || ' '
				 || verify_count('b', 'default')};
is(sql('src', $verify_q), '0 0 0', 'source: the rollups agree with the raw events');
is(sql('src', q{SELECT ledger_mismatch('a') || ' ' || ledger_mismatch('b')}), '0 0',
	'source: the ledgers hold exactly the stored keys');

my $worker_q = q{SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'ingest worker'
								AND datname = current_database())};
poll('src', $worker_q, 'the worker runs in the source database');

# pg_dump and pg_restore, checked: exit status 0 and no message.
sub run_ok
{
	my ($what, @cmd) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err);
	my $ok = $h->finish;
	ok($ok, "$what exits 0" . ($ok ? '' : ": $err"));
	is($err, '', "$what writes no message");
	return $ok && $err eq '';
}

sub restore_ok
{
	my ($file, $db, @opts) = @_;
	return run_ok("pg_restore @opts into $db", 'pg_restore', @opts, '-d', $node->connstr($db), $file);
}

# A restore in three sections, the worker running in the database between
# them: once the data is in, the tables are managed but their triggers are
# not there yet, and the worker, the fold and the loader leave them alone.
sub restore_in_sections
{
	my ($file, $db) = @_;
	restore_ok($file, $db, '--section=pre-data') or return 0;
	poll($db, $worker_q, "$db: the worker runs in the database being restored");
	# (with several jobs: no trigger is there yet for them to race)
	restore_ok($file, $db, '--section=data', '-j', '4') or return 0;
	is(sql($db, q{SELECT ingest_internal.ready('a') OR ingest_internal.ready('b')}), 'f',
		"$db: before the triggers, the tables are not ready");
	my ($rc, $out, $err) = $node->psql($db, q{SELECT * FROM ingest.load('a', csv('00000000-0000-0000-0000-000000000001',
		'early', 'c1', 'api', d(0), '{}', 1, NULL))});
	like($err, qr/table "a" is not ready: its ingest triggers are missing/, "$db: a load is refused meanwhile");
	# two maintenance runs and folds of the worker
	sleep(3);
	ok($node->poll_query_until($db, $worker_q), "$db: the worker is still there");
	for my $k ('partitions', 'rollup rows', 'daily rows', 'ledger a', 'deltas and stale marks')
	{
		is(sql($db, $q{$k}), $want{$k}, "$db: the worker left the $k alone before the triggers");
	}
	is(sql($db, q{SELECT count(*) FILTER (WHERE status <> 'skipped' OR sqlstate <> '55000') || ':' ||
		count(*) FILTER (WHERE message LIKE 'table is not ready%') || ':' || count(DISTINCT relid)
		FROM ingest.maintenance_log}), '0:2:2',
		"$db: the worker did nothing yet, and said once a table that the tables are not ready");
	return restore_ok($file, $db, '--section=post-data');
}

# A data-only restore into the tables a schema-only restore made, which
# have their triggers: refused while it would copy the side tables under
# them (the ledger would make the dedup trigger skip every event restored
# after it), whole with --disable-triggers.
sub restore_data_only
{
	my ($file, $db, $verb) = @_;
	restore_ok($file, $db, '--schema-only') or return 0;
	my ($out, $err) = ('', '');
	IPC::Run::run(['pg_restore', '--data-only', '--single-transaction', '-d', $node->connstr($db), $file],
		'>', \$out, '2>', \$err);
	like($err, qr/cannot $verb into "a_daily": it is side state of managed table "public.a", whose triggers are in place/,
		"$db: a data-only restore without --disable-triggers is refused");
	is(sql($db, q{SELECT (SELECT count(*) FROM a) || ' ' || (SELECT count(*) FROM ingest_side.a_keys)}), '0 0',
		"$db: and restores nothing");
	return restore_ok($file, $db, '--data-only', '--disable-triggers', '--single-transaction');
}

# pg_restore -j: its jobs can make a table's triggers while its events are
# still being copied, so it is refused, whatever order they run in, at the
# TRUNCATE it sends before it copies into each side table it made.
sub restore_parallel
{
	my ($file, $db) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(['pg_restore', '-j', '4', '-d', $node->connstr($db), $file], '>', \$out, '2>', \$err);
	ok(!$ok, "$db: pg_restore -j fails");
	my @refused = sort($err =~ /cannot truncate "(\w+)": it is side state of a managed table/g);
	is("@refused", join(' ', map { my $t = $_; map { "${t}_$_" } qw(daily deltas keys rollup stale) } qw(a b)),
		"$db: at each side table, with a clear error");
	return 0;
}

# A data-only pg_restore -j into the tables a schema-only restore made.
# Without --disable-triggers its jobs copy some side tables before
# ingest.table_config names them, others after, and each is refused,
# whatever the order; with it, each is refused as it is not one
# transaction (the worker would see the restore half done).
sub restore_data_parallel
{
	my ($file, $db) = @_;
	my $side = join(' ', map { my $t = $_; map { "${t}_$_" } qw(daily deltas keys rollup stale) } qw(a b));
	for my $disable (0, 1)
	{
		my $d = $disable ? "${db}_disabled" : $db;
		$node->safe_psql('postgres', "CREATE DATABASE $d TEMPLATE template0") if $disable;
		restore_ok($file, $d, '--schema-only') or return 0;
		my ($out, $err) = ('', '');
		my $ok = IPC::Run::run(['pg_restore', '--data-only', ($disable ? ('--disable-triggers') : ()), '-j', '4',
			'-d', $node->connstr($d), $file], '>', \$out, '2>', \$err);
		ok(!$ok, "$d: a data-only pg_restore -j fails");
		my $re = $disable ? qr/cannot copy into "(\w+)" outside a transaction block/
			: qr/cannot copy into "(\w+)": it is side state/;
		my @refused = sort($err =~ /$re/g);
		is("@refused", $side, "$d: at each side table, with a clear error");
	}
	return 0;
}

my $dump = "$tmp/src.dump";
run_ok('pg_dump', 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('src'));
# each partition's rows copied through its table (with the partition's
# triggers disabled)
my $root_dump = "$tmp/src_root.dump";
run_ok('pg_dump --load-via-partition-root', 'pg_dump', '-Fc', '--load-via-partition-root', '-f', $root_dump,
	'-d', $node->connstr('src'));
# the data as INSERT statements
my $inserts_dump = "$tmp/src_inserts.dump";
run_ok('pg_dump --inserts', 'pg_dump', '-Fc', '--inserts', '-f', $inserts_dump, '-d', $node->connstr('src'));

# clean: restored over a restore, with --clean (which drops ingest's
# triggers before the tables) in one transaction; data: data only, into
# what a schema-only restore made; data_root: the same from a dump made
# with --load-via-partition-root; data_inserts: the same from a dump made
# with --inserts; parallel and data_parallel: with -j, refused
for my $mode ('plain', 'sections', 'parallel', 'clean', 'data', 'data_root', 'data_inserts', 'data_parallel')
{
	my $db = "dst_$mode";
	$node->safe_psql('postgres', "CREATE DATABASE $db TEMPLATE template0");
	my $ok = $mode eq 'sections' ? restore_in_sections($dump, $db)
		: $mode eq 'data' ? restore_data_only($dump, $db, 'copy')
		: $mode eq 'data_root' ? restore_data_only($root_dump, $db, 'copy')
		: $mode eq 'data_inserts' ? restore_data_only($inserts_dump, $db, 'insert')
		: $mode eq 'clean' ? restore_ok($dump, $db)
			&& restore_ok($dump, $db, '--clean', '--if-exists', '--single-transaction')
		: $mode eq 'parallel' ? restore_parallel($dump, $db)
		: $mode eq 'data_parallel' ? restore_data_parallel($dump, $db)
		: restore_ok($dump, $db);
	next unless $ok;

	# Everything the source holds, exactly.
	for my $k (sort keys %q)
	{
		next if $k eq 'indexes';
		is(sql($db, $q{$k}), $want{$k}, "$db: $k as in the source");
	}
	is(sql($db, q{SELECT ledger_mismatch('a') || ' ' || ledger_mismatch('b')}), '0 0',
		"$db: the ledgers hold exactly the stored keys");
	is(sql($db, $verify_q), '0 0 0', "$db: the rollups agree with the raw events");
	my $got = usage_of($db);
	is(join(', ', grep { $got->{$_} ne $want_usage->{$_} } map { $_->[0] } @usage), '',
		"$db: usage equals the source's for every organization and rollup");
	is($got->{"b $orgs[0] retired day"}, $want_usage->{"b $orgs[0] retired day"},
		"$db: usage of b's retired day, from the rollup");

	# The worker takes the restored tables back.
	is(sql($db, q{SELECT ingest_internal.ready('a') AND ingest_internal.ready('b')}), 't',
		"$db: the restored tables are ready");
	poll($db, $worker_q, "$db: the worker runs in the restored database");
	poll($db, q{SELECT count(*) = 2 FROM ingest.event_tables WHERE last_maintenance IS NOT NULL},
		"$db: the worker maintains both restored tables");
	poll($db, "SELECT ($q{indexes}) = \$\$$want{indexes}\$\$", "$db: every declared index is in place");
	# more days ahead for a; a day past retention attached to b
	sql($db, q{SELECT ingest.configure('a', premake => 3); SELECT backdate('b', -6)});

	# A replay of every stored event stores nothing; a new one is stored.
	my ($na, $nb) = map { (split / /, $want{"events $_"})[0] } ('a', 'b');
	is(sql($db, q{SELECT l::text FROM ingest.load('a', stored('a')) l}), "(0,$na,0,0)",
		"$db: a replay of a stores nothing, with no conflict");
	is(sql($db, q{SELECT l::text FROM ingest.load('b', stored('b')) l}), "(0,$nb,0,0)",
		"$db: a replay of b stores nothing, with no conflict");
	is(sql($db, q{SELECT l::text FROM ingest.load('b', b_old_events()) l}), '(0,0,55,0)',
		"$db: events of b's retired day are set aside, not stored again");
	is(sql($db, $q{'events a'}) . ' ' . sql($db, $q{'events b'}), "$want{'events a'} $want{'events b'}",
		"$db: the replays changed no event");
	is(sql($db, q{SELECT count(*) FROM ingest.rejects}), 4 + 55, "$db: only the retired day's events were rejected");
	is(sql($db, q{SELECT l::text FROM ingest.load('a', csv('00000000-0000-0000-0000-000000000001', 'new-1', 'c1',
					'api', d(0) + interval '1 minute', '{"model": "m9"}', 2, NULL)) l}), '(1,0,0,0)',
		"$db: a new event is stored");
	is(sql($db, q{SELECT ledger_mismatch('a') || ' ' || ledger_mismatch('b')}), '0 0',
		"$db: the ledgers still hold exactly the stored keys");
	poll($db, q{SELECT NOT EXISTS (SELECT FROM ingest_side.a_deltas)}, "$db: the worker folds the new event");
	is(sql($db, q{SELECT count(*) FROM ingest.rollup_verify('a', d(0), d(0) + interval '1 hour')}) . ' '
		. sql($db, q{SELECT count(*) FROM ingest.rollup_verify('a', d(0), d(0) + interval '1 hour', 'by_model')}),
		'0 0', "$db: the rollups of its hour still agree with the raw events");
	is(sql($db, qq{SELECT count(*) FROM ingest.usage('a', '$orgs[0]', d(0), d(0) + interval '1 hour',
					 rollup => 'by_model') WHERE dimensions = '{"model": "m9"}' AND events = 1 AND value_sum = 2}),
		'1', "$db: usage counts the new event once");
	$got = usage_of($db);
	is(join(', ', grep { $got->{$_} ne $want_usage->{$_} } map { $_->[0] } @usage),
		"a $orgs[0] default, a $orgs[0] by_model, a $orgs[0] by_model daily",
		"$db: usage changed only where the new event is");

	poll($db, q{SELECT newest_day = (now() AT TIME ZONE 'UTC')::date + 3 FROM ingest.event_tables
				 WHERE event_table = 'a'::regclass}, "$db: the worker premakes days of the restored table");
	poll($db, q{SELECT NOT EXISTS (SELECT FROM pg_class WHERE relname = 'b_old6')},
		"$db: the worker retires a day past the restored table's retention");
	is(sql($db, q{SELECT string_agg(action, ',' ORDER BY id) FROM ingest.maintenance_log
				   WHERE status = 'ok' AND relid = 'b'::regclass AND partition = 'public.b_old6'}),
		'detach,drop', "$db: the retirement is logged");
	is(sql($db, q{SELECT count(*) FROM ingest.maintenance_log WHERE status = 'error'}), '0',
		"$db: no maintenance action failed");
	is(sql($db, q{SELECT count(*) FROM ingest.event_tables WHERE consecutive_failures > 0 OR last_sqlstate IS NOT NULL}),
		'0', "$db: the tables are healthy");
}
is(sql('src', q{SELECT count(*) FROM ingest.maintenance_log WHERE status = 'error'}), '0',
	'source: no maintenance action failed');

# A table in a schema that sorts before "ingest": a data-only restore
# copies its events before ingest.table_config, while its triggers are in
# place but it is not managed yet (they go in unfollowed).  Without
# --disable-triggers the side tables after the configuration are refused
# all the same, and in one transaction nothing is restored; with it, all
# is.
$node->safe_psql('postgres', 'CREATE DATABASE src_aaa');
sql('src_aaa', q{
	CREATE EXTENSION ingest;
	CREATE FUNCTION d(off int) RETURNS timestamptz LANGUAGE sql STABLE
		AS $$ SELECT ((now() AT TIME ZONE 'UTC')::date + off)::timestamp AT TIME ZONE 'UTC' $$;
	CREATE SCHEMA aaa;
	SELECT ingest.create_event_table('aaa.ev', premake => 1);
	SELECT ingest.load('aaa.ev', string_agg(format('00000000-0000-0000-0000-000000000001,tx%s,c1,api,%s,{},1,',
												   i, d(0) + i * interval '1 second'), E'\n'))
	  FROM generate_series(1, 100) i;
});
my $aaa_dump = "$tmp/src_aaa.dump";
run_ok('pg_dump of src_aaa', 'pg_dump', '-Fc', '-f', $aaa_dump, '-d', $node->connstr('src_aaa'));
$node->safe_psql('postgres', 'CREATE DATABASE dst_aaa TEMPLATE template0');
my $aaa_q = q{SELECT (SELECT count(*) FROM aaa.ev) || ' ' || (SELECT count(*) FROM ingest_side.ev_keys) || ' '
	|| (SELECT count(*) FROM ingest.rollup_verify('aaa.ev', d(0), d(1)))};
if (restore_ok($aaa_dump, 'dst_aaa', '--schema-only'))
{
	my ($out, $err) = ('', '');
	IPC::Run::run(['pg_restore', '--data-only', '--single-transaction', '-d', $node->connstr('dst_aaa'), $aaa_dump],
		'>', \$out, '2>', \$err);
	like($err, qr/cannot copy into "ev_daily": it is side state of managed table "aaa.ev", whose triggers are in place/,
		'dst_aaa: the side tables restored after the configuration are refused');
	is(sql('dst_aaa', q{SELECT (SELECT count(*) FROM aaa.ev) || ' ' || (SELECT count(*) FROM ingest_side.ev_keys)
		|| ' ' || (SELECT count(*) FROM ingest.table_config)}), '0 0 0', 'dst_aaa: and nothing is restored');
	restore_ok($aaa_dump, 'dst_aaa', '--data-only', '--disable-triggers', '--single-transaction');
	is(sql('dst_aaa', $aaa_q), '100 100 0', 'dst_aaa: with --disable-triggers, the events, their keys and rollups');
	is(sql('dst_aaa', q{SELECT l.loaded || ' ' || l.duplicates FROM ingest.load('aaa.ev',
		'00000000-0000-0000-0000-000000000001,tx1,c1,api,' || d(0) || ',{},1,') l}), '0 1',
		'dst_aaa: a restored key is a duplicate');
}

# A dump taken while loads run: 200 loads of 250 new events each, one
# transaction each.
my $loader = $node->background_psql('src');
$loader->query_until(qr/started/, q{
	\echo started
	DO $$
	BEGIN
		FOR i IN 1..200 LOOP
			PERFORM ingest.load('a', gen(1 + i % 3, 'live' || i, d(0) + i * interval '10 seconds',
										interval '10 milliseconds', 250));
			COMMIT;
		END LOOP;
	END $$;
	\echo finished
});
poll('src', q{SELECT count(*) >= 2500 FROM a WHERE transaction_id LIKE 'live%'}, 'the live loads are under way');
my $live_dump = "$tmp/live.dump";
run_ok('pg_dump during loads', 'pg_dump', '-Fc', '-f', $live_dump, '-d', $node->connstr('src'));
my $live_after = sql('src', q{SELECT count(*) FROM a WHERE transaction_id LIKE 'live%'});
$node->safe_psql('postgres', "CREATE DATABASE dst_live TEMPLATE template0");
if (restore_ok($live_dump, 'dst_live'))
{
	my $live_in_dump = sql('dst_live', q{SELECT count(*) FROM a WHERE transaction_id LIKE 'live%'});
	ok($live_in_dump > 0 && $live_in_dump < 50000 && $live_in_dump % 250 == 0,
		"the dump holds whole loads only, part of them ($live_in_dump events)");
	is(sql('dst_live', q{SELECT ledger_mismatch('a') || ' ' || ledger_mismatch('b')}), '0 0',
		'live dump: the ledgers hold exactly the stored keys');
	is(sql('dst_live', q{SELECT (SELECT count(*) FROM a) - (SELECT count(*) FROM ingest_side.a_keys)}), '0',
		'live dump: as many keys as events');
	is(sql('dst_live', $verify_q), '0 0 0', 'live dump: the rollups agree with the raw events');
	is(sql('dst_live', qq{SELECT sum(events) FROM ingest.usage('a', '$orgs[1]', d(-1), d(2))}),
		sql('dst_live', qq{SELECT count(*) FROM a WHERE organization_id = '$orgs[1]'}),
		'live dump: usage counts every restored event once');
	my $stored_a = sql('dst_live', 'SELECT count(*) FROM a');
	is(sql('dst_live', q{SELECT l::text FROM ingest.load('a', stored('a')) l}), "(0,$stored_a,0,0)",
		'live dump: a replay of every restored event stores nothing');
	poll('dst_live', q{SELECT count(*) = 2 FROM ingest.event_tables WHERE last_maintenance IS NOT NULL},
		'live dump: the worker maintains the restored tables');
}
cmp_ok($live_after, '<', 50000, 'the loads were still running when the dump was done');

$loader->query_until(qr/finished/, '');
$loader->quit;
is(sql('src', q{SELECT count(*) FROM a WHERE transaction_id LIKE 'live%'}), '50000', 'the live loads all finished');
is(sql('src', q{SELECT ledger_mismatch('a')}), '0', 'source: the ledger is still exact after the live loads');

ok(!$node->log_contains('terminated by signal'), 'no backend crashed');
$node->stop;
done_testing();
