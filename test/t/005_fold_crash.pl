# A server killed with SIGKILL in the middle of a rollup fold: after restart
# the unfolded deltas are all still there, the rollup agrees with the raw
# events, and the next fold completes it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestCrash;

my $node = PostgreSQL::Test::Cluster->new('foldcrash');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
});
$node->start;

my $org = '00000000-0000-0000-0000-000000000001';
$node->safe_psql('postgres', qq{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('ev');
	-- folded: one event per customer in the current hour
	SELECT * FROM ingest.load('ev', (SELECT string_agg(format('$org,a-%s,c%s,api,%s,{},1,', n, n, date_trunc('hour', now())), E'\\n')
									   FROM generate_series(1, 100) n));
	SELECT ingest.fold_rollups();
	-- unfolded: 20 loads touching the same keys and new ones
	SELECT (SELECT loaded FROM ingest.load('ev', (SELECT string_agg(format('$org,b-%s-%s,c%s,api,%s,{},%s,', l, n, n,
														date_trunc('hour', now()) + n * interval '1 second', n), E'\\n')
											 FROM generate_series(1, 200) n)))
	  FROM generate_series(1, 20) l;
});
my $deltas = $node->safe_psql('postgres', 'SELECT count(*) FROM ingest_side.ev_deltas');
cmp_ok($deltas, '>', 0, 'deltas wait to be folded');

# Hold a folded rollup row so the fold stops in the middle of its statement,
# with deltas deleted and rollup rows updated in its open transaction.
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN; SELECT * FROM ingest_side.ev_rollup WHERE external_customer_id = 'c50' FOR UPDATE;});
my $folder = $node->background_psql('postgres', on_error_stop => 0);
$folder->query_until(qr/started/, q{
	\echo started
	SELECT ingest.fold_rollups();
});
ok($node->poll_query_until('postgres',
	q{SELECT EXISTS (SELECT FROM pg_stat_activity WHERE query LIKE '%fold_rollups()%'
	                   AND wait_event_type = 'Lock' AND pid <> pg_backend_pid())}),
	'the fold is under way');
my $pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE query LIKE '%fold_rollups()%'
	    AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()});
kill_and_recover($node, $pid, $folder, $holder);
ok($node->log_contains('terminated by signal 9'), 'the folding backend was killed');

is($node->safe_psql('postgres', 'SELECT count(*) FROM ingest_side.ev_deltas'), $deltas,
	'the killed fold deleted no delta');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ingest.rollup_verify('ev', '-infinity', 'infinity')}),
	'0', 'the rollup agrees with the raw events after the crash');
cmp_ok($node->safe_psql('postgres', 'SELECT ingest.fold_rollups()'), '>', 0, 'the next fold runs');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ingest_side.ev_deltas'), '0',
	'every delta is folded');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ingest.rollup_verify('ev', '-infinity', 'infinity')}),
	'0', 'the folded rollup agrees with the raw events');
is($node->safe_psql('postgres', qq{SELECT sum(events) || ',' || sum(value_sum)
	FROM ingest.usage('ev', '$org', date_trunc('hour', now()) - interval '1 day',
					  date_trunc('hour', now()) + interval '1 day')}),
	'4100,402100', 'usage counts each event once');

$node->stop;
done_testing();
