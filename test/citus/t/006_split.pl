# Shard splits of a table distributed with ingest.distribute_table(), in
# block_writes mode: isolate_tenant_to_new_shard and
# citus_split_shard_by_split_points split the shard group (ledger and
# rollups with the events), the nodes adopt the new shards and forget the
# split one, and dedup, the ledger and usage stay exact for every write
# path after the split.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestCitus;

my ($coord, $w1, $w2) = my @nodes = citus_cluster('ingest.enabled = off');
$coord->safe_psql('postgres', q{
	SELECT ingest.create_event_table('ev', premake => 1);
	SELECT ingest.distribute_table('ev', shard_count => 2);
});
my $now = $coord->safe_psql('postgres', q{SELECT date_trunc('hour', now())::timestamptz(0)});
my @orgs = map { sprintf('00000000-0000-0000-0000-%012d', $_) } 1 .. 8;
my $cols = q{ARRAY['organization_id', 'transaction_id', 'external_customer_id', 'code', 'timestamp', 'value']};
my $copy_cols = 'organization_id, transaction_id, external_customer_id, code, "timestamp", value';
# keys tx-$from .. tx-$to of every organization, as csv
sub rows
{
	my ($from, $to) = @_;
	return join('', map { my $o = $_; map { "$o,tx-$_,c$_,api,$now,$_\n" } $from .. $to } @orgs);
}
my $distinct = q{SELECT count(*) || '/' || count(DISTINCT (organization_id, transaction_id)) FROM ev};
my $shards = q{SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'ev'::regclass};

is($coord->safe_psql('postgres', qq{SELECT loaded FROM ingest.load('ev', \$\$@{[ rows(1, 10) ]}\$\$, 'csv', false, $cols)}),
	'80', 'loaded before the splits');

# one organization to a shard of its own, then the other shard split in two
my ($rc, $out, $err) = try_sql($coord, qq{
	SELECT isolate_tenant_to_new_shard('ev', '$orgs[0]'::uuid, cascade_option => 'CASCADE',
	                                   shard_transfer_mode => 'block_writes')});
is($rc, 0, 'isolate_tenant_to_new_shard (block_writes)') or diag($err);
($rc, $out, $err) = try_sql($coord, q{
	SELECT citus_split_shard_by_split_points(s.shardid, ARRAY[((s.shardminvalue::bigint + s.shardmaxvalue::bigint) / 2)::text],
	                                         ARRAY[n.nodeid, n.nodeid], shard_transfer_mode => 'block_writes')
	  FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
	 WHERE s.logicalrelid = 'ev'::regclass
	 ORDER BY s.shardmaxvalue::bigint - s.shardminvalue::bigint DESC LIMIT 1});
is($rc, 0, 'citus_split_shard_by_split_points (block_writes)') or diag($err);
is($coord->safe_psql('postgres', $shards), '5', 'the table has five shards now');
is($coord->safe_psql('postgres', q{SELECT count(DISTINCT colocationid) FROM pg_dist_partition
	WHERE logicalrelid IN ('ev'::regclass, 'ingest_side.ev_keys'::regclass, 'ingest_side.ev_rollup'::regclass,
	                       'ingest_side.ev_deltas'::regclass, 'ingest_side.ev_stale'::regclass, 'ingest_side.ev_daily'::regclass)}),
	'1', 'its side tables were split with it, still colocated');
is(ledger_mismatches($coord, 'ev'), '0', 'the ledger holds exactly the keys of the events');

# Every write path after the splits: stored keys skipped, new ones stored.
is($coord->safe_psql('postgres', qq{
	SELECT loaded || '/' || duplicates FROM ingest.load('ev', \$\$@{[ rows(8, 12) ]}\$\$, 'csv', false, $cols)}),
	'16/24', 'ingest.load after the splits: only the new keys');
($rc, $out, $err) = try_sql($coord, "COPY ev ($copy_cols) FROM STDIN (FORMAT csv);\n" . rows(11, 14) . "\\.\n");
is($rc, 0, 'COPY after the splits') or diag($err);
($rc, $out, $err) = try_sql($coord, qq{INSERT INTO ev ($copy_cols) VALUES
	('$orgs[0]', 'tx-1', 'c1', 'api', '$now', 1), ('$orgs[0]', 'tx-15', 'c1', 'api', '$now', 15),
	('$orgs[5]', 'tx-2', 'c1', 'api', '$now', 2), ('$orgs[5]', 'tx-15', 'c1', 'api', '$now', 15)});
is($rc, 0, 'INSERT after the splits') or diag($err);
is($coord->safe_psql('postgres', $distinct), '114/114', 'stored rows are the distinct keys cluster-wide');
is(ledger_mismatches($coord, 'ev'), '0', 'the ledger still holds exactly the keys of the events');

# Each node manages the shards it holds, with the old ones gone once
# Citus drops them.
$coord->safe_psql('postgres', 'CALL citus_cleanup_orphaned_resources()');
my @adopted;
for my $w ($w1, $w2)
{
	push @adopted, split /\n/, $w->safe_psql('postgres', q{SET citus.override_table_visibility = off;
		SELECT event_table::text FROM ingest.table_config WHERE managed_by = 'citus_shard'});
	$w->safe_psql('postgres', q{SET citus.override_table_visibility = off; SELECT ingest.fold_rollups()});
}
my %current = map { $_ => 1 } split /\n/, $coord->safe_psql('postgres',
	q{SELECT shard_name('ev', shardid) FROM pg_dist_shard WHERE logicalrelid = 'ev'::regclass});
is(join(' ', grep { !$current{$_} } @adopted), '', 'no node manages a shard that is gone');
my %adopted = map { $_ => 1 } @adopted;
is(join(' ', grep { !$adopted{$_} } split /\n/, $coord->safe_psql('postgres', q{
	SELECT DISTINCT shard_name('ev', get_shard_id_for_distribution_column('ev', organization_id)) FROM ev})),
	'', 'and every shard with events is managed on its node');

for my $o (@orgs[0, 3, 5])
{
	usage_is_raw($coord, 'ev', $o, "usage of organization $o after the splits equals the raw events");
}
is($coord->safe_psql('postgres', q{SELECT count(*) FROM ingest.rollup_verify('ev',
		date_trunc('hour', now()) - interval '1 day', date_trunc('hour', now()) + interval '1 day')}),
	'0', 'rollup_verify after the splits');

$_->stop for @nodes;
done_testing();
