# The maintenance worker: partitions made and retired with no manual call,
# catch-up, new databases, failures isolated and logged, loaders never
# blocked, a bounded log, and clean exits on DROP EXTENSION/DATABASE.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
ingest.lock_timeout = 200
max_worker_processes = 16
});
$node->start;

sub sql { return $node->safe_psql('postgres', shift); }
sub poll
{
	my ($query, $what, $db) = @_;
	ok($node->poll_query_until($db // 'postgres', $query), $what)
	  or diag($node->safe_psql($db // 'postgres', q{
		SELECT string_agg(format('%s %s %s:%s %s', backend_type, state, wait_event_type, wait_event,
								 left(query, 80)), E'\n')
		  FROM pg_stat_activity WHERE backend_type IN ('client backend', 'ingest worker')}));
}

sql(q{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('template');
	CREATE FUNCTION today() RETURNS date LANGUAGE sql
		AS $$ SELECT (now() AT TIME ZONE 'UTC')::date $$;
	-- an empty table shaped like ours
	CREATE FUNCTION mk(name text) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN EXECUTE format('CREATE TABLE %I (LIKE template) PARTITION BY RANGE ("timestamp")', name); END $$;
	-- attach a partition for day today()+off
	CREATE FUNCTION backdate(tbl regclass, off int) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE p text := tbl::text || '_old' || abs(off);
	BEGIN
		EXECUTE format('CREATE TABLE %I (LIKE %s)', p, tbl);
		EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', tbl, p,
					   ingest_internal.day_start(today() + off, 'UTC'),
					   ingest_internal.day_start(today() + off + 1, 'UTC'));
	END $$;
	CREATE FUNCTION days(tbl regclass) RETURNS text LANGUAGE sql AS $$
		SELECT string_agg((day - today())::text, ',' ORDER BY day)
		  FROM ingest.partitions WHERE event_table = tbl AND state = 'attached' $$;
});

# Partitions are made with no manual call.
sql(q{SELECT mk('adopted'); SELECT ingest.manage_table('adopted', premake => 2)});
poll(q{SELECT days('adopted') = '0,1,2'}, 'worker makes today and premake partitions by itself');

# Retention retires backdated partitions, oldest first, and drops them.
sql(q{SELECT backdate('adopted', -10); SELECT backdate('adopted', -8);
	SELECT ingest.configure('adopted', retention => '5 days')});
poll(q{SELECT days('adopted') = '0,1,2'
		  AND NOT EXISTS (SELECT FROM pg_class WHERE relname IN ('adopted_old10', 'adopted_old8'))},
	'worker retires partitions past retention');
is(sql(q{SELECT string_agg(action || ':' || partition || ':' || status, ' ' ORDER BY id)
		 FROM ingest.maintenance_log WHERE relid = 'adopted'::regclass AND action IN ('detach', 'drop')}),
	'detach:public.adopted_old10:ok detach:public.adopted_old8:ok drop:public.adopted_old10:ok drop:public.adopted_old8:ok',
	'retirement is logged: detach concurrently, then drop');

# Catch-up after the worker was off.
sql(q{ALTER SYSTEM SET ingest.enabled = off; SELECT pg_reload_conf()});
poll(q{SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'ingest worker')},
	'worker exits when disabled');
sql(q{SELECT mk('gap'); SELECT backdate('gap', -4); SELECT ingest.manage_table('gap', premake => 1)});
sleep(3);
is(sql(q{SELECT days('gap')}), '-4', 'nothing happens while the worker is off');
sql(q{ALTER SYSTEM RESET ingest.enabled; SELECT pg_reload_conf()});
poll(q{SELECT days('gap') = '-4,-3,-2,-1,0,1'}, 'first run after being off catches up every missing day');

# A database created after start is picked up.
$node->safe_psql('postgres', 'CREATE DATABASE late');
$node->safe_psql('late', q{CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('template');
	CREATE TABLE late_events (LIKE template) PARTITION BY RANGE ("timestamp");
	SELECT ingest.manage_table('late_events', premake => 1)});
poll(q{SELECT count(*) = 2 FROM ingest.partitions WHERE event_table = 'late_events'::regclass},
	'a database that creates the extension later is served', 'late');

# A failure in one table is logged with its SQLSTATE; other tables go on.
sql(q{SELECT mk('bad'); SELECT mk('good');
	DO $$ BEGIN EXECUTE format('CREATE TABLE %I (x int)', ingest_internal.partition_name('bad', today())); END $$;
	SELECT ingest.manage_table('bad', premake => 1);
	SELECT ingest.manage_table('good', premake => 1)});
poll(q{SELECT days('good') = '0,1'}, 'the good table gets its partitions');
poll(q{SELECT EXISTS (SELECT FROM ingest.maintenance_log WHERE relid = 'bad'::regclass
		  AND action = 'create' AND status = 'error' AND sqlstate = '42P07')},
	'the failure is logged with its SQLSTATE');
poll(q{SELECT last_sqlstate = '42P07' AND consecutive_failures >= 1 AND next_attempt_at > now()
		 FROM ingest.event_tables WHERE event_table = 'bad'::regclass},
	'the failing table shows its error and its next attempt');
is(sql(q{SELECT days('bad')}), '1', 'the failing table still gets the days it can');

# A lock held on the parent: maintenance times out, logs 55P03, retries;
# inserts are never blocked meanwhile.
sql(q{SELECT ingest.create_event_table('busy', premake => 0)});
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN; LOCK TABLE busy IN SHARE UPDATE EXCLUSIVE MODE');
sql(q{SELECT ingest.configure('busy', premake => 2)});
poll(q{SELECT EXISTS (SELECT FROM ingest.maintenance_log WHERE relid = 'busy'::regclass
		  AND status = 'error' AND sqlstate = '55P03')},
	'maintenance gives up on a held lock with 55P03');
my $inserted = 0;
for my $i (1 .. 10)
{
	$inserted += $node->safe_psql('postgres', qq{
		SET statement_timeout = '2s';
		INSERT INTO busy (organization_id, transaction_id, external_customer_id, code, "timestamp")
		VALUES (gen_random_uuid(), 'tx$i', 'c', 'k', now()) RETURNING 1});
	select(undef, undef, undef, 0.2);
}
is($inserted, 10, 'inserts are not blocked while maintenance waits for its lock');
is(sql(q{SELECT days('busy')}), '0', 'no partition was made while the lock was held');
$holder->query_safe('COMMIT');
poll(q{SELECT days('busy') = '0,1,2'}, 'maintenance succeeds once the lock is released');

# A policy changed between a run's plan and its detach: the detach reads
# the policy again and leaves a day that is no longer past retention.  The
# run is held between the two by a lock its partition creation waits for.
sql(q{ALTER SYSTEM SET ingest.lock_timeout = '60s'; SELECT pg_reload_conf()});
sql(q{SELECT ingest.create_event_table('keep', premake => 0); SELECT backdate('keep', -10)});
# as a detach that failed before it started left it on an older version
sql(q{SELECT ingest_internal.mark_retiring(partition::regclass) FROM ingest.partitions
	   WHERE event_table = 'keep'::regclass AND day = current_date - 10});
select(undef, undef, undef, 2);		# for the worker to read the new lock_timeout
$holder->query_safe('BEGIN; LOCK TABLE keep IN SHARE UPDATE EXCLUSIVE MODE');
sql(q{SELECT ingest.configure('keep', retention => '3 days', premake => 1)});
poll(q{SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		  WHERE l.relation = 'keep'::regclass AND NOT l.granted AND a.backend_type = 'ingest worker')},
	'a run that plans to retire a day waits to create another');
sql(q{SELECT ingest.configure('keep', retention => '30 days')});
$holder->query_safe('COMMIT');
poll(q{SELECT EXISTS (SELECT FROM ingest.maintenance_log WHERE relid = 'keep'::regclass AND action = 'detach')},
	'the run reaches its detach');
is(sql(q{SELECT string_agg(status || ':' || coalesce(message, ''), ' ') FROM ingest.maintenance_log
		 WHERE relid = 'keep'::regclass AND action IN ('detach', 'drop')}),
	"skipped:no longer due: the table's policy changed since the plan",
	'the detach planned under the old retention is skipped');
is(sql(q{SELECT days('keep')}), '-10,0,1', 'the day the new retention keeps stays attached');
is(sql(q{SELECT count(*) FROM ingest_internal.retired WHERE relid = 'keep'::regclass}), '0',
	'and keeps no retirement mark');
sql(q{ALTER SYSTEM SET ingest.lock_timeout = 200; SELECT pg_reload_conf()});

# A reader's snapshot holds up the second phase of DETACH CONCURRENTLY: it
# times out, the detach stays pending, and a later run finishes it.
sql(q{SELECT ingest.create_event_table('ret', premake => 0); SELECT backdate('ret', -10)});
# The worker's CREATE INDEX CONCURRENTLY of a day (ret_old10's, made by
# hand) waits for the reader's snapshot too, up to ingest.index_lock_timeout,
# and the detach after it: every declared index is built first.
poll(q{SELECT NOT EXISTS (SELECT FROM ingest.table_config c, ingest.run_maintenance(c.event_table, dry_run => true) m
		  WHERE m.action IN ('index', 'drop_index'))},
	'every declared index is built before the reader opens');
my $reader = $node->background_psql('postgres');
$reader->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ret');
sql(q{SELECT ingest.configure('ret', retention => '3 days')});
poll(q{SELECT EXISTS (SELECT FROM ingest.maintenance_log WHERE relid = 'ret'::regclass
		  AND action = 'detach' AND status = 'error' AND sqlstate = '55P03')},
	'a detach held up by a reader times out');
is(sql(q{SELECT state FROM ingest.partitions WHERE partition = 'ret_old10'::regclass}),
	'detach pending', 'the partition is left detach-pending');
is($node->safe_psql('postgres', q{SET statement_timeout = '2s';
	INSERT INTO ret (organization_id, transaction_id, external_customer_id, code, "timestamp")
	VALUES (gen_random_uuid(), 'r1', 'c', 'k', now()) RETURNING 1}), '1',
	'inserts go on during a pending detach');
$reader->query_safe('COMMIT');
$reader->quit;
poll(q{SELECT NOT EXISTS (SELECT FROM pg_class WHERE relname = 'ret_old10')},
	'the pending detach is finalized and the partition dropped');
ok(sql(q{SELECT EXISTS (SELECT FROM ingest.maintenance_log WHERE relid = 'ret'::regclass
		  AND action = 'finalize' AND status = 'ok')}) eq 't', 'finalize is logged');

# The maintenance log stays bounded by ingest.log_retention.
sql(q{ALTER SYSTEM SET ingest.log_retention = '2s'; SELECT pg_reload_conf()});
poll(q{SELECT count(*) = 0 FROM ingest.maintenance_log WHERE logged_at < now() - interval '5 seconds'},
	'old log rows are trimmed');
poll(q{SELECT count(*) > 0 FROM ingest.maintenance_log WHERE relid = 'bad'::regclass},
	'recent rows are kept');

# The load below is its hour's only one, which the trimming must keep:
# start clear of the next hour's turn.
sql(q{SELECT pg_sleep(s + 1) FROM (SELECT 3600 - extract(epoch FROM clock_timestamp()) % 3600 AS s) t WHERE s < 60});

# So do ingest.rejects, by ingest.rejects_retention: an old reject goes, a
# new one stays.
sql(q{SELECT ingest.load('adopted', E'bad1,t1,c,k,2030-01-01,{},1,\nbad2,t2,c,k,2030-01-01,{},1,');
	UPDATE ingest.rejects SET rejected_at = now() - interval '2 days'
	 WHERE id = (SELECT min(id) FROM ingest.rejects WHERE event_table = 'adopted'::regclass)});
is(sql(q{SELECT count(*) FROM ingest.rejects WHERE event_table = 'adopted'::regclass}), '2',
	'two rejects');
sql(q{ALTER SYSTEM SET ingest.rejects_retention = '1d'; SELECT pg_reload_conf()});
poll(q{SELECT count(*) = 1 FROM ingest.rejects WHERE event_table = 'adopted'::regclass},
	'the old reject is trimmed, the new one kept');

# Days missed more than 31 days back are left to the owner: the worker
# makes the recent ones, and its warning row goes to the server log too.
sql(q{BEGIN;
	SELECT ingest.create_event_table('longgone', premake => 0);
	SELECT format('DROP TABLE %s', partition) FROM ingest.partitions WHERE event_table = 'longgone'::regclass \gexec
	SELECT backdate('longgone', -40);
	COMMIT});
poll(q{SELECT EXISTS (SELECT FROM ingest.maintenance_log WHERE relid = 'longgone'::regclass AND status = 'warning')
		  AND days('longgone') LIKE '-40,-31,%,0'},
	'the worker makes the missed days of the last 31 and warns of older ones');
ok($node->wait_for_log(qr/WARNING:  maintenance of table "longgone" left work undone\n.*DETAIL:  days \S+ to \S+ are missing, more than 31 days back/),
	'the warning is in the server log with its detail');

# Load statistics: the worker stores the counts published at commit, and
# trims them by ingest.log_retention once their hour is past it.
poll(q{SELECT NOT EXISTS (SELECT FROM ingest_side.load_stats_pending())
		  AND EXISTS (SELECT FROM ingest_internal.load_stats
					   WHERE event_table = 'adopted'::regclass AND rejected >= 2)},
	'the worker stores load statistics');
is(sql(q{SELECT sum(rejected) FROM ingest.load_stats WHERE event_table = 'adopted'::regclass}),
	sql(q{SELECT count(*) FROM ingest.rejects WHERE event_table = 'adopted'::regclass AND kind = 'rejected'})
	  + 1, 'the stored counts are those of the loads (one reject trimmed since)');
sql(q{INSERT INTO ingest_internal.load_stats
	  VALUES ('adopted'::regclass, date_trunc('hour', now() - interval '3 hours'), 1, 1, 0, 0, 0, 1, 0, now() - interval '3 hours')});
poll(q{SELECT NOT EXISTS (SELECT FROM ingest_internal.load_stats WHERE hour < now() - interval '2 hours')},
	'an old hour of load statistics is trimmed');
is(sql(q{SELECT count(*) > 0 FROM ingest_internal.load_stats WHERE event_table = 'adopted'::regclass}), 't',
	'the current hour is kept');

# DROP EXTENSION ends the database's worker; DROP DATABASE is not blocked by it.
poll(q{SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'ingest worker' AND datname = 'late')},
	'the late database has a worker');
$node->safe_psql('late', 'DROP EXTENSION ingest CASCADE');
poll(q{SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'ingest worker' AND datname = 'late')},
	'DROP EXTENSION ends the worker');
$node->safe_psql('late', 'CREATE EXTENSION ingest');
poll(q{SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'ingest worker' AND datname = 'late')},
	'CREATE EXTENSION brings it back');
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE late');
is($rc, 0, 'DROP DATABASE succeeds while the database has a worker') or diag($err);

# pg_dump keeps the configuration.
my ($dump) = run_command(['pg_dump', '-d', $node->connstr('postgres')]);
like($dump, qr/^COPY ingest\.table_config .*\n(?:.*\n)*?public\.adopted\tUTC\t5 days\t2\t/m,
	'pg_dump includes the policy of managed tables');

# The SQL objects of an older version, before ALTER EXTENSION ingest UPDATE:
# the worker waits for the update, saying so once, instead of failing at
# every pass (each pass called a function the old objects lack, 42883).
my $released = $node->safe_psql('postgres', q{
	SELECT max(version) FROM pg_available_extension_versions
	 WHERE name = 'ingest' AND version <> (SELECT default_version FROM pg_available_extensions WHERE name = 'ingest')});
$node->safe_psql('postgres', 'CREATE DATABASE oldver');
my $offset = -s $node->logfile;
$node->safe_psql('oldver', qq{CREATE EXTENSION ingest VERSION '$released'; SELECT ingest.create_event_table('ev', premake => 1);});
ok($node->wait_for_log(qr/LOG:  ingest worker for database "oldver" waits for the extension at its library's version\n.*DETAIL:  The extension is at version $released, its library at version \d[^\n]*\n.*HINT:  Run ALTER EXTENSION ingest UPDATE, or install the library of the extension's version\./, $offset),
	'a worker over an older version waits for the update and says so');
sleep(3);
my $log = slurp_file($node->logfile, $offset);
is(scalar(() = $log =~ /waits for the extension at its library's version/g), 1, 'it says so once');
unlike($log, qr/function ingest_internal\.\S+ does not exist/, 'it calls none of the objects of the older version');
$node->safe_psql('oldver', q{ALTER EXTENSION ingest UPDATE; SELECT ingest.configure('ev', premake => 4)});
ok($node->poll_query_until('oldver', q{SELECT newest_day >= (now() AT TIME ZONE 'UTC')::date + 4 FROM ingest.event_tables}),
	'once updated, the worker maintains the database');

# ingest.maintenance_role naming a role that cannot log in, or is not a
# superuser: the launcher says so once and starts no worker (workers failed
# to connect, or failed at once, at every scan).
$node->safe_psql('postgres', q{
	CREATE ROLE maint SUPERUSER NOLOGIN;
	ALTER SYSTEM SET ingest.maintenance_role = 'maint';
	SELECT pg_reload_conf();});
$offset = -s $node->logfile;
ok($node->wait_for_log(qr/LOG:  role "maint" named by "ingest.maintenance_role" is not a superuser that can log in/, $offset),
	'a maintenance role that cannot log in is reported');
sleep(3);
$log = slurp_file($node->logfile, $offset);
unlike($log, qr/not permitted to log in/, 'no worker tries to connect as it');
is(scalar(() = $log =~ /is not a superuser that can log in/g), 1, 'it is said once');
$node->safe_psql('postgres', q{ALTER ROLE maint LOGIN; SELECT pg_reload_conf();});
ok($node->poll_query_until('postgres', q{SELECT EXISTS (SELECT FROM pg_stat_activity
	WHERE backend_type = 'ingest worker' AND usename = 'maint')}),
	'once it can log in, the workers connect as it');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET ingest.maintenance_role; SELECT pg_reload_conf();});

ok(!$node->log_contains('terminated by signal'), 'no worker crashed');
$node->stop;
done_testing();
