# pg_stat_statements sees COPYs that ingest loads when ingest is listed
# first in shared_preload_libraries; listed after it, ingest warns at start.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('pgss');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest, pg_stat_statements'
pg_stat_statements.track_utility = on
ingest.enabled = off
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION ingest;
	CREATE EXTENSION pg_stat_statements;
	SELECT ingest.create_event_table('ev');
	ALTER TABLE ev ALTER COLUMN "timestamp" SET DEFAULT now();
});

my $copy = q{COPY ev (organization_id, transaction_id, external_customer_id, code) FROM STDIN (FORMAT csv)};
sub load_copy
{
	my ($rc, $out, $err) = $node->psql('postgres', "$copy;\n"
		  . "00000000-0000-0000-0000-000000000001,t1,c,api\n"
		  . "00000000-0000-0000-0000-000000000001,t2,c,api\n"
		  . "00000000-0000-0000-0000-000000000001,t1,c,api\n\\.\n");
	return $err;
}
like(load_copy(), qr/duplicate rows skipped: 1/, 'the COPY went through the loader');
is($node->safe_psql('postgres', qq{SELECT calls || ' ' || rows FROM pg_stat_statements WHERE query = '$copy'}),
	'1 2', 'pg_stat_statements counts the COPY and the rows it loaded');

# Listed after pg_stat_statements, ingest warns at start.
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', q{'pg_stat_statements, ingest'});
my $log_offset = -s $node->logfile;
$node->restart;
ok($node->log_contains('ingest is loaded after another library that hooks utility statements', $log_offset),
	'a wrong order is warned about at start');
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', q{'ingest, pg_stat_statements'});
$log_offset = -s $node->logfile;
$node->restart;
ok(!$node->log_contains('ingest is loaded after another library', $log_offset),
	'the right order is not');

done_testing();
