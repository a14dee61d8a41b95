# The exporter query file (sql/monitoring/ingest_exporter.yaml): each query
# runs as a role with only pg_monitor, returns the columns its metrics name,
# and sees every managed table.
use strict;
use warnings;
use File::Basename;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $file = dirname(__FILE__) . '/../../sql/monitoring/ingest_exporter.yaml';
my (%query, %metrics, $name, $in_query);
open(my $fh, '<', $file) or die "$file: $!";
while (my $line = <$fh>)
{
	if ($line =~ /^(\w+):\s*$/) { $name = $1; $in_query = 0; next; }
	next unless defined $name;
	if ($line =~ /^  query: \|\s*$/) { $in_query = 1; next; }
	if ($line =~ /^  metrics:\s*$/) { $in_query = 0; next; }
	if ($in_query && $line =~ /^    (.*)$/) { $query{$name} .= "$1\n"; next; }
	push @{ $metrics{$name} }, $1 if $line =~ /^    - (\w+):\s*$/;
}
close $fh;
is_deeply([ sort keys %query ], [qw(ingest_loads ingest_rollups ingest_tables)], 'the file has its three queries');

my $node = PostgreSQL::Test::Cluster->new('monitoring');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
ingest.rollup_fold_interval = 1
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION ingest;
	CREATE ROLE owner1 LOGIN;
	GRANT CREATE ON SCHEMA public TO owner1;
	CREATE ROLE watcher LOGIN IN ROLE pg_monitor;
});
# load statistics are per hour: start clear of the next hour's turn
$node->safe_psql('postgres', q{SELECT pg_sleep(s + 1) FROM (SELECT 3600 - extract(epoch FROM clock_timestamp()) % 3600 AS s) t WHERE s < 60});
# a table the monitoring role cannot read
$node->safe_psql('postgres', q{
	SELECT ingest.create_event_table('billing');
	SELECT ingest.load('billing', format(E'00000000-0000-0000-0000-000000000001,t1,c,api,%1$s,{},1,\n'
	                                      '00000000-0000-0000-0000-000000000001,t1,c,api,%1$s,{},1,\n'
	                                      'bad,t2,c,api,%1$s,{},1,', now()));
}, extra_params => ['-U', 'owner1']);
ok($node->poll_query_until('postgres', q{SELECT last_maintenance IS NOT NULL FROM ingest.event_tables}),
	'the worker has run');

for my $q (sort keys %query)
{
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT string_agg(k, ',' ORDER BY o) FROM (SELECT * FROM ($query{$q}) q LIMIT 1) q, "
		  . "LATERAL json_object_keys(row_to_json(q)) WITH ORDINALITY AS j(k, o)",
		extra_params => ['-U', 'watcher']);
	is($rc, 0, "$q runs as a pg_monitor role") or diag($err);
	is($out, join(',', @{ $metrics{$q} }), "$q returns the columns its metrics name");
}
# what pg_monitor sees of a table it cannot read
my $loads = $query{ingest_loads};
$loads =~ s/pg_catalog.now\(\) - interval '1 hour'/pg_catalog.now()/;
is($node->safe_psql('postgres', "SELECT loaded || ' ' || duplicates || ' ' || rejected FROM ($loads) q",
		extra_params => ['-U', 'watcher']),
	'1 1 1', 'load statistics of every table (this hour)');
is($node->safe_psql('postgres', "SELECT runway_days >= 1 FROM ($query{ingest_tables}) q",
		extra_params => ['-U', 'watcher']),
	't', 'partition runway');
is($node->safe_psql('postgres', "SELECT count(*) FROM ($query{ingest_rollups}) q WHERE rollup = 'default'",
		extra_params => ['-U', 'watcher']),
	'1', 'rollup lag');

done_testing();
