# Rollup health: the worker folds each table in a transaction of its own,
# so one table's failing fold is visible in ingest.rollup_health (SQLSTATE,
# failures, next attempt) while another table's fold goes on; the failing
# one recovers once the cause is gone.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('health');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.rollup_fold_interval = 1
ingest.maintenance_interval = 1
ingest.lock_timeout = 200
max_worker_processes = 16
});
$node->start;

sub sql { return $node->safe_psql('postgres', shift); }
sub poll
{
	my ($query, $what) = @_;
	ok($node->poll_query_until('postgres', $query), $what);
}

sql(q{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('stuck');
	SELECT ingest.create_event_table('fine');
	CREATE FUNCTION batch(tbl regclass, prefix text) RETURNS void LANGUAGE sql AS $$
		SELECT ingest.load(tbl, string_agg(format('00000000-0000-0000-0000-000000000001,%s%s,c,api,%s,{},%s,',
		                                          prefix, g, now(), g), E'\n'))
		  FROM generate_series(1, 100) g $$;
});
poll(q{SELECT count(*) = 2 FROM ingest.rollup_health WHERE last_success_at IS NOT NULL},
	'both tables are folded');

# A session holds a lock the fold of "stuck" needs, beyond ingest.lock_timeout.
my $side = sql(q{SELECT rollup_hours FROM ingest.table_config WHERE event_table = 'stuck'::regclass});
my $holder = $node->background_psql('postgres');
$holder->query_safe("BEGIN; LOCK TABLE $side IN ACCESS EXCLUSIVE MODE");
sql(q{SELECT batch('stuck', 's'); SELECT batch('fine', 'f')});

poll(q{SELECT last_sqlstate = '55P03' AND consecutive_failures >= 1 AND next_attempt_at > last_error_at
		 FROM ingest.rollup_health WHERE event_table = 'stuck'::regclass},
	'the failing fold is visible in SQL with its SQLSTATE and next attempt');
poll(q{SELECT deltas_waiting = 0 AND consecutive_failures = 0 AND last_success_at > last_fold_at - interval '1 minute'
		 FROM ingest.rollup_health WHERE event_table = 'fine'::regclass},
	'the other table is folded meanwhile');
is(sql(q{SELECT deltas_waiting > 0 AND fold_lag > interval '0' FROM ingest.rollup_health
		  WHERE event_table = 'stuck'::regclass}), 't',
	'the stuck table shows its waiting deltas and lag');
like(sql(q{SELECT last_error FROM ingest.rollup_health WHERE event_table = 'stuck'::regclass}),
	qr/lock/, 'the error message is there for the owner');
is(sql(q{SELECT sum(events) FROM ingest.usage('fine', '00000000-0000-0000-0000-000000000001', date_trunc('day', now(), 'UTC'), date_trunc('day', now(), 'UTC') + interval '1 day')}),
	'100', 'usage of the other table is right');

# Backoff: the third failure in a row waits 4 intervals, not one.
poll(q{SELECT consecutive_failures >= 3 FROM ingest.rollup_health WHERE event_table = 'stuck'::regclass},
	'the fold is retried');
is(sql(q{SELECT next_attempt_at - last_error_at >= interval '3 seconds'
		   FROM ingest.rollup_health WHERE event_table = 'stuck'::regclass}), 't',
	'failed folds back off');

$holder->query_safe('ROLLBACK');
$holder->quit;
sql(q{UPDATE ingest_internal.fold_state SET next_attempt_at = now()});
poll(q{SELECT deltas_waiting = 0 AND consecutive_failures = 0 AND next_attempt_at IS NULL
		 FROM ingest.rollup_health WHERE event_table = 'stuck'::regclass},
	'the stuck table recovers once the lock is gone');
is(sql(q{SELECT last_sqlstate FROM ingest.rollup_health WHERE event_table = 'stuck'::regclass}), '55P03',
	'the last error stays on record');

# The health of a table is its readers' (and pg_monitor's) to see.
sql(q{CREATE ROLE stranger LOGIN; CREATE ROLE watcher LOGIN IN ROLE pg_monitor});
is($node->safe_psql('postgres', q{SELECT count(deltas_waiting) FROM ingest.rollup_health}, extra_params => ['-U', 'stranger']),
	'0', 'a stranger sees no backlog');
is($node->safe_psql('postgres', q{SELECT count(deltas_waiting) FROM ingest.rollup_health}, extra_params => ['-U', 'watcher']),
	'2', 'pg_monitor sees every backlog');
is($node->safe_psql('postgres', q{SELECT count(last_error) FROM ingest.rollup_health}, extra_params => ['-U', 'watcher']),
	'0', 'but not error texts, which may quote stored values');

# A dropped table's fold state goes with it.
sql(q{DROP TABLE stuck});
is(sql(q{SELECT count(*) FROM ingest_internal.fold_state WHERE relid NOT IN (SELECT event_table FROM ingest.table_config)}),
	'0', 'fold state is cleaned up on DROP TABLE');

done_testing();
