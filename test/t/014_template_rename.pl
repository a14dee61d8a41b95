# The worker leaves a database that a statement needs to itself: CREATE
# DATABASE ... TEMPLATE it, ALTER DATABASE ... RENAME, ALTER DATABASE ...
# SET TABLESPACE (as for DROP DATABASE, 001_worker.pl).  Each succeeds while
# the worker is attached, and the launcher brings the worker back: to the
# source database, to the copy (which has the extension), under the new
# name, in the new tablespace; each keeps maintaining its partitions.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestRun;

my $node = PostgreSQL::Test::Cluster->new('template_rename');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
max_worker_processes = 16
});
$node->start;

# The worker makes the days premake asks for: it serves the database.
sub maintained
{
	my ($db, $premake, $what) = @_;
	$node->safe_psql($db, qq{SELECT ingest.configure('ev', premake => $premake)});
	ok($node->poll_query_until($db, qq{SELECT count(*) = $premake + 1 FROM ingest.partitions
		WHERE event_table = 'ev'::regclass AND state = 'attached'}), $what);
}

sub run_ok
{
	my ($sql, $what) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql);
	is($rc, 0, $what) or diag($err);
}

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', q{CREATE EXTENSION ingest; SELECT ingest.create_event_table('ev', premake => 1)});
ok(worker_in_database($node, 'src'), 'the source database has a worker');

run_ok('CREATE DATABASE copy TEMPLATE src', 'CREATE DATABASE ... TEMPLATE succeeds while the source has a worker');
ok(worker_in_database($node, 'src'), 'the worker is back in the source database');
ok(worker_in_database($node, 'copy'), 'the copy, which has the extension, gets its own worker');
maintained('copy', 3, 'the copy\'s partitions are maintained');
maintained('src', 2, 'the source\'s partitions are maintained');
is($node->safe_psql('copy', q{SELECT count(*) FROM ingest.partitions WHERE event_table = 'ev'::regclass}),
	'4', 'the source\'s worker did not touch the copy');

run_ok('ALTER DATABASE src RENAME TO renamed', 'ALTER DATABASE ... RENAME succeeds while the database has a worker');
ok(worker_in_database($node, 'renamed'), 'the worker comes back to the renamed database');
maintained('renamed', 4, 'the renamed database\'s partitions are maintained');

# In a transaction block: the worker stays away until it ends.
run_ok(q{BEGIN; ALTER DATABASE renamed RENAME TO renamed_again; SELECT 1; COMMIT},
	'ALTER DATABASE ... RENAME in a transaction block succeeds');
ok(worker_in_database($node, 'renamed_again'), 'the worker comes back after the transaction');

my $ts = PostgreSQL::Test::Utils::tempdir;
$node->safe_psql('postgres', qq{CREATE TABLESPACE elsewhere LOCATION '$ts'});
run_ok('ALTER DATABASE renamed_again SET TABLESPACE elsewhere',
	'ALTER DATABASE ... SET TABLESPACE succeeds while the database has a worker');
is($node->safe_psql('postgres', q{SELECT t.spcname FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace
	WHERE d.datname = 'renamed_again'}), 'elsewhere', 'the database moved');
ok(worker_in_database($node, 'renamed_again'), 'the worker comes back after the move');
maintained('renamed_again', 5, 'the moved database\'s partitions are maintained');

# DROP DATABASE still works the same way, and the worker does not linger.
run_ok('DROP DATABASE copy', 'DROP DATABASE succeeds while the database has a worker');
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'ingest worker'}),
	'one worker left, for the remaining database');

ok(!$node->log_contains('terminated by signal'), 'no worker crashed');
$node->stop;
done_testing();
