# The launcher serves every database, whatever their number and order, and
# the worker keeps going past what it cannot maintain:
# - with fewer free worker slots than databases, a database with the
#   extension after those without still gets its worker (the workers of the
#   others exit at once and free their slots);
# - a statement that stopped a database's worker brings it back at once,
#   not at the launcher's next interval (an hour here);
# - a configuration row whose table was dropped with event triggers off
#   leaves the worker running and the other tables maintained.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestRun;

my $node = PostgreSQL::Test::Cluster->new('launcher');
$node->init;
# the launcher and the logical replication launcher take two slots: two are
# left for five databases
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
max_worker_processes = 4
max_parallel_workers = 0
});
$node->start;

# Databases without the extension first in pg_database, then one with it.
$node->safe_psql('postgres', "CREATE DATABASE db$_") for 1 .. 3;
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', q{CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('ev', premake => 1);
	SELECT ingest.create_event_table('gone', premake => 1)});
ok(worker_in_database($node, 'app'), 'the database after those without the extension gets a worker');
ok($node->poll_query_until('app', q{SELECT count(*) = 2 FROM ingest.partitions
	WHERE event_table = 'ev'::regclass AND state = 'attached'}), 'which maintains its table');

# A table dropped with event triggers off leaves its configuration row.
$node->safe_psql('app', q{SET session_replication_role = replica; DROP TABLE gone});
is($node->safe_psql('app', q{SELECT count(*) FROM ingest.table_config WHERE event_table::oid NOT IN (SELECT oid FROM pg_class)}),
	'1', 'a configuration row is left without its table');
$node->safe_psql('app', q{SELECT ingest.configure('ev', premake => 3)});
ok($node->poll_query_until('app', q{SELECT count(*) = 4 FROM ingest.partitions
	WHERE event_table = 'ev'::regclass AND state = 'attached'}), 'the other table is still maintained');
my $pid = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity
	WHERE backend_type = 'ingest worker' AND datname = 'app'});
sleep 3;
is($node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity
	WHERE backend_type = 'ingest worker' AND datname = 'app'}), $pid, 'by the same worker, a few runs later');
ok(!$node->log_contains('cache lookup failed'), 'no lookup of the missing table failed');

# An hour between scans: a statement that needs the database to itself
# stops its worker and the launcher brings it back at once.
$node->safe_psql('postgres', q{ALTER SYSTEM SET ingest.maintenance_interval = 3600; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', q{SELECT setting = '3600' FROM pg_settings WHERE name = 'ingest.maintenance_interval'}),
	'the interval is an hour');
sleep 2;	# the launcher and the worker take the reload
$node->safe_psql('postgres', 'ALTER DATABASE app RENAME TO app2');
ok(worker_in_database($node, 'app2'), 'the worker comes back to the renamed database within the hour');

ok(!$node->log_contains('terminated by signal'), 'no process crashed');
$node->stop;
done_testing();
