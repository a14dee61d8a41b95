# ingest.load and ingest.load_file of a table distributed with
# ingest.distribute_table(), called on the coordinator: csv, jsonl and
# binary payloads with in-batch, stored and re-stamped duplicates and bad
# rows store each key once on its shard, report what they stored, set bad
# rows aside, keep the ledger and rollups exact, check the caller's
# privileges as COPY does, wait for keys another session is loading, and
# fail cleanly when they deadlock with another transaction.
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
	SELECT ingest.create_event_table('ev', premake => 2);
	SELECT ingest.distribute_table('ev', shard_count => 4);
});
my $now = $coord->safe_psql('postgres', q{SELECT date_trunc('hour', now())::timestamptz(0)});
my $later = $coord->safe_psql('postgres', qq{SELECT '$now'::timestamptz + interval '1 hour'});
my @orgs = map { sprintf('00000000-0000-0000-0000-%012d', $_) } 1 .. 6;
my $cols = q{ARRAY['organization_id', 'transaction_id', 'external_customer_id', 'code', 'timestamp', 'value']};
my $distinct = q{SELECT count(*) || '/' || count(DISTINCT (organization_id, transaction_id)) FROM ev};

# csv: every organization, an in-batch duplicate each, and four bad rows
my $csv = '';
for my $o (@orgs)
{
	$csv .= join('', map { "$o,tx-$_,c$_,api,$now,$_\n" } 1 .. 5);
	$csv .= "$o,tx-1,c1,api,$later,9\n";		# re-stamped in the batch
}
$csv .= "$orgs[0],tx-bad1,c1,api,2100-01-01,1\n";	# no partition
$csv .= "$orgs[0],tx-bad2,c1,api,not a time,1\n";	# not a timestamp
$csv .= "$orgs[0],tx-bad3,c1,api\n";				# too few fields
$csv .= ",tx-bad4,c1,api,$now,1\n";				# no organization
is($coord->safe_psql('postgres', qq{
	SELECT loaded || '/' || duplicates || '/' || rejected || '/' || coalesce(conflicts::text, 'null')
	  FROM ingest.load('ev', \$\$$csv\$\$, 'csv', false, $cols)}),
	'30/6/4/null', 'ingest.load (csv) on the coordinator: stored, duplicates, rejected; conflicts unknown');
is($coord->safe_psql('postgres', $distinct), '30/30', 'each key stored once');
is($coord->safe_psql('postgres', qq{SELECT value FROM ev WHERE organization_id = '$orgs[3]' AND transaction_id = 'tx-1'}),
	'1', 'the first of a key\'s rows in the batch is the one stored');
is($coord->safe_psql('postgres', q{SELECT string_agg(sqlstate, ' ' ORDER BY line_number) FROM ingest.rejects WHERE event_table = 'ev'::regclass}),
	'23514 22007 22P04 23502', 'the bad rows are in the coordinator\'s ingest.rejects, with their reasons');

# jsonl: stored keys (one re-stamped) and new ones
my $jsonl = '';
for my $o (@orgs)
{
	$jsonl .= qq({"organization_id": "$o", "transaction_id": "tx-2", "external_customer_id": "c2", "code": "api", "timestamp": "$now", "value": 2}\n);
	$jsonl .= qq({"organization_id": "$o", "transaction_id": "tx-3", "external_customer_id": "c3", "code": "api", "timestamp": "$later", "value": 3}\n);
	$jsonl .= qq({"organization_id": "$o", "transaction_id": "tx-6", "external_customer_id": "c1", "code": "api", "timestamp": "$later", "value": 6}\n);
}
is($coord->safe_psql('postgres', qq{
	SELECT loaded || '/' || duplicates || '/' || rejected FROM ingest.load('ev', \$\$$jsonl\$\$, 'jsonl')}),
	'6/12/0', 'ingest.load (jsonl): only the new keys are stored');

# binary, from a file and as bytea: stored keys and new ones
my $file = $coord->data_dir . '/ev.bin';
$coord->safe_psql('postgres', qq{
	COPY (SELECT o::uuid, 'tx-' || i, 'c1', 'api', '$now'::timestamptz, '{}'::jsonb, i::float8, NULL::numeric
	        FROM unnest(ARRAY['$orgs[0]', '$orgs[5]']) o, generate_series(5, 8) i)
	  TO '$file' WITH (FORMAT binary)});
my $binary_cols = q{ARRAY['organization_id', 'transaction_id', 'external_customer_id', 'code', 'timestamp', 'properties', 'value', 'decimal_value']};
is($coord->safe_psql('postgres', qq{
	SELECT loaded || '/' || duplicates FROM ingest.load_file('ev', '$file', 'binary', false, $binary_cols)}),
	'4/4', 'ingest.load_file (binary): tx-5 and tx-6 were stored, tx-7 and tx-8 are new');
is($coord->safe_psql('postgres', qq{
	SELECT loaded || '/' || duplicates FROM ingest.load('ev', pg_read_binary_file('$file'), 'binary', false, $binary_cols)}),
	'0/8', 'ingest.load (binary bytea) of the same rows: all duplicates');

# on_error => 'abort': one bad row and nothing of the call is stored
my ($rc, $out, $err) = try_sql($coord, qq{
	SELECT * FROM ingest.load('ev', \$\$$orgs[1],tx-40,c1,api,$now,1
$orgs[1],tx-41,c1,api,never,1
\$\$, 'csv', false, $cols, on_error => 'abort')});
ok($rc != 0 && $err =~ /22007/, 'on_error => abort fails the call on a bad row') or diag($err);
is($coord->safe_psql('postgres', q{SELECT count(*) FROM ev WHERE transaction_id = 'tx-40'}), '0',
	'and stores none of its rows');

# more rows than one INSERT takes: 60,000 keys, then each re-stamped
my $big = $coord->data_dir . '/big.csv';
$coord->safe_psql('postgres', qq{
	COPY (SELECT o::uuid, 'big-' || i, 'c' || i % 100, 'api', '$now'::timestamptz + g * interval '1 hour', i
	        FROM generate_series(0, 1) g, generate_series(1, 60000) i,
	             LATERAL (SELECT (ARRAY['$orgs[0]', '$orgs[1]', '$orgs[2]', '$orgs[3]'])[1 + i % 4] AS o) x
	       ORDER BY g, i)
	  TO '$big' WITH (FORMAT csv)});
is($coord->safe_psql('postgres', qq{
	SELECT loaded || '/' || duplicates FROM ingest.load_file('ev', '$big', 'csv', false, $cols)}),
	'60000/60000', 'a load of 120,000 rows: 60,000 stored, their re-stamped copies skipped');
is($coord->safe_psql('postgres', $distinct), '60040/60040', 'stored rows are the distinct keys cluster-wide');
is(ledger_mismatches($coord, 'ev'), '0', 'the ledger holds exactly the keys of the events');

# privileges as COPY checks them: INSERT on the table
$coord->safe_psql('postgres', q{CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; GRANT INSERT ON ev TO alice});
my $alice_csv = "$orgs[4],tx-50,c1,api,$now,50\n$orgs[4],tx-1,c1,api,$now,1\n";
is($coord->safe_psql('postgres', qq{SET ROLE alice;
	SELECT loaded || '/' || duplicates FROM ingest.load('ev', \$\$$alice_csv\$\$, 'csv', false, $cols)}),
	'1/1', 'a role with INSERT only loads');
refused($coord, qq{SET ROLE bob; SELECT * FROM ingest.load('ev', \$\$$alice_csv\$\$, 'csv', false, $cols)},
	qr/permission denied for table ev/, 'a role without INSERT is refused', '42501');
# in a transaction with other writes and reads of the caller's
is($coord->safe_psql('postgres', qq{SET ROLE alice; BEGIN;
	INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('$orgs[4]', 'tx-60', 'c1', 'api', '$now', 60);
	SELECT loaded || '/' || duplicates FROM ingest.load('ev', \$\$$orgs[4],tx-60,c1,api,$now,60\n$orgs[4],tx-61,c1,api,$now,61\n\$\$, 'csv', false, $cols);
	COMMIT;}),
	'1/1', 'a load in a transaction that wrote the same shard before');
# the columns not named take the load's defaults, each evaluated once
# (Citus refuses column-level grants on a distributed table)
my $ids = q{SELECT last_value FROM ev_id_seq};
my $before = $coord->safe_psql('postgres', $ids);
is($coord->safe_psql('postgres', qq{SET ROLE alice;
	SELECT loaded || '/' || duplicates FROM ingest.load('ev', \$\$$orgs[4],tx-51,c1,api,$now,51\n$orgs[4],tx-52,c1,api,$now,52\n\$\$, 'csv', false, $cols)}),
	'2/0', 'a load by a role with INSERT only');
is($coord->safe_psql('postgres', $ids) - $before, 2, 'one identity value per row');
is($coord->safe_psql('postgres', qq{SELECT string_agg((id - $before)::text, ' ' ORDER BY id) FROM ev WHERE transaction_id IN ('tx-51', 'tx-52')}),
	'1 2', 'the rows stored carry the identity values the load took');

# Two sessions, overlapping keys of one organization: the load waits for
# the keys of an uncommitted INSERT, then stores only the others.
my $org = $orgs[5];
my $a = $coord->background_psql('postgres');
$a->query_safe('BEGIN');
$a->query_safe(qq{INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	SELECT '$org', 'ov-' || i, 'c', 'api', '$now', i FROM generate_series(1, 10) i});
my $overlap = join('', map { "$org,ov-$_,c,api,$now,$_\n" } 5 .. 15);
my $b = $coord->background_psql('postgres');
$b->query_until(qr/started/, "\\echo started\nSELECT 'counts:' || loaded || '/' || duplicates FROM ingest.load('ev', \$\$$overlap\$\$, 'csv', false, $cols);\n\\echo finished\n");
ok($coord->poll_query_until('postgres', q{SELECT count(*) > 0 FROM citus_lock_waits}),
	'the load waits for the other session\'s keys');
$a->query_safe('COMMIT');
my $result = $b->query_until(qr/finished/, '');
like($result, qr{counts:5/6}, 'and then stores only the keys the other did not');
$a->quit;
$b->quit;
is($coord->safe_psql('postgres', qq{SELECT count(*) || '/' || count(DISTINCT transaction_id) FROM ev WHERE organization_id = '$org' AND transaction_id LIKE 'ov-%'}),
	'15/15', 'each key once');

# Loads of different keys do not wait for each other, though both write
# the same shards: each statement writes one shard, which takes none of
# Citus's locks for multi-shard writes (held until commit).
$a = $coord->background_psql('postgres');
$a->query_safe('BEGIN');
$a->query_safe(qq{SELECT * FROM ingest.load('ev', \$\$@{[ join('', map { "$_,par-a,c,api,$now,1\n" } @orgs) ]}\$\$, 'csv', false, $cols)});
is($coord->safe_psql('postgres', qq{SET lock_timeout = '5s';
	SELECT loaded FROM ingest.load('ev', \$\$@{[ join('', map { "$_,par-b,c,api,$now,1\n" } @orgs) ]}\$\$, 'csv', false, $cols)}),
	'6', 'a load does not wait for another\'s uncommitted load of other keys on the same shards');
$a->query_safe('COMMIT');
$a->quit;

# A load that deadlocks with another transaction fails, as an INSERT does,
# and stores nothing.  The load writes shard after shard in shard order:
# it takes dl-1 on the first shard, then waits for dl-2, which the other
# transaction holds on the second and which then waits for dl-1.
my ($org1, $org2) = split /\|/, $coord->safe_psql('postgres', q{
	SELECT string_agg(o::text, '|' ORDER BY s) FROM (
	  SELECT DISTINCT ON (s) o, s
	    FROM (SELECT o, get_shard_id_for_distribution_column('ev', o) AS s
	            FROM unnest(ARRAY['00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002',
	                              '00000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000004',
	                              '00000000-0000-0000-0000-000000000005', '00000000-0000-0000-0000-000000000006']::uuid[]) o) x
	   ORDER BY s, o LIMIT 2) y});
my $insert = qq{INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value) VALUES};
$a = $coord->background_psql('postgres', on_error_stop => 0);
$a->query_safe('BEGIN');
$a->query_safe(qq{$insert ('$org2', 'dl-2', 'c', 'api', '$now', 2)});
$b = $coord->background_psql('postgres', on_error_stop => 0);
$b->query_until(qr/started/, "\\set VERBOSITY verbose\n\\echo started\nSELECT * FROM ingest.load('ev', \$\$$org2,dl-2,c,api,$now,2\n$org1,dl-1,c,api,$now,1\n\$\$, 'csv', false, $cols);\n\\echo finished\n");
ok($coord->poll_query_until('postgres', q{SELECT count(*) > 0 FROM citus_lock_waits}),
	'the load holds dl-1 and waits for dl-2');
$a->query_safe(qq{$insert ('$org1', 'dl-1', 'c', 'api', '$now', 1)});
$a->query_safe('COMMIT');
$b->query_until(qr/finished/, '');
like($b->{stderr}, qr/40P01: canceling the transaction since it was involved in a distributed deadlock/,
	'the load fails with 40P01: Citus cancels it as a deadlock');
$a->quit;
$b->quit;
is($coord->safe_psql('postgres', q{SELECT count(*) FROM ev WHERE transaction_id IN ('dl-1', 'dl-2')}), '2',
	'the other transaction stored both keys');
is(ledger_mismatches($coord, 'ev'), '0', 'the ledger holds exactly the keys of the events');

# rollups: each node folds its shards; usage equals raw aggregation
for my $w ($w1, $w2)
{
	$w->safe_psql('postgres', q{SET citus.override_table_visibility = off; SELECT ingest.fold_rollups()});
}
for my $o (@orgs)
{
	usage_is_raw($coord, 'ev', $o, "usage of organization $o equals the raw events");
}
# the cluster-wide rejects and load statistics
is($coord->safe_psql('postgres', q{SELECT string_agg(node || ':' || sqlstate, ' ' ORDER BY line_number) FROM ingest.cluster_rejects('ev')}),
	'local:23514 local:22007 local:22P04 local:23502', 'cluster_rejects has the rejects of ingest.load, kept on the coordinator');
is($coord->safe_psql('postgres', q{SELECT sum(loaded) FROM ingest.cluster_load_stats('ev')}),
	$coord->safe_psql('postgres', q{SELECT count(*) FROM ev}),
	'cluster_load_stats: the rows loaded on all nodes are the rows stored');
is($coord->safe_psql('postgres', q{SELECT sum(rejected) FROM ingest.cluster_load_stats('ev')}), '4',
	'and the rows rejected');

is($coord->safe_psql('postgres', q{SELECT count(*) FROM ingest.rollup_verify('ev',
		date_trunc('hour', now()) - interval '1 day', date_trunc('hour', now()) + interval '2 days')}),
	'0', 'rollup_verify finds every shard exact');

$_->stop for @nodes;
done_testing();
