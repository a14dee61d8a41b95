# Shared by the Citus suite: a coordinator and two workers on this machine,
# with ingest created on the coordinator (Citus creates it on the workers),
# and psql helpers that keep stderr.
package IngestCitus;
use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use Test::More;
our @EXPORT = qw(citus_cluster try_sql refused shard_on ledger_mismatches backdate_sql usage_is_raw);

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

# Events without a key in the ledger of managed table $table, and keys
# without an event, asked of $coord (0 when the ledger is exact)
sub ledger_mismatches
{
	my ($coord, $table) = @_;
	my $ledger = $coord->safe_psql('postgres',
		"SELECT ledger FROM ingest.table_config WHERE event_table = '$table'::regclass");
	return $coord->safe_psql('postgres', qq{
		SELECT count(*) FROM $table e FULL JOIN $ledger k USING (organization_id, transaction_id)
		 WHERE e.organization_id IS NULL OR k.organization_id IS NULL});
}

# ingest.usage of organization $org over the day around now, asked of
# $coord, equals the aggregation of $table's raw events, per code and
# customer
sub usage_is_raw
{
	my ($coord, $table, $org, $name) = @_;
	return is($coord->safe_psql('postgres', qq{
		SELECT string_agg(code || '/' || external_customer_id || ':' || events || ':' || value_sum, ' '
		                  ORDER BY code, external_customer_id)
		  FROM ingest.usage('$table', '$org', date_trunc('hour', now()) - interval '1 day',
		                    date_trunc('hour', now()) + interval '1 day')}),
		$coord->safe_psql('postgres', qq{
		SELECT string_agg(code || '/' || external_customer_id || ':' || n || ':' || s, ' '
		                  ORDER BY code, external_customer_id)
		  FROM (SELECT code, external_customer_id, count(*) AS n, sum(value)::numeric AS s
		          FROM $table WHERE organization_id = '$org' GROUP BY 1, 2) r}),
		$name);
}

# SQL that attaches to $table a partition $part of the UTC day $days ago
sub backdate_sql
{
	my ($table, $part, $days) = @_;
	return qq{
	CREATE TABLE $part (LIKE $table);
	ALTER TABLE $table ATTACH PARTITION $part
	  FOR VALUES FROM (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '$days days')
	  TO (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '@{[$days - 1]} days');};
}

1;
