# Retention of a table distributed by ingest.distribute_table().  Citus 13
# refuses DETACH PARTITION CONCURRENTLY (XX000), and every retirement
# failed with it: the worker now retires such a day with a plain DETACH,
# which takes ACCESS EXCLUSIVE on the parent on every node for the moment
# it runs, waits at most ingest.lock_timeout for it there (on the workers
# too), and is retried by the next run when it times out.  The day's keys
# leave the colocated ledger shard by shard; its rollups stay.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use FindBin;
use lib $FindBin::RealBin;
use IngestCitus;

my ($coord, $w1, $w2) = my @nodes = citus_cluster('ingest.enabled = off', q{ingest.lock_timeout = '1s'});

# A managed table with events in two days past a retention of 5 days and
# in today, distributed by ingest.distribute_table() (the old days become
# colocated distributed partitions; the keys and rollups go to the shards).
$coord->safe_psql('postgres', q{SELECT ingest.create_event_table('ev', premake => 1);}
	. backdate_sql('ev', 'ev_old10', 10) . backdate_sql('ev', 'ev_old8', 8) . q{
	INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	SELECT ('00000000-0000-0000-0000-00000000000' || o)::uuid, 'tx-' || d || '-' || i, 'c', 'api',
	       date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - d * interval '1 day' + interval '1 hour', i
	  FROM generate_series(1, 4) o, unnest(ARRAY[10, 8, 0]) d, generate_series(1, 5) i;
	SELECT ingest.distribute_table('ev', shard_count => 4);
});
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'ev_old%'}),
	'2', 'the old days are distributed');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM ingest_side.ev_keys}), '60', 'their keys are on the shards');
is($coord->safe_psql('postgres', q{SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('ev')}) . '/' .
   $coord->safe_psql('postgres', q{SELECT pg_relation_size('ingest_side.ev_keys') + pg_relation_size('ingest_side.ev_rollup')}),
	'0/0', 'the coordinator keeps no copy of the moved rows');
my $usage_sql = q{SELECT string_agg(events || ':' || value_sum, ' ' ORDER BY 1)
	FROM ingest.usage('ev', '00000000-0000-0000-0000-000000000002',
	                  date_trunc('day', now()) - interval '11 days', date_trunc('day', now()) + interval '1 day',
	                  granularity => 'day')};
my $usage_before = $coord->safe_psql('postgres', $usage_sql);
is($usage_before, '5:15 5:15 5:15', 'usage per day before retention');
$coord->safe_psql('postgres', q{SELECT ingest.configure('ev', retention => '5 days')});

sub detach_log
{
	return $coord->safe_psql('postgres', q{
		SELECT string_agg(action || ':' || partition || ':' || status || ':' || coalesce(sqlstate, ''), ' ' ORDER BY id)
		  FROM ingest.maintenance_log WHERE relid = 'ev'::regclass AND action IN ('detach', 'drop')});
}

# A transaction on a worker node that holds a shard of the parent: the
# detach waits for it there at most ingest.lock_timeout, and is retried.
my $shard = shard_on($coord, 'ev', $w1);
my $holder = $w1->background_psql('postgres');
$holder->query_safe("BEGIN; SET LOCAL citus.enable_manual_changes_to_shards = on; LOCK TABLE $shard IN ACCESS SHARE MODE");
my ($rc, $out, $err) = try_sql($coord, q{SELECT count(*) FROM ingest.run_maintenance('ev')});
is($rc, 0, 'a run with a day held up on a worker node finishes') or diag($err);
is(detach_log(), 'detach:public.ev_old10:error:55P03 detach:public.ev_old8:error:55P03',
	'each plain DETACH timed out on the worker node (ingest.lock_timeout reached it)');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_inherits WHERE inhrelid IN ('ev_old10'::regclass, 'ev_old8'::regclass)}),
	'2', 'both days are still attached');
$holder->query_safe('COMMIT');
$holder->quit;

# The next run retires both days: plain DETACH, keys forgotten, dropped.
($rc, $out, $err) = try_sql($coord, q{SELECT count(*) FROM ingest.run_maintenance('ev')});
is($rc, 0, 'the next run finishes') or diag($err);
is(detach_log(),
	'detach:public.ev_old10:error:55P03 detach:public.ev_old8:error:55P03 detach:public.ev_old10:ok: detach:public.ev_old8:ok: drop:public.ev_old10:ok: drop:public.ev_old8:ok:',
	'it retires both days, oldest first');
like($coord->safe_psql('postgres', q{SELECT message FROM ingest.maintenance_log
		WHERE relid = 'ev'::regclass AND action = 'detach' AND status = 'ok' ORDER BY id LIMIT 1}),
	qr/plain DETACH PARTITION: Citus refuses DETACH PARTITION CONCURRENTLY/,
	'the log says that it took the plain DETACH');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_class WHERE relname LIKE 'ev_old%'}),
	'0', 'the days are gone on the coordinator');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'ev_old%'}),
	'0', 'and from Citus');
for my $w ($w1, $w2)
{
	is($w->safe_psql('postgres', q{SET citus.override_table_visibility = off;
		SELECT count(*) FROM pg_class WHERE relname LIKE 'ev_old%'}),
		'0', 'and their shards from worker ' . $w->name);
}
is($coord->safe_psql('postgres', q{SELECT count(*) || '/' || count(*) FILTER (WHERE transaction_id LIKE 'tx-0-%') FROM ingest_side.ev_keys}),
	'20/20', 'the keys of the retired days left the ledger on the shards, today\'s stayed');
is($coord->safe_psql('postgres', $usage_sql), $usage_before, 'usage of the retired days outlives them');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM ingest.rollup_verify('ev',
		date_trunc('day', now()) - interval '2 days', date_trunc('day', now()) + interval '1 day')}),
	'0', 'rollup_verify of the retained days after retention');
is($coord->safe_psql('postgres', q{SELECT string_agg(state, ',' ORDER BY day) FROM ingest.partitions WHERE event_table = 'ev'::regclass}),
	'attached,attached', 'today and the day ahead are left');

# A table of the same coordinator that Citus does not hold still detaches
# concurrently.
$coord->safe_psql('postgres', q{SELECT ingest.create_event_table('local_ev', premake => 1);}
	. backdate_sql('local_ev', 'local_old', 10) . q{
	SELECT ingest.configure('local_ev', retention => '5 days');
	SELECT count(*) FROM ingest.run_maintenance('local_ev');
});
is($coord->safe_psql('postgres', q{SELECT string_agg(action || ':' || status || ':' || (coalesce(message, '') LIKE '%plain DETACH%'), ' ' ORDER BY id)
		  FROM ingest.maintenance_log WHERE relid = 'local_ev'::regclass AND action IN ('detach', 'drop')}),
	'detach:ok:false drop:ok:false', 'a local table is retired with DETACH CONCURRENTLY');

# A transaction that writes to the distributed table and then configures
# it, while a run detaches a day: the plain DETACH waits for the writer's
# lock on the parent before it reads the policy, so the configure is not
# waited for (it deadlocked with the detach, which held the policy's row
# while it waited for ACCESS EXCLUSIVE).
$coord->safe_psql('postgres', q{ALTER SYSTEM SET ingest.lock_timeout = '60s'; SELECT pg_reload_conf();
	SELECT ingest.configure('ev', retention => '30 days');});
# a day made by hand: Citus distributes it at ATTACH, which it refused
# ("cannot distribute relation ... because it has triggers") outside the
# worker
($rc, $out, $err) = try_sql($coord, q{BEGIN; SELECT count(*) FROM ingest.create_partitions('ev',
	(now() AT TIME ZONE 'UTC')::date - 7, (now() AT TIME ZONE 'UTC')::date - 7);
	SHOW citus.enable_unsafe_triggers; COMMIT});
is("$rc $out", "0 1\noff", 'ingest.create_partitions() makes a day of a distributed table, leaving the setting as it was')
	or diag($err);
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_dist_partition p JOIN ingest.partitions i ON i.partition = p.logicalrelid
	WHERE i.event_table = 'ev'::regclass AND i.day = (now() AT TIME ZONE 'UTC')::date - 7}),
	'1', 'which Citus distributes');
$coord->safe_psql('postgres', q{SELECT ingest.configure('ev', retention => '5 days')});
my $old7 = $coord->safe_psql('postgres', q{SELECT partition::text FROM ingest.partitions
	WHERE event_table = 'ev'::regclass AND day = (now() AT TIME ZONE 'UTC')::date - 7});
my $writer = $coord->background_psql('postgres', on_error_stop => 0);
$writer->query_safe(q{BEGIN; INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('00000000-0000-0000-0000-000000000001', 'tx-late', 'c', 'api', now(), 1)});
my %run = (out => '', err => '');
$run{h} = IPC::Run::start(
	['psql', '-X', '-At', '-h', $coord->host, '-p', $coord->port, '-d', 'postgres',
	 '-c', q{SELECT action || ':' || coalesce(detail, '') FROM ingest.run_maintenance('ev') WHERE action = 'detach'}],
	'>', \$run{out}, '2>', \$run{err}, IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
ok($coord->poll_query_until('postgres', q{
	SELECT EXISTS (SELECT FROM pg_stat_activity
	                WHERE backend_type = 'ingest worker' AND wait_event_type = 'Lock')}),
	'the plain DETACH waits for the writer');
$writer->query(q{SELECT ingest.configure('ev', premake => 2)});
is($writer->{stderr} // '', '', 'the writer configures the table without a deadlock');
$writer->query_safe('COMMIT');
$writer->quit;
$run{h}->finish;
like($run{out}, qr/^detach:.*plain DETACH PARTITION/m, 'the run detached the day') or diag($run{err});
is($coord->safe_psql('postgres', qq{SELECT status || coalesce(' ' || sqlstate, '') FROM ingest.maintenance_log
		WHERE partition = 'public.$old7' AND action = 'detach'}), 'ok', 'once');
is($coord->safe_psql('postgres', q{SELECT premake || ' ' || (SELECT count(*) FROM ev WHERE transaction_id = 'tx-late')
		FROM ingest.table_config WHERE event_table = 'ev'::regclass}), '2 1', "the writer's event and configuration are kept");
is(ledger_mismatches($coord, 'ev'), 0, 'the ledger holds the keys of the events');

# A table of a role without superuser: the worker acts as the table's owner
# (detach, drop), while the checks on the side tables' shards ran as the
# extension's owner in the same transaction, which Citus refused (25001,
# "placements that were modified in this transaction by a different user")
# at every run.
$coord->safe_psql('postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE SCHEMA alice AUTHORIZATION alice;
	SET ROLE alice;
	SELECT ingest.create_event_table('alice.ev', premake => 1);
	RESET ROLE;
	SELECT ingest.distribute_table('alice.ev', shard_count => 4);
	SET ROLE alice;
	SELECT count(*) FROM ingest.create_partitions('alice.ev', (now() AT TIME ZONE 'UTC')::date - 9,
	                                              (now() AT TIME ZONE 'UTC')::date - 9);
	INSERT INTO alice.ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	SELECT '00000000-0000-0000-0000-000000000001', 'a-' || d || '-' || i, 'c', 'api',
	       date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - d * interval '1 day' + interval '1 hour', i
	  FROM unnest(ARRAY[9, 0]) d, generate_series(1, 5) i;
	SELECT ingest.configure('alice.ev', retention => '5 days');
});
($rc, $out, $err) = try_sql($coord, q{SET ROLE alice; SELECT action || ':' || coalesce(detail, '') FROM ingest.run_maintenance('alice.ev')
	WHERE action IN ('detach', 'drop')});
like($out, qr/^detach:.*plain DETACH PARTITION.*\ndrop:/s, "the day of a role's distributed table is retired") or diag("$out\n$err");
my $alice_keys = $coord->safe_psql('postgres', q{SELECT ledger FROM ingest.table_config WHERE event_table = 'alice.ev'::regclass});
is($coord->safe_psql('postgres', q{SELECT count(*) FROM alice.ev}) . '/' .
   $coord->safe_psql('postgres', qq{SELECT count(*) FROM $alice_keys}),
	'5/5', "its events and keys are gone, today's kept");
is(ledger_mismatches($coord, 'alice.ev'), 0, 'the ledger holds the keys of the events');

$_->stop for @nodes;
done_testing();
