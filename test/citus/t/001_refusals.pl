# ingest on a Citus cluster (a coordinator and two workers on this machine):
# a managed table that Citus distributed with create_distributed_table()
# rather than ingest.distribute_table() is refused by every write path,
# since its key ledger and rollups stay on the coordinator.  Before
# these refusals, ingest.load and COPY on the coordinator wrote into the
# coordinator's empty shell (rows no query returned), and INSERTs that
# Citus sent to the shards stored every duplicate.  What must keep working:
# Citus itself, plain tables, unmanaging and dropping a distributed managed
# table, and a Citus table that ingest does not manage.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestCitus;

my ($coord, $w1, $w2) = my @nodes = citus_cluster('ingest.enabled = off');
is($w1->safe_psql('postgres', q{SELECT count(*) FROM pg_extension WHERE extname = 'ingest'}),
	'1', 'CREATE EXTENSION ingest reached the workers');

my $row = q{'00000000-0000-0000-0000-000000000001', 'tx-1', 'c1', 'api', now(), '{}', 1, NULL};
my $csv = "organization_id,transaction_id,external_customer_id,code,timestamp,value\n"
  . "00000000-0000-0000-0000-000000000001,tx-1,c1,api,NOW,1\n";

# an instant in a day the tables have a partition for
my $now = $coord->safe_psql('postgres', q{SELECT now()::timestamptz(0)});
$csv =~ s/NOW/$now/;

# A managed table distributed by organization_id, as the Citus docs say:
# Citus copies ingest's triggers to the shards with enable_unsafe_triggers.
$coord->safe_psql('postgres', q{
	SELECT ingest.create_event_table('ev', premake => 2);
	SET citus.enable_unsafe_triggers = on;
	SELECT create_distributed_table('ev', 'organization_id');
});

refused($coord, qq{SELECT * FROM ingest.load('ev', \$\$$csv\$\$, 'csv', true)},
	qr/cannot load managed table "ev": Citus distributes it without its key ledger and rollups/,
	'ingest.load on the coordinator is refused');
refused($coord, qq{COPY ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value) FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-000000000001,tx-1,c1,api,$now,1
\\.
},
	qr/cannot copy into managed table "ev": Citus distributes it without its key ledger and rollups/,
	'COPY through the hook on the coordinator is refused');
my $insert = qq{INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", properties, value, decimal_value) VALUES ($row)};
my $on_shard = qr/cannot write "ev_\w+" through ingest's triggers on a Citus shard or worker node/;
refused($coord, $insert, $on_shard, 'INSERT that Citus sends to a shard is refused there');
refused($w1, $insert, $on_shard, 'INSERT issued on a worker node is refused on the shard');
refused($coord, q{UPDATE ev SET value = 2}, $on_shard, 'UPDATE on the shards is refused');
refused($coord, q{DELETE FROM ev}, $on_shard, 'DELETE on the shards is refused');
refused($coord, qq{COPY ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value) FROM STDIN (FORMAT csv, FREEZE false, DELIMITER ',');
00000000-0000-0000-0000-000000000001,tx-1,c1,api,$now,1
\\.
},
	$on_shard, 'COPY that the hook leaves to Citus is refused on the shards', 'XX000');
refused($w1, qq{SELECT * FROM ingest.load('ev', \$\$$csv\$\$, 'csv', true)},
	qr/cannot load "ev" on a Citus worker node.*DETAIL:  Managed tables are loaded and managed on the Citus coordinator \(localhost:${\ $coord->port}\)/s,
	'ingest.load on a worker node says where to load');
# A worker without Citus's metadata cannot tell a shard from a table: its
# copy of ingest's triggers refuses all the same.
my $shard = shard_on($coord, 'ev', $w2);
$coord->safe_psql('postgres', sprintf(q{SELECT stop_metadata_sync_to_node('localhost', %d)}, $w2->port));
is($w2->safe_psql('postgres', q{SELECT count(*) FROM pg_dist_partition}), '0',
	'the second worker has no Citus metadata now');
refused($w2, qq{INSERT INTO $shard (organization_id, transaction_id, external_customer_id, code, "timestamp", properties, value, decimal_value) VALUES ($row)},
	qr/cannot write "\w+" through ingest's triggers on a Citus shard or worker node/,
	'a write into a shard on a worker without metadata is refused');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM ev'), '0', 'nothing was stored');
# the coordinator's own partitions of ev are shells: the old loader wrote there
is($coord->safe_psql('postgres', q{SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('ev')}),
	'0', 'nothing in the coordinator shell');

# Distributed by another column: the key would be split across shards.
$coord->safe_psql('postgres', q{
	SELECT ingest.create_event_table('ev_cust', premake => 2);
	SET citus.enable_unsafe_triggers = on;
	SELECT create_distributed_table('ev_cust', 'external_customer_id');
});
refused($coord, qq{SELECT * FROM ingest.load('ev_cust', \$\$$csv\$\$, 'csv', true)},
	qr/cannot load managed table "ev_cust": Citus distributes it by "external_customer_id".*only a table distributed by organization_id keeps each key on one shard/s,
	'another distribution column is refused, naming it');

# A table Citus distributed first cannot be managed.
my ($rc, $out, $err) = try_sql($coord, q{
	CREATE TABLE ev_first2 (organization_id uuid NOT NULL, transaction_id text NOT NULL,
		external_customer_id text, code text, "timestamp" timestamptz NOT NULL,
		properties jsonb, value double precision, decimal_value numeric,
		created_at timestamptz NOT NULL DEFAULT now()) PARTITION BY RANGE ("timestamp");
	SELECT create_distributed_table('ev_first2', 'organization_id');
	SELECT ingest.manage_table('ev_first2');
});
like($err, qr/ERROR:  0A000: cannot manage table "ev_first2": it is distributed by Citus/,
	'manage_table of a distributed table is refused');

# The way out: unmanage, and the table is a plain Citus table again.
# (the settings it needs are its own: its transaction keeps the caller's)
is($coord->safe_psql('postgres', q{
	BEGIN;
	SET LOCAL citus.multi_shard_modify_mode = parallel;
	SELECT count(*) FROM (SELECT ingest.unmanage_table('ev')) u;
	SHOW citus.enable_unsafe_triggers;
	SHOW citus.multi_shard_modify_mode;
	COMMIT;}),
	"1\noff\nparallel",
	'unmanage_table leaves the session as it found it');
$coord->safe_psql('postgres', qq{INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", properties, value, decimal_value) VALUES ($row), ($row)});
is($coord->safe_psql('postgres', 'SELECT count(*) FROM ev'), '2',
	'after unmanage_table, Citus stores what it is given (ingest no longer deduplicates)');
($rc, $out, $err) = try_sql($coord, q{UPDATE ev SET value = 3; DELETE FROM ev WHERE value = 3});
is($rc, 0, 'and UPDATE and DELETE run on its shards') or diag($err);

# DROP TABLE of a distributed managed table works.
($rc, $out, $err) = try_sql($coord, 'DROP TABLE ev_cust');
is($rc, 0, 'DROP TABLE of a distributed managed table') or diag($err);
is($coord->safe_psql('postgres', q{SELECT count(*) FROM ingest.table_config}), '0',
	'its configuration is gone');

# Citus itself and a table ingest does not manage are unaffected.
$coord->safe_psql('postgres', q{
	CREATE TABLE plain (id bigint PRIMARY KEY, v text);
	SELECT create_distributed_table('plain', 'id');
	INSERT INTO plain SELECT i, 'x' FROM generate_series(1, 100) i;
});
$coord->safe_psql('postgres', "COPY plain FROM STDIN (FORMAT csv);\n101,y\n\\.\n");
is($coord->safe_psql('postgres', 'SELECT count(*) FROM plain'), '101', 'a plain distributed table loads');

# A managed table of the coordinator's own, named like a shard, is ingest's
# as anywhere: loaded, copied and inserted with exact dedup.
my $local_csv = $csv;
$coord->safe_psql('postgres', q{SELECT ingest.create_event_table('events_2024', premake => 2)});
is($coord->safe_psql('postgres', qq{SELECT loaded || '/' || duplicates FROM ingest.load('events_2024', \$\$$local_csv\$\$, 'csv', true,
		ARRAY['organization_id', 'transaction_id', 'external_customer_id', 'code', 'timestamp', 'value'])}),
	'1/0', 'a local managed table loads on a Citus coordinator');
$coord->safe_psql('postgres', qq{COPY events_2024 (organization_id, transaction_id, external_customer_id, code, "timestamp", value) FROM STDIN (FORMAT csv);
00000000-0000-0000-0000-000000000001,tx-1,c1,api,$now,1
00000000-0000-0000-0000-000000000001,tx-2,c1,api,$now,1
\\.
});
$coord->safe_psql('postgres', qq{INSERT INTO events_2024 (organization_id, transaction_id, external_customer_id, code, "timestamp", properties, value, decimal_value) VALUES ($row)});
is($coord->safe_psql('postgres', q{SELECT count(*) || '/' || count(DISTINCT transaction_id) FROM events_2024}),
	'2/2', 'and COPY and INSERT deduplicate exactly');

$_->stop for @nodes;
done_testing();
