# ingest's worker on every node adopts the shards the node holds of a
# distributed managed table by itself, before anything writes them (a
# writer that adopts a shard holds the adoption until its transaction
# ends), including the shards of a shard split, without waiting for a
# writer that is adopting one; and each node folds the deltas of its
# shards.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestCitus;

# the workers start once the table is distributed, with nothing written
my ($coord, $w1, $w2) = my @nodes = citus_cluster('ingest.enabled = off', 'ingest.rollup_fold_interval = 1', 'ingest.maintenance_interval = 2');
$coord->safe_psql('postgres', q{
	SELECT ingest.create_event_table('ev', premake => 1);
	SELECT ingest.distribute_table('ev', shard_count => 4);
});

# the shards of ev on $node, and those $node manages, as sorted lists
sub placed
{
	my ($node) = @_;
	return $coord->safe_psql('postgres', sprintf(q{
		SELECT string_agg(shard_name(s.logicalrelid, s.shardid), ' ' ORDER BY shard_name(s.logicalrelid, s.shardid))
		  FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
		 WHERE s.logicalrelid = 'ev'::regclass AND n.nodeport = %d}, $node->port));
}
my $managed = q{SELECT string_agg(event_table::text, ' ' ORDER BY event_table::text) FROM ingest.table_config WHERE managed_by = 'citus_shard'};

# distribute_table's own work on the shards adopted them; forgotten here,
# they are the shards a node has not adopted yet (made or moved in since
# its worker's last fold)
for my $w ($w1, $w2)
{
	$w->safe_psql('postgres', q{DELETE FROM ingest.table_config WHERE managed_by = 'citus_shard'});
}
is(join('|', map { $_->safe_psql('postgres', $managed) // '' } ($w1, $w2)), '|', 'the worker nodes manage no shard, their workers off');

# A writer that adopted its shard, not committed yet: the workers adopt
# every other shard meanwhile, without waiting for it.
my $now = $coord->safe_psql('postgres', q{SELECT date_trunc('hour', now())::timestamptz(0)});
my $org = '00000000-0000-0000-0000-000000000005';
my $held = $coord->safe_psql('postgres', qq{SELECT shard_name('ev', get_shard_id_for_distribution_column('ev', '$org'::uuid))});
my $writer = $coord->background_psql('postgres');
$writer->query_safe('BEGIN');
$writer->query_safe(qq{INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('$org', 'held', 'c', 'api', '$now', 1)});
for my $node (@nodes)
{
	$node->safe_psql('postgres', 'ALTER SYSTEM SET ingest.enabled = on; SELECT pg_reload_conf()');
}
for my $w ($w1, $w2)
{
	my $want = join(' ', grep { $_ ne $held } split / /, placed($w));
	ok($w->poll_query_until('postgres', $managed, $want),
		'a worker node adopts the shards it holds before any write, but the one a writer is adopting: ' . $want);
}
$writer->query_safe('COMMIT');
$writer->quit;
for my $w ($w1, $w2)
{
	my $want = placed($w);
	ok($w->poll_query_until('postgres', $managed, $want), 'and that one once the writer commits: ' . $want);
}

# a split's new shards are adopted the same way, and the split one forgotten
my ($rc, $out, $err) = try_sql($coord, q{
	SELECT isolate_tenant_to_new_shard('ev', '00000000-0000-0000-0000-000000000001'::uuid,
	                                   cascade_option => 'CASCADE', shard_transfer_mode => 'block_writes')});
is($rc, 0, 'isolate_tenant_to_new_shard') or diag($err);
$coord->safe_psql('postgres', 'CALL citus_cleanup_orphaned_resources()');
for my $w ($w1, $w2)
{
	my $want = placed($w);
	ok($w->poll_query_until('postgres', $managed, $want),
		'after a split, a worker node manages the shards it holds: ' . $want);
}

# each node's worker folds the deltas of its shards
($rc, $out, $err) = try_sql($coord, "COPY ev (organization_id, transaction_id, external_customer_id, code, \"timestamp\", value) FROM STDIN (FORMAT csv);\n"
	  . join('', map { sprintf("00000000-0000-0000-0000-%012d,tx-%d,c,api,%s,%d\n", $_ % 7, $_, $now, $_) } 1 .. 70)
	  . "\\.\n");
is($rc, 0, 'COPY from the coordinator') or diag($err);
ok($coord->poll_query_until('postgres', q{SELECT count(*) = 0 FROM ingest_side.ev_deltas}),
	'the nodes\' workers fold every delta');
usage_is_raw($coord, 'ev', '00000000-0000-0000-0000-000000000003', 'usage after their folds equals the raw events');
for my $node (@nodes)
{
	unlike(slurp_file($node->logfile), qr/could not (adopt|list the Citus shards)/, 'no node logged a failed adoption');
}

$_->stop for @nodes;
done_testing();
