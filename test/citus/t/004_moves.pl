# A table distributed with ingest.distribute_table() under operations:
# two coordinator sessions loading overlapping keys of one organization
# store each key once; after citus_move_shard_placement of a shard group
# (block_writes, the mode the README recommends) the ledger and rollups
# moved with it: duplicates of stored keys are still skipped on the new
# node (COPY, INSERT and ingest.load), usage stays exact, and the old node
# lets go of the old placement.
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
	SELECT ingest.distribute_table('ev', shard_count => 4);
});
my $org = '00000000-0000-0000-0000-000000000007';
my $now = $coord->safe_psql('postgres', q{SELECT date_trunc('hour', now())::timestamptz(0)});
my $cols = 'organization_id, transaction_id, external_customer_id, code, "timestamp", value';
sub rows { my ($from, $to) = @_; return join('', map { "$org,tx-$_,c,api,$now,$_\n" } $from .. $to); }

# Two sessions, overlapping keys: the second (COPY) waits for the keys
# of the first (INSERT, not committed yet).
my $a = $coord->background_psql('postgres');
$a->query_safe('BEGIN');
$a->query_safe(qq{INSERT INTO ev ($cols) SELECT '$org', 'tx-' || i, 'c', 'api', '$now', i FROM generate_series(1, 10) i});
my $b = $coord->background_psql('postgres');
$b->query_until(qr/started/, "\\echo started\nCOPY ev ($cols) FROM STDIN (FORMAT csv);\n" . rows(5, 15) . "\\.\n\\echo finished\n");
ok($coord->poll_query_until('postgres', q{SELECT count(*) > 0 FROM citus_lock_waits}),
	'the second session waits for the first');
$a->query_safe('COMMIT');
$b->query_until(qr/finished/, '');
$a->quit;
$b->quit;
is($coord->safe_psql('postgres', qq{SELECT count(*) || '/' || count(DISTINCT transaction_id) FROM ev WHERE organization_id = '$org'}),
	'15/15', 'overlapping loads from two sessions store each key once');

# Move the organization's shard group to the other node.
my ($shardid, $from) = split /\|/, $coord->safe_psql('postgres', qq{
	SELECT s.shardid, n.nodeport FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
	 WHERE s.shardid = get_shard_id_for_distribution_column('ev', '$org')});
my ($src, $dst) = $from == $w1->port ? ($w1, $w2) : ($w2, $w1);
my ($rc, $out, $err) = try_sql($coord, sprintf(q{
	SELECT citus_move_shard_placement(%d, 'localhost', %d, 'localhost', %d, shard_transfer_mode => 'block_writes')},
	$shardid, $src->port, $dst->port));
is($rc, 0, 'citus_move_shard_placement (block_writes)') or diag($err);
is($coord->safe_psql('postgres', qq{
	SELECT n.nodeport FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) WHERE p.shardid = $shardid}),
	$dst->port, 'the shard group is on the other node');
is($coord->safe_psql('postgres', qq{SELECT count(*) FROM ingest_side.ev_keys WHERE organization_id = '$org'}),
	'15', 'its ledger moved with it');

# The stored keys again, and new ones: only the new ones are stored.
($rc, $out, $err) = try_sql($coord, "COPY ev ($cols) FROM STDIN (FORMAT csv);\n" . rows(1, 20) . "\\.\n");
is($rc, 0, 'COPY after the move') or diag($err);
($rc, $out, $err) = try_sql($coord, qq{INSERT INTO ev ($cols) VALUES ('$org', 'tx-3', 'c', 'api', '$now', 3), ('$org', 'tx-21', 'c', 'api', '$now', 21)});
is($rc, 0, 'INSERT after the move') or diag($err);
is($coord->safe_psql('postgres', qq{SELECT loaded || '/' || duplicates FROM ingest.load('ev', \$\$@{[ rows(18, 25) ]}\$\$, 'csv', false,
		ARRAY['organization_id', 'transaction_id', 'external_customer_id', 'code', 'timestamp', 'value'])}),
	'4/4', 'ingest.load after the move stores only the new keys');
is($coord->safe_psql('postgres', qq{SELECT count(*) || '/' || count(DISTINCT transaction_id) FROM ev WHERE organization_id = '$org'}),
	'25/25', 'duplicates of keys stored before the move are skipped on the new node');
is(ledger_mismatches($coord, 'ev'), '0', 'the ledger holds exactly the keys of the events');

for my $w ($w1, $w2)
{
	$w->safe_psql('postgres', q{SET citus.override_table_visibility = off; SELECT ingest.fold_rollups()});
}
usage_is_raw($coord, 'ev', $org, 'usage after the move equals the raw events');

is($coord->safe_psql('postgres', q{SELECT count(*) FROM ingest.rollup_verify('ev',
		date_trunc('hour', now()) - interval '1 day', date_trunc('hour', now()) + interval '1 day')}),
	'0', 'rollup_verify after the move');

# The old placement goes, and the old node forgets it.
$coord->safe_psql('postgres', q{CALL citus_cleanup_orphaned_resources()});
is($src->safe_psql('postgres', qq{SET citus.override_table_visibility = off;
	SELECT count(*) FROM ingest.table_config WHERE event_table::text LIKE '%\\_$shardid'}),
	'0', 'the old node let go of the old placement');

$_->stop for @nodes;
done_testing();
