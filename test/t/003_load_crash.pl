# A server killed with SIGKILL in the middle of a load: after restart the
# events, the key ledger and the rejects agree, and a replay of the payload
# loads exactly the missing rows.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestCrash;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
});
$node->start;

my $payload = $node->basedir . '/payload.csv';
$node->safe_psql('postgres', qq{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('ev');
	-- a first, committed load
	SELECT * FROM ingest.load('ev', E'00000000-0000-0000-0000-000000000001,tx-1,c,api,' || now() || E',{},1,\\n');
	-- 1M rows with 5% repeated keys and one bad row
	COPY (SELECT '00000000-0000-0000-0000-000000000001',
				 'tx-' || CASE WHEN n % 20 = 0 THEN n - 1 ELSE n END,
				 'c', 'api', now(), '{}', CASE WHEN n = 500 THEN 'oops' ELSE '1' END, NULL
			FROM generate_series(1, 1000000) n) TO '$payload' CSV;
});

# Start the load and SIGKILL its backend while it runs: the postmaster then
# kills every backend and recovers, as after a server crash.
my $loader = $node->background_psql('postgres', on_error_stop => 0);
$loader->query_until(qr/started/, qq{
	\\echo started
	SELECT * FROM ingest.load('ev', pg_read_file('$payload'));
});
ok($node->poll_query_until('postgres',
	q{SELECT EXISTS (SELECT FROM pg_stat_activity WHERE query LIKE '%ingest.load(%pg_read_file%' AND state = 'active' AND pid <> pg_backend_pid())}),
	'the load is running');
my $pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE query LIKE '%ingest.load(%pg_read_file%' AND state = 'active' AND pid <> pg_backend_pid()});
sleep(1);
kill_and_recover($node, $pid, $loader);
ok($node->log_contains('terminated by signal 9'), 'the loading backend was killed');

is($node->safe_psql('postgres', 'SELECT count(*) FROM ev'), '1',
	'the killed load left no row; the earlier load is intact');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM ingest_side.ev_keys k
	 WHERE NOT EXISTS (SELECT FROM ev e WHERE e.organization_id = k.organization_id
						  AND e.transaction_id = k.transaction_id)}), '0',
	'no key without its event');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM ev e
	 WHERE NOT EXISTS (SELECT FROM ingest_side.ev_keys k WHERE
						  e.organization_id = k.organization_id AND e.transaction_id = k.transaction_id)}), '0',
	'no event without its key');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ingest.rejects'), '0',
	'no reject of the killed load survived');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ingest.rollup_verify('ev', '-infinity', 'infinity')}),
	'0', 'the rollup agrees with the raw events after the crash');

# Replaying the payload loads exactly what is missing.
is($node->safe_psql('postgres', qq{SELECT loaded || ',' || duplicates || ',' || rejected
	FROM ingest.load('ev', pg_read_file('$payload'))}),
	'949999,50000,1', 'the replay loads every missing row once');
is($node->safe_psql('postgres', qq{SELECT loaded || ',' || duplicates || ',' || rejected
	FROM ingest.load('ev', pg_read_file('$payload'))}),
	'0,999999,1', 'a second replay loads nothing');
is($node->safe_psql('postgres', q{SELECT count(*) || ',' || count(DISTINCT transaction_id) FROM ev}),
	'950000,950000', 'each key is stored once');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ingest.rollup_verify('ev', '-infinity', 'infinity')}),
	'0', 'the rollup agrees with the raw events after the replays');
$node->safe_psql('postgres', q{SELECT ingest.fold_rollups()});
is($node->safe_psql('postgres', q{SELECT sum(events) FROM ingest.usage('ev', '00000000-0000-0000-0000-000000000001',
	date_trunc('hour', now()) - interval '2 days', date_trunc('hour', now()) + interval '2 days')}), '950000',
	'usage counts every stored event once');

$node->stop;
done_testing();
