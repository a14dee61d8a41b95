# A managed table distributed with ingest.distribute_table(): its key
# ledger and rollups are colocated with it, each node adopts the shards it
# holds as managed tables of its own, and every write path through the
# coordinator deduplicates exactly cluster-wide: COPY from psql (Citus's
# COPY, loaded on each shard by ingest's hook) and plain INSERT (ingest's
# triggers on the shards).  Each node folds its shards; ingest.usage on the
# coordinator equals the raw aggregation.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use FindBin;
use lib $FindBin::RealBin;
use IngestCitus;

my ($coord, $w1, $w2) = my @nodes = citus_cluster('ingest.enabled = off');

$coord->safe_psql('postgres', q{
	SELECT ingest.create_event_table('ev', premake => 2);
	SELECT ingest.distribute_table('ev', shard_count => 4);
});
is($coord->safe_psql('postgres', q{
	SELECT string_agg(c.logicalrelid::text || ':' || column_to_column_name(c.logicalrelid, c.partkey), ' '
	                  ORDER BY c.logicalrelid::text)
	  FROM pg_dist_partition c
	 WHERE c.colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'ev'::regclass)
	   AND c.logicalrelid::text NOT LIKE 'ev_p%'}),
	'ev:organization_id ingest_side.ev_daily:organization_id ingest_side.ev_deltas:organization_id ingest_side.ev_keys:organization_id ingest_side.ev_rollup:organization_id ingest_side.ev_stale:organization_id',
	'the table and its side tables are distributed by organization_id, colocated');

my $now = $coord->safe_psql('postgres', q{SELECT date_trunc('hour', now())::timestamptz(0)});
my @orgs = map { sprintf('00000000-0000-0000-0000-%012d', $_) } 1 .. 6;

# rows: every organization, in-batch duplicates, one without a partition
my $copy = '';
for my $o (@orgs)
{
	for my $i (1 .. 5)
	{
		$copy .= "$o,tx-$i,c$i,api,$now,$i\n";
	}
	$copy .= "$o,tx-1,c1,api,$now,1\n";		# same row again in the batch
}
$copy .= "$orgs[0],tx-bad,c1,api,2100-01-01,1\n";	# no partition: set aside on its shard
my ($rc, $out, $err) = try_sql($coord,
	"COPY ev (organization_id, transaction_id, external_customer_id, code, \"timestamp\", value) FROM STDIN (FORMAT csv);\n$copy\\.\n");
is($rc, 0, 'COPY from the coordinator') or diag($err);
is($coord->safe_psql('postgres', q{SELECT count(*) || '/' || count(DISTINCT (organization_id, transaction_id)) FROM ev}),
	'30/30', 'each key once; the bad row set aside');

# a second COPY: stored keys, one re-stamped an hour later, and new ones
my $later = $coord->safe_psql('postgres', qq{SELECT '$now'::timestamptz + interval '1 hour'});
$copy = '';
for my $o (@orgs)
{
	$copy .= "$o,tx-2,c2,api,$now,2\n$o,tx-3,c3,api,$later,3\n$o,tx-6,c1,api,$later,6\n";
}
($rc, $out, $err) = try_sql($coord,
	"COPY ev (organization_id, transaction_id, external_customer_id, code, \"timestamp\", value) FROM STDIN (FORMAT csv);\n$copy\\.\n");
is($rc, 0, 'a second COPY') or diag($err);
# plain INSERT through Citus: ingest's triggers on the shards
($rc, $out, $err) = try_sql($coord, qq{
	INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('$orgs[1]', 'tx-1', 'c1', 'api', '$now', 1), ('$orgs[1]', 'tx-7', 'c1', 'api', '$now', 7);
	INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('$orgs[2]', 'tx-7', 'c1', 'api', '$now', 7);
	INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('$orgs[2]', 'tx-7', 'c1', 'api', '$later', 8)});
is($rc, 0, 'INSERT through the coordinator') or diag($err);

is($coord->safe_psql('postgres', q{SELECT count(*) || '/' || count(DISTINCT (organization_id, transaction_id)) FROM ev}),
	'38/38', 'stored rows are the distinct keys cluster-wide');
is(ledger_mismatches($coord, 'ev'), '0', 'the ledger holds exactly the keys of the events');
is($coord->safe_psql('postgres', q{SELECT value FROM ev WHERE organization_id = '00000000-0000-0000-0000-000000000003' AND transaction_id = 'tx-3'}),
	'3', 'the re-stamped row is not stored again');

# the bad row, on the node that holds its shard
my $rejects = 0;
$rejects += $_->safe_psql('postgres', q{SELECT count(*) FROM ingest.rejects WHERE kind = 'rejected' AND raw LIKE '%tx-bad%'})
  for ($w1, $w2);
is($rejects, 1, 'the bad row is in ingest.rejects of the node that loaded it');
like($coord->safe_psql('postgres', q{SELECT node || ' ' || sqlstate || ' ' || raw FROM ingest.cluster_rejects('ev')}),
	qr/^localhost:\d+ 23514 .*tx-bad/, 'cluster_rejects on the coordinator has it, with its node');

# Each node folds its own shards; usage equals raw aggregation.
for my $w ($w1, $w2)
{
	$w->safe_psql('postgres', q{SET citus.override_table_visibility = off; SELECT ingest.fold_rollups()});
}
is($coord->safe_psql('postgres', q{SELECT count(*) FROM ingest_side.ev_deltas}), '0', 'the nodes folded every delta');
for my $o (@orgs)
{
	usage_is_raw($coord, 'ev', $o, "usage of organization $o equals the raw events");
}

my $verify = q{SELECT count(*) FROM ingest.rollup_verify('ev', date_trunc('hour', now()) - interval '1 day',
                                                    date_trunc('hour', now()) + interval '1 day')};
is($coord->safe_psql('postgres', $verify), '0', 'rollup_verify finds every shard exact');
# it can fail: a rollup row changed by hand on one node
my ($tampered) = grep {
	$_->safe_psql('postgres', q{SET citus.override_table_visibility = off;
		SELECT count(*) FROM ingest.table_config WHERE managed_by = 'citus_shard'}) > 0 } ($w1, $w2);
$tampered->safe_psql('postgres', q{SET citus.override_table_visibility = off;
	DO $$DECLARE r regclass := (SELECT rollup_hours FROM ingest.table_config WHERE managed_by = 'citus_shard' LIMIT 1);
	BEGIN EXECUTE format('UPDATE %s SET events = events + 1', r); END $$});
isnt($coord->safe_psql('postgres', $verify), '0', 'rollup_verify sees a shard whose rollup is off');
# rollup_rebuild on the coordinator recomputes every shard on its node
my $written = $coord->safe_psql('postgres', q{SELECT ingest.rollup_rebuild('ev', date_trunc('hour', now()) - interval '1 day',
                                                                           date_trunc('hour', now()) + interval '1 day')});
ok($written > 0, "rollup_rebuild of a distributed table rebuilds its shards ($written rollup rows)");
is($coord->safe_psql('postgres', $verify), '0', 'and the rollup is exact again');

# the indexes of every shard, on the node that holds it
my $indexes = q{SELECT count(DISTINCT node) || '/' || count(DISTINCT relation) || '/' || bool_and(valid)
                  FROM ingest.cluster_indexes('ev')};
my $shard_partitions = $coord->safe_psql('postgres', q{
	SELECT count(*) FROM pg_dist_shard d JOIN pg_inherits h ON h.inhrelid = d.logicalrelid
	 WHERE h.inhparent = 'ev'::regclass});
is($coord->safe_psql('postgres', $indexes), "2/$shard_partitions/true",
	'cluster_indexes lists the indexes of every shard of every partition, on both workers, valid');
$tampered->safe_psql('postgres', q{SET citus.override_table_visibility = off;
	UPDATE pg_index SET indisvalid = false
	 WHERE indexrelid = (SELECT i.indexrelid FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
	                      WHERE c.relname ~ '^ev_p[0-9]+_[0-9]+$' ORDER BY 1 LIMIT 1)});
is($coord->safe_psql('postgres', $indexes), "2/$shard_partitions/false", 'and sees an invalid one');
$tampered->safe_psql('postgres', q{SET citus.override_table_visibility = off;
	UPDATE pg_index SET indisvalid = true WHERE NOT indisvalid});

# The coordinator's maintenance makes new days: distributed, colocated,
# with ingest's triggers on their shards, and loaded like the others.
($rc, $out, $err) = try_sql($coord, q{SELECT ingest.configure('ev', premake => 4);
	SELECT count(*) FROM ingest.run_maintenance('ev')});
is($rc, 0, 'maintenance on the coordinator') or diag($err);
is($coord->safe_psql('postgres', q{
	SELECT count(*) FROM ingest.partitions p JOIN pg_dist_partition d ON d.logicalrelid = p.partition
	 WHERE p.event_table = 'ev'::regclass
	   AND d.colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'ev'::regclass)}),
	'5', 'today and four days ahead are distributed partitions, colocated');
my $ahead = $coord->safe_psql('postgres', q{SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '4 days 1 hour')::timestamptz(0)});
($rc, $out, $err) = try_sql($coord, "COPY ev (organization_id, transaction_id, external_customer_id, code, \"timestamp\", value) FROM STDIN (FORMAT csv);\n$orgs[5],tx-ahead,c1,api,$ahead,1\n$orgs[5],tx-ahead,c1,api,$ahead,1\n$orgs[5],tx-1,c1,api,$ahead,1\n\\.\n");
is($rc, 0, 'COPY into a new day') or diag($err);
is($coord->safe_psql('postgres', qq{SELECT count(*) FROM ev WHERE organization_id = '$orgs[5]' AND "timestamp" = '$ahead'}),
	'1', 'the new day deduplicates like the others');
($rc, $out, $err) = try_sql($coord, qq{INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value) VALUES ('$orgs[5]', 'tx-ahead', 'c1', 'api', '$ahead', 1)});
is($coord->safe_psql('postgres', qq{SELECT count(*) FROM ev WHERE organization_id = '$orgs[5]' AND transaction_id = 'tx-ahead'}),
	'1', 'and so do its triggers');

# UPDATE and DELETE through the coordinator: ingest's statement triggers
# on the shards keep the ledger and the rollups.
($rc, $out, $err) = try_sql($coord, qq{
	DELETE FROM ev WHERE organization_id = '$orgs[3]' AND transaction_id IN ('tx-1', 'tx-2');
	UPDATE ev SET value = value * 10 WHERE organization_id = '$orgs[4]' AND transaction_id = 'tx-3'});
is($rc, 0, 'DELETE and UPDATE through the coordinator') or diag($err);
($rc, $out, $err) = try_sql($coord, "COPY ev (organization_id, transaction_id, external_customer_id, code, \"timestamp\", value) FROM STDIN (FORMAT csv);\n$orgs[3],tx-1,c1,api,$now,100\n$orgs[3],tx-5,c5,api,$now,500\n\\.\n");
is($rc, 0, 'a deleted key loads again') or diag($err);
is($coord->safe_psql('postgres', qq{SELECT string_agg(transaction_id || '=' || value, ',' ORDER BY transaction_id) FROM ev WHERE organization_id = '$orgs[3]'}),
	'tx-1=100,tx-3=3,tx-4=4,tx-5=5,tx-6=6', 'the deleted key is stored anew, the stored one is not');
is(ledger_mismatches($coord, 'ev'), '0', 'the ledger holds exactly the keys of the events after DELETE');
for my $w ($w1, $w2)
{
	$w->safe_psql('postgres', q{SET citus.override_table_visibility = off; SELECT ingest.fold_rollups()});
}
for my $o (@orgs[3, 4])
{
	usage_is_raw($coord, 'ev', $o, "usage of organization $o equals the raw events after DELETE and UPDATE");
}

is($coord->safe_psql('postgres', $verify), '0', 'rollup_verify after DELETE and UPDATE');

# TRUNCATE through the coordinator: every shard's ledger and rollups.
$coord->safe_psql('postgres', q{SELECT ingest.create_event_table('ev_trunc', premake => 1);
	SELECT ingest.distribute_table('ev_trunc', shard_count => 4)});
($rc, $out, $err) = try_sql($coord, "COPY ev_trunc (organization_id, transaction_id, external_customer_id, code, \"timestamp\", value) FROM STDIN (FORMAT csv);\n$orgs[0],t1,c,api,$now,1\n$orgs[1],t1,c,api,$now,1\n\\.\n");
is($rc, 0, 'COPY into a second distributed table') or diag($err);
($rc, $out, $err) = try_sql($coord, 'TRUNCATE ev_trunc');
is($rc, 0, 'TRUNCATE of a distributed managed table') or diag($err);
is($coord->safe_psql('postgres', q{SELECT count(*) FROM ev_trunc}) . '/' .
   $coord->safe_psql('postgres', q{SELECT count(*) FROM ingest_side.ev_trunc_keys}),
	'0/0', 'its events and ledger are empty');
($rc, $out, $err) = try_sql($coord, "COPY ev_trunc (organization_id, transaction_id, external_customer_id, code, \"timestamp\", value) FROM STDIN (FORMAT csv);\n$orgs[0],t1,c,api,$now,5\n\\.\n");
for my $w ($w1, $w2)
{
	$w->safe_psql('postgres', q{SELECT ingest.fold_rollups()});
}
is($coord->safe_psql('postgres', qq{SELECT events || ':' || value_sum FROM ingest.usage('ev_trunc', '$orgs[0]',
		date_trunc('hour', now()) - interval '1 day', date_trunc('hour', now()) + interval '1 day')}),
	'1:5', 'after TRUNCATE, a key loads again and usage counts it once');

# What is refused, and how.
my $renamed = qr/cannot rename managed table "ev" or move it to another schema: it is distributed by Citus/;
refused($coord, 'ALTER TABLE ev RENAME TO ev_renamed', $renamed, 'a distributed managed table keeps its name');
refused($coord, 'ALTER INDEX ev RENAME TO ev_renamed', $renamed, 'also through ALTER INDEX');
refused($coord, 'ALTER TABLE ev SET SCHEMA ingest_side', $renamed, 'and its schema');
refused($coord, 'ALTER SCHEMA public RENAME TO public2',
	qr/cannot rename managed table "\w+" or move it to another schema: it is distributed by Citus/,
	'whose name it keeps too');
refused($coord, q{SELECT ingest.configure('ev', on_error => 'abort')},
	qr/cannot change on_error or rollup_retention of table "public.ev": it is distributed by Citus/,
	'on_error is fixed at distribution');
my $part = $coord->safe_psql('postgres', q{SELECT partition FROM ingest.partitions WHERE event_table = 'ev'::regclass ORDER BY day LIMIT 1});
refused($coord, "ALTER TABLE ev DETACH PARTITION $part",
	qr/cannot take a partition out of managed table "ev": it is distributed by Citus/,
	'a partition is not detached by hand');
refused($coord, "DROP TABLE $part",
	qr/cannot take a partition out of managed table "ev": it is distributed by Citus/,
	'nor dropped by hand');
refused($coord, q{SELECT ingest.create_rollup('ev', 'region', ARRAY['region'])},
	qr/cannot create a rollup of table "public.ev": it is distributed by Citus/,
	'rollups by properties are refused on a distributed table');
refused($coord, q{SELECT ingest.rollup_rebuild('ev', now() - interval '1 day', 'infinity')},
	qr/from_ts and to_ts must be finite instants for a distributed table/,
	'rollup_rebuild of a distributed table wants finite bounds', '22023');
refused($coord, q{SELECT ingest.distribute_table('ev')},
	qr/cannot distribute table "public.ev": Citus holds it already/, 'a table is distributed once', '55000');
$coord->safe_psql('postgres', q{SELECT ingest.create_event_table('by_props');
	SELECT ingest.create_rollup('by_props', 'region', ARRAY['region'])});
refused($coord, q{SELECT ingest.distribute_table('by_props')},
	qr/cannot distribute table "public.by_props": it has rollups by properties/,
	'a table with rollups by properties is refused');
# ... also when the rollup is not committed yet as distribute_table() looks:
# it waits for the creating transaction (both went through before)
$coord->safe_psql('postgres', q{SELECT ingest.create_event_table('props_race')});
my $creator = $coord->background_psql('postgres');
$creator->query_safe(q{BEGIN; SELECT ingest.create_rollup('props_race', 'region', ARRAY['region'])});
my %dist = (out => '', err => '');
$dist{h} = IPC::Run::start(
	['psql', '-X', '-At', '-h', $coord->host, '-p', $coord->port, '-d', 'postgres',
	 '-c', q{SELECT ingest.distribute_table('props_race')}],
	'>', \$dist{out}, '2>', \$dist{err}, IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
ok($coord->poll_query_until('postgres', q{
	SELECT EXISTS (SELECT FROM pg_stat_activity
	                WHERE query LIKE '%distribute_table(''props_race'')%' AND wait_event_type = 'Lock'
	                  AND pid <> pg_backend_pid())
	    OR EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid::text = 'props_race')}),
	'distribute_table() waits for the transaction creating a rollup, or is done');
$creator->query_safe('COMMIT');
$creator->quit;
$dist{h}->finish;
like($dist{err}, qr/cannot distribute table "public.props_race": it has rollups by properties/,
	'then refuses the table');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text = 'props_race'}),
	'0', 'which Citus does not hold');
refused($w1, q{SELECT ingest.distribute_table('ev')},
	qr/cannot distribute table "public.ev": this node is not the Citus coordinator/,
	'distribute_table on a worker node is refused');

# A table of a role without superuser: Citus copies its rows as the
# extension's owner, so a table with code of its owner's is refused (before
# this check, the owner's trigger ran as a superuser on every node); the
# same table without it is distributed, its rows and keys on the shards.
$coord->safe_psql('postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE SCHEMA alice AUTHORIZATION alice;
	SET ROLE alice;
	SELECT ingest.create_event_table('alice.ev', premake => 1);
	CREATE FUNCTION alice.not_as_superuser() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
			RAISE EXCEPTION 'a trigger of alice ran as %, a superuser', current_user;
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER a_check BEFORE INSERT ON alice.ev FOR EACH ROW EXECUTE FUNCTION alice.not_as_superuser();
	ALTER TABLE alice.ev ADD CONSTRAINT positive CHECK (value > 0);
	INSERT INTO alice.ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('00000000-0000-0000-0000-000000000001', 'a1', 'c', 'api', now(), 1);
});
refused($coord, q{SET ROLE alice; SELECT ingest.distribute_table('alice.ev', shard_count => 4)},
	qr/cannot distribute table "alice.ev": it has code of its own.*DETAIL:  trigger a_check on alice.ev; constraint positive on alice.ev/s,
	'a table with code of its owner is not distributed');
# a WHEN clause of the owner's, on a trigger of one of ingest's functions
$coord->safe_psql('postgres', q{SET ROLE alice; DROP TRIGGER a_check ON alice.ev; ALTER TABLE alice.ev DROP CONSTRAINT positive;
	CREATE FUNCTION alice.when_superuser() RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
	CREATE TRIGGER a_when AFTER INSERT ON alice.ev FOR EACH ROW WHEN (alice.when_superuser())
	  EXECUTE FUNCTION ingest_side.replica_guard()});
refused($coord, q{SET ROLE alice; SELECT ingest.distribute_table('alice.ev', shard_count => 4)},
	qr/cannot distribute table "alice.ev": it has code of its own.*DETAIL:  trigger a_when on alice.ev/s,
	'nor one with a trigger of its owner on one of ingest\'s functions');
$coord->safe_psql('postgres', q{SET ROLE alice; DROP TRIGGER a_when ON alice.ev});
($rc, $out, $err) = try_sql($coord, q{SET ROLE alice; SELECT ingest.distribute_table('alice.ev', shard_count => 4)});
is($rc, 0, "distribute_table by a table's owner without superuser") or diag($err);
my $alice_keys = $coord->safe_psql('postgres', q{SELECT ledger FROM ingest.table_config WHERE event_table = 'alice.ev'::regclass});
is($coord->safe_psql('postgres', q{SELECT count(*) FROM alice.ev}) . '/' .
   $coord->safe_psql('postgres', "SELECT count(*) FROM $alice_keys"),
	'1/1', 'its row and its key are on the shards');

# The README's example runs here (its ```sql citus blocks).
my $readme = "$FindBin::RealBin/../../../README.md";
open(my $fh, '<', $readme) or die "cannot read $readme: $!";
my ($in, $example) = (0, '');
while (my $l = <$fh>)
{
	if ($l =~ /^```sql citus\s*$/) { $in = 1; next; }
	if ($in && $l =~ /^```\s*$/) { $in = 0; next; }
	$example .= $l if $in;
}
close($fh);
like($example, qr/ingest\.distribute_table/, 'the README has a Citus example');
($rc, $out, $err) = try_sql($coord, $example);
is($rc, 0, 'the README example runs') or diag($err);
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'citus_events'::regclass}),
	'8', 'with the shards it asks for');

# DROP TABLE and unmanage_table of a distributed managed table.
($rc, $out, $err) = try_sql($coord, q{SELECT ingest.unmanage_table('citus_events')});
is($rc, 0, 'unmanage_table of a distributed table') or diag($err);
($rc, $out, $err) = try_sql($coord, 'DROP TABLE ev');
is($rc, 0, 'DROP TABLE of a distributed managed table') or diag($err);
is($coord->safe_psql('postgres', q{SELECT count(*) FROM ingest.table_config WHERE event_table::text IN ('ev', 'citus_events')}),
	'0', 'their configuration is gone');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_class WHERE relname ~ '^(ev|citus_events)_(keys|rollup|deltas|stale|daily)$'}),
	'0', 'and their side tables');
for my $w ($w1, $w2)
{
	# the unmanaged table's shards go at the node's next fold of them
	$w->safe_psql('postgres', q{SELECT ingest.fold_rollups()});
	is($w->safe_psql('postgres', q{SET citus.override_table_visibility = off;
		SELECT count(*) FROM ingest.table_config
		 WHERE managed_by = 'citus_shard' AND event_table::text ~ '^(ev|citus_events)_[0-9]+$'}),
		'0', 'their shards are forgotten on ' . $w->name);
}

$_->stop for @nodes;
done_testing();
