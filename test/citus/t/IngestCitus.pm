# Shared by the Citus suite: a coordinator and two workers on this machine,
# with ingest created on the coordinator (Citus creates it on the workers),
# and psql helpers that keep stderr.
package IngestCitus;
use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use Test::More;
our @EXPORT = qw(citus_cluster try_sql refused shard_on);

# ($coordinator, $worker1, $worker2); @conf is added to every node's
# postgresql.conf
sub citus_cluster
{
	my (@conf) = @_;
	my @nodes;
	for my $name (qw(coordinator worker1 worker2))
	{
		my $node = PostgreSQL::Test::Cluster->new($name);
		$node->init;
		# Citus connects between nodes over TCP
		$node->append_conf('postgresql.conf', join("\n", q{
shared_preload_libraries = 'citus,ingest'
listen_addresses = 'localhost'
max_worker_processes = 32
citus.node_conninfo = 'sslmode=disable'
}, @conf) . "\n");
		$node->start;
		$node->safe_psql('postgres', 'CREATE EXTENSION citus');
		push @nodes, $node;
	}
	my ($coord, $w1, $w2) = @nodes;
	$coord->safe_psql('postgres', sprintf(q{
		SELECT citus_set_coordinator_host('localhost', %d);
		SELECT citus_add_node('localhost', %d);
		SELECT citus_add_node('localhost', %d);
		CREATE EXTENSION ingest;
	}, $coord->port, $w1->port, $w2->port));
	return @nodes;
}

# psql's exit code, stdout and stderr (verbose, with SQLSTATEs)
sub try_sql
{
	my ($node, $sql) = @_;
	my ($out, $err) = ('', '');
	my $rc = $node->psql('postgres', $sql,
		stdout => \$out, stderr => \$err,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return ($rc, $out, $err);
}

# $sql fails with $code (default 0A000) and a message matching $pattern.
# Citus's COPY reports a shard's error as XX000.
sub refused
{
	my ($node, $sql, $pattern, $name, $code) = @_;
	$code //= '0A000';
	my ($rc, $out, $err) = try_sql($node, $sql);
	ok($rc != 0 && $err =~ /ERROR:  $code: .*$pattern/s, $name)
	  or diag("rc $rc, stderr: $err");
	return;
}

# The name of the first shard of $table placed on $node, asked of $coord
sub shard_on
{
	my ($coord, $table, $node) = @_;
	return $coord->safe_psql('postgres', sprintf(q{
		SELECT shard_name(s.logicalrelid, s.shardid)
		  FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
		 WHERE s.logicalrelid = '%s'::regclass AND n.nodeport = %d
		 ORDER BY s.shardid LIMIT 1}, $table, $node->port));
}

1;
