# pg_upgrade's new server runs in binary-upgrade mode (postgres -b): it must
# get exactly the old cluster's objects, so ingest registers no worker
# there; the same server started normally has its worker.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('binup');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
});
$node->start;
$node->safe_psql('postgres', q{CREATE EXTENSION ingest; SELECT ingest.create_event_table('ev')});
my $workers = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('ingest launcher', 'ingest worker')};
ok($node->poll_query_until('postgres', "SELECT ($workers) > 0"), 'started normally, the server has ingest\'s worker');
$node->stop;

command_ok([ 'pg_ctl', '-D', $node->data_dir, '-l', $node->logfile, '-o', '-b', '-w', 'start' ],
	'the server starts in binary-upgrade mode');
# the launcher starts with the server when it is registered; give it time
$node->safe_psql('postgres', 'SELECT pg_sleep(3)');
is($node->safe_psql('postgres', $workers), '0',
	'in binary-upgrade mode no ingest worker runs');
command_ok([ 'pg_ctl', '-D', $node->data_dir, '-w', '-m', 'fast', 'stop' ], 'and it stops');

done_testing();
