# With ingest's worker running on every node: each node adopts the shards
# it holds of a distributed managed table by itself, before anything
# writes them (a writer that adopts a shard holds the adoption until its
# transaction ends), including the shards of a shard split; and each node
# folds the deltas of its shards.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestCitus;

my ($coord, $w1, $w2) = my @nodes = citus_cluster('ingest.enabled = on', 'ingest.rollup_fold_interval = 1', 'ingest.maintenance_interval = 2');
$coord->safe_psql('postgres', q{
	SELECT ingest.create_event_table('ev', premake => 1);
	SELECT ingest.distribute_table('ev', shard_count => 4);
});

# the shards of ev on $node, and those $node manages, as sorted lists
sub placed
{
	my ($node) = @_;
	return $coord->safe_psql('postgres', sprintf(q{
		SELECT string_agg(shard_name(s.logicalrelid, s.shardid), ' ' ORDER BY 1)
		  FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
		 WHERE s.logicalrelid = 'ev'::regclass AND n.nodeport = %d}, $node->port));
}
my $managed = q{SELECT string_agg(event_table::text, ' ' ORDER BY 1) FROM ingest.table_config WHERE managed_by = 'citus_shard'};

for my $w ($w1, $w2)
{
	my $want = placed($w);
	ok($w->poll_query_until('postgres', $managed, $want),
		'a worker node adopts the shards it holds before any write: ' . $want);
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
my $now = $coord->safe_psql('postgres', q{SELECT date_trunc('hour', now())::timestamptz(0)});
($rc, $out, $err) = try_sql($coord, "COPY ev (organization_id, transaction_id, external_customer_id, code, \"timestamp\", value) FROM STDIN (FORMAT csv);\n"
	  . join('', map { sprintf("00000000-0000-0000-0000-%012d,tx-%d,c,api,%s,%d\n", $_ % 7, $_, $now, $_) } 1 .. 70)
	  . "\\.\n");
is($rc, 0, 'COPY from the coordinator') or diag($err);
ok($coord->poll_query_until('postgres', q{SELECT count(*) = 0 FROM ingest_side.ev_deltas}),
	'the nodes\' workers fold every delta');
usage_is_raw($coord, 'ev', '00000000-0000-0000-0000-000000000003', 'usage after their folds equals the raw events');
for my $w ($w1, $w2)
{
	unlike(slurp_file($w->logfile), qr/could not adopt/, 'no node logged a failed adoption');
}

$_->stop for @nodes;
done_testing();
