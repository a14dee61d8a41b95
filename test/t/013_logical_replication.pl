# Streaming events out: a managed table published with
# publish_via_partition_root to a subscriber that does not run ingest.
# Every partition has the table's replica identity (FULL), whoever made it:
# the table's creation, the worker, ingest.create_partitions, CREATE TABLE
# ... PARTITION OF and ATTACH by hand; so loads, INSERT, DELETE and UPDATE
# (also of rows in a day made after the subscription started) all reach the
# subscriber.  Then: a replica identity set by hand on the table reaches its
# partitions, manage_table adopts with FULL, the update from 0.2.0 sets it,
# and what a FOR ALL TABLES publication does to ingest's side tables.
# Last, a subscriber whose target table ingest manages: its apply workers
# fire none of ingest's triggers, so they are refused, loudly.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $pub = PostgreSQL::Test::Cluster->new('publisher');
$pub->init(allows_streaming => 'logical');
$pub->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
max_worker_processes = 16
});
$pub->start;

# The warehouse: plain PostgreSQL, no ingest.
my $sub = PostgreSQL::Test::Cluster->new('subscriber');
$sub->init;
$sub->start;

sub psql_ok
{
	my ($node, $db, $sql, $what) = @_;
	my ($rc, $out, $err) = $node->psql($db, $sql);
	is($rc, 0, $what) or diag($err);
	return $out;
}

$pub->safe_psql('postgres', q{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('usage_events', premake => 2);
	CREATE FUNCTION ev(n int, day_off int) RETURNS text LANGUAGE sql AS $$
		SELECT format('00000000-0000-0000-0000-00000000000%s,tx-%s,cust-%s,api,%s,"{""n"":%s}",%s,%s',
		              1 + n % 3, n, n % 5,
		              date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
		                + day_off * interval '1 day' + n * interval '1 second',
		              n, n, n * 0.25) $$;
	CREATE FUNCTION batch(lo int, hi int, day_off int) RETURNS text LANGUAGE sql AS $$
		SELECT string_agg(ev(n, day_off), E'\n' ORDER BY n) FROM generate_series(lo, hi) n $$;
	-- every column of every row, in one line: the subscriber must match
	CREATE VIEW fingerprint AS
		SELECT count(*) || ' ' || coalesce(sum(value), 0) || ' ' ||
		       md5(coalesce(string_agg(concat_ws('|', id, organization_id, transaction_id,
		             external_customer_id, code, "timestamp", properties, value, decimal_value, created_at),
		           E'\n' ORDER BY organization_id, transaction_id), '')) AS f
		  FROM usage_events;
});

sub replident
{
	my ($db, $tbl) = @_;
	return $pub->safe_psql($db, qq{
		SELECT string_agg(c.relreplident::text, '' ORDER BY c.oid = '$tbl'::regclass DESC, c.relname)
		  FROM pg_class c
		 WHERE c.oid = '$tbl'::regclass
		    OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = '$tbl'::regclass)});
}

is(replident('postgres', 'usage_events'), 'ffff',
	'a new managed table and its partitions have REPLICA IDENTITY FULL');

# Events before the subscription: the initial copy takes them.
$pub->safe_psql('postgres', q{SELECT ingest.load('usage_events', batch(1, 50, 0))});
$pub->safe_psql('postgres',
	q{CREATE PUBLICATION warehouse FOR TABLE usage_events WITH (publish_via_partition_root = true)});

# A plain table, not partitioned: the warehouse makes no partitions ahead,
# so no day can find itself without one.  Its primary key is ingest's dedup
# key, unique in the whole table; the apply worker finds the rows of an
# UPDATE or DELETE by it.
$sub->safe_psql('postgres', q{
	CREATE TABLE usage_events (
		id bigint, organization_id uuid NOT NULL, transaction_id text NOT NULL,
		external_customer_id text NOT NULL, code text NOT NULL, "timestamp" timestamptz NOT NULL,
		properties jsonb NOT NULL, value double precision, decimal_value numeric,
		created_at timestamptz NOT NULL,
		PRIMARY KEY (organization_id, transaction_id));
	CREATE VIEW fingerprint AS
		SELECT count(*) || ' ' || coalesce(sum(value), 0) || ' ' ||
		       md5(coalesce(string_agg(concat_ws('|', id, organization_id, transaction_id,
		             external_customer_id, code, "timestamp", properties, value, decimal_value, created_at),
		           E'\n' ORDER BY organization_id, transaction_id), '')) AS f
		  FROM usage_events;
});
my $connstr = $pub->connstr . ' dbname=postgres';
$sub->safe_psql('postgres', qq{CREATE SUBSCRIPTION warehouse CONNECTION '$connstr' PUBLICATION warehouse});
$sub->wait_for_subscription_sync($pub, 'warehouse');

sub same
{
	my ($what) = @_;
	$pub->wait_for_catchup('warehouse');
	is($sub->safe_psql('postgres', 'SELECT f FROM fingerprint'),
		$pub->safe_psql('postgres', 'SELECT f FROM fingerprint'), $what);
}
same('the initial copy has every event');

# Loads (duplicates skipped on the publisher: the subscriber sees only
# stored rows), and plain INSERT.
is($pub->safe_psql('postgres', q{SELECT loaded || ',' || duplicates FROM ingest.load('usage_events', batch(40, 80, 0))}),
	'30,11', 'a load with duplicates');
$pub->safe_psql('postgres', q{
	INSERT INTO usage_events (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('00000000-0000-0000-0000-000000000009', 'ins-1', 'c', 'api', now(), 7),
	       ('00000000-0000-0000-0000-000000000009', 'ins-2', 'c', 'api', now() + interval '1 day', 8)});
same('loads and INSERTs arrive');

# DELETE and UPDATE: without a replica identity the first fails (55000).
psql_ok($pub, 'postgres', q{DELETE FROM usage_events WHERE transaction_id IN ('tx-3', 'tx-4', 'ins-1')},
	'DELETE on the published managed table succeeds');
psql_ok($pub, 'postgres', q{UPDATE usage_events SET value = value + 100, properties = properties || '{"fixed": true}'
	WHERE transaction_id IN ('tx-10', 'tx-11')}, 'UPDATE of measures succeeds');
psql_ok($pub, 'postgres', q{UPDATE usage_events SET "timestamp" = "timestamp" + interval '1 day'
	WHERE transaction_id = 'tx-12'}, 'UPDATE moving a row to the next day succeeds');
same('DELETE and UPDATEs arrive');
is($sub->safe_psql('postgres', q{SELECT count(*) FROM usage_events WHERE transaction_id IN ('tx-3', 'tx-4', 'ins-1')}),
	'0', 'the deleted rows are gone on the subscriber');

# New days, made after the subscription started: by the worker (premake
# raised), by ingest.create_partitions (backfill), by hand.
$pub->safe_psql('postgres', q{SELECT ingest.configure('usage_events', premake => 4)});
ok($pub->poll_query_until('postgres', q{SELECT count(*) = 5 FROM ingest.partitions WHERE event_table = 'usage_events'::regclass}),
	'the worker makes two more days');
$pub->safe_psql('postgres', q{
	SELECT ingest.create_partitions('usage_events', (now() AT TIME ZONE 'UTC')::date - 3,
	                                (now() AT TIME ZONE 'UTC')::date - 2);
	CREATE TABLE usage_events_by_hand PARTITION OF usage_events FOR VALUES
		FROM (ingest_internal.day_start((now() AT TIME ZONE 'UTC')::date + 5, 'UTC'))
		TO (ingest_internal.day_start((now() AT TIME ZONE 'UTC')::date + 6, 'UTC'));
	CREATE TABLE usage_events_attached (LIKE usage_events);
});
$pub->safe_psql('postgres', q{
	ALTER TABLE usage_events ATTACH PARTITION usage_events_attached FOR VALUES
		FROM (ingest_internal.day_start((now() AT TIME ZONE 'UTC')::date + 6, 'UTC'))
		TO (ingest_internal.day_start((now() AT TIME ZONE 'UTC')::date + 7, 'UTC'))});
is(replident('postgres', 'usage_events'), 'f' x 10,
	'partitions made by the worker, create_partitions, PARTITION OF and ATTACH are FULL too');
$pub->safe_psql('postgres', q{
	SELECT ingest.load('usage_events', batch(100, 120, 4));
	SELECT ingest.load('usage_events', batch(200, 220, -3));
	SELECT ingest.load('usage_events', batch(300, 310, 5));
	SELECT ingest.load('usage_events', batch(400, 410, 6))});
psql_ok($pub, 'postgres', q{DELETE FROM usage_events WHERE transaction_id IN ('tx-101', 'tx-201', 'tx-301', 'tx-401')},
	'DELETE in the new days succeeds');
psql_ok($pub, 'postgres', q{UPDATE usage_events SET code = 'tokens' WHERE transaction_id IN ('tx-102', 'tx-202', 'tx-302', 'tx-402')},
	'UPDATE in the new days succeeds');
same('rows of days made after the subscription started arrive, deletes and updates too');
is($sub->safe_psql('postgres', q{SELECT count(*) FROM usage_events WHERE code = 'tokens'}), '4',
	'the updates of new days are on the subscriber');

# The table's own replica identity, changed by hand, reaches its partitions
# and the ones made later.
$pub->safe_psql('postgres', q{
	SELECT ingest.create_event_table('keyed', premake => 1);
	ALTER TABLE keyed ADD PRIMARY KEY (organization_id, transaction_id, "timestamp");
	ALTER TABLE keyed REPLICA IDENTITY DEFAULT});
is(replident('postgres', 'keyed'), 'ddd', 'REPLICA IDENTITY DEFAULT on the table reaches its partitions');
$pub->safe_psql('postgres', q{
	CREATE UNIQUE INDEX keyed_ident ON keyed (organization_id, transaction_id, "timestamp");
	ALTER TABLE keyed REPLICA IDENTITY USING INDEX keyed_ident;
	SELECT ingest.configure('keyed', premake => 2)});
ok($pub->poll_query_until('postgres', q{SELECT count(*) = 3 FROM pg_inherits WHERE inhparent = 'keyed'::regclass}),
	'the worker makes a day of the keyed table');
is($pub->safe_psql('postgres', q{
	SELECT string_agg(c.relreplident::text || ':' || coalesce((SELECT pi.inhparent::regclass::text
	         FROM pg_index i JOIN pg_inherits pi ON pi.inhrelid = i.indexrelid
	        WHERE i.indrelid = c.oid AND i.indisreplident), '-'), ' ' ORDER BY c.relname)
	  FROM pg_class c JOIN pg_inherits h ON h.inhrelid = c.oid WHERE h.inhparent = 'keyed'::regclass}),
	'i:keyed_ident i:keyed_ident i:keyed_ident',
	'USING INDEX: each partition, the new one too, uses its index attached to the table\'s');
$pub->safe_psql('postgres', q{ALTER TABLE ONLY keyed REPLICA IDENTITY FULL});
is(replident('postgres', 'keyed'), 'fiii', 'ALTER TABLE ONLY leaves the partitions alone');

# Adoption: a table with no primary key gets FULL, partitions included.
$pub->safe_psql('postgres', q{
	CREATE TABLE adopted (LIKE usage_events) PARTITION BY RANGE ("timestamp");
	CREATE TABLE adopted_today PARTITION OF adopted FOR VALUES
		FROM (ingest_internal.day_start((now() AT TIME ZONE 'UTC')::date, 'UTC'))
		TO (ingest_internal.day_start((now() AT TIME ZONE 'UTC')::date + 1, 'UTC'))});
is(replident('postgres', 'adopted'), 'dd', 'before adoption: DEFAULT, no identity');
$pub->safe_psql('postgres', q{SELECT ingest.manage_table('adopted', premake => 0)});
is(replident('postgres', 'adopted'), 'ff', 'manage_table sets FULL on the table and its partitions');

# The update from 0.2.0 gives the tables it manages FULL.
$pub->safe_psql('postgres', q{CREATE DATABASE from_0_2_0});
$pub->safe_psql('from_0_2_0', q{CREATE EXTENSION ingest VERSION '0.2.0';
	SELECT ingest.create_event_table('ev', premake => 1)});
is(replident('from_0_2_0', 'ev'), 'ddd', '0.2.0 left the table without an identity');
$pub->safe_psql('from_0_2_0', q{ALTER EXTENSION ingest UPDATE});
is(replident('from_0_2_0', 'ev'), 'fff', 'the update to 0.3.0 sets FULL on the table and its partitions');

# FOR ALL TABLES publishes ingest's side tables too: the rollup deltas and
# stale marks, which have no key, have REPLICA IDENTITY FULL, so the fold,
# which deletes them, works.
$pub->safe_psql('postgres', q{CREATE DATABASE alltables});
$pub->safe_psql('alltables', q{CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('ev', premake => 0);
	CREATE PUBLICATION everything FOR ALL TABLES;
	INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('00000000-0000-0000-0000-000000000001', 'a', 'c', 'api', now(), 1)});
my ($rc, $out, $err) = $pub->psql('alltables', q{UPDATE ev SET value = 2; SELECT ingest.fold_rollups('ev')});
is($rc, 0, 'FOR ALL TABLES: the fold deletes deltas and stale marks') or diag($err);
psql_ok($pub, 'alltables', q{DELETE FROM ev WHERE transaction_id = 'a'},
	'FOR ALL TABLES: a DELETE of events still succeeds (ledger has a primary key)');

# A subscriber that runs ingest and manages the target table (here a
# database of the publisher's own cluster, which has ingest loaded): the
# table sync worker runs in replica mode, where ingest's triggers do not
# fire, and is refused; nothing reaches the table or its ledger.
$pub->safe_psql('postgres', q{SELECT pg_create_logical_replication_slot('to_managed', 'pgoutput')});
$pub->safe_psql('postgres', q{CREATE DATABASE managed_sub});
$pub->safe_psql('managed_sub', q{CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('usage_events', premake => 2);
	SELECT ingest.create_partitions('usage_events', current_date - 10, current_date + 10)});
my $log_offset = -s $pub->logfile;
$pub->safe_psql('managed_sub', qq{CREATE SUBSCRIPTION into_managed CONNECTION '$connstr'
	PUBLICATION warehouse WITH (create_slot = false, slot_name = 'to_managed')});
ok($pub->wait_for_log(qr/cannot write managed table "usage_events" with session_replication_role = replica/,
	$log_offset), 'a subscription into a managed table is refused with a clear error');
is($pub->safe_psql('managed_sub', q{SELECT (SELECT count(*) FROM usage_events) || ' ' ||
	(SELECT count(*) FROM ingest_side.usage_events_keys)}), '0 0', 'and nothing was written');
$pub->safe_psql('managed_sub', q{ALTER SUBSCRIPTION into_managed DISABLE;
	ALTER SUBSCRIPTION into_managed SET (slot_name = NONE); DROP SUBSCRIPTION into_managed});
$pub->safe_psql('postgres', q{SELECT pg_drop_replication_slot('to_managed')});

ok(!$pub->log_contains('terminated by signal'), 'no crash on the publisher');
$sub->stop;
$pub->stop;
done_testing();
