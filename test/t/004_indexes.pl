# Index phases with the worker: a closed day gets its indexes and is closed;
# a concurrent build blocks no insert into the partition; a build killed in
# the middle leaves an invalid index that the next run drops and rebuilds;
# drop_index removes an index from every partition.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestCrash;

my $node = PostgreSQL::Test::Cluster->new('indexes');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
ingest.close_delay = 0
ingest.index_lock_timeout = '60s'
});
$node->start;

sub sql { return $node->safe_psql('postgres', shift); }
sub poll
{
	my ($query, $what) = @_;
	ok($node->poll_query_until('postgres', $query), $what);
}

sql(q{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('ix', premake => 1);
	CREATE TABLE ix_old2 (LIKE ix);
	DO $$ BEGIN
		EXECUTE format('ALTER TABLE ix ATTACH PARTITION ix_old2 FOR VALUES FROM (%L) TO (%L)',
					   date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '2 days',
					   date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 day');
	END $$;
	INSERT INTO ix (organization_id, transaction_id, external_customer_id, code, "timestamp")
	SELECT gen_random_uuid(), 'tx' || g, 'c' || (g % 50), 'api',
		   date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '2 days' + g * interval '1 second'
	  FROM generate_series(1, 5000) g;
});

# A closed day gets every declared index, then is summarized, analyzed, frozen.
poll(q{SELECT bool_and(status = 'present') AND count(*) = 3 FROM ingest.indexes
		WHERE partition = 'ix_old2'::regclass}, 'the closed day gets all its indexes');
poll(q{SELECT count(*) = 3 FROM ingest_internal.partition_closed
		WHERE partition_oid = 'ix_old2'::regclass}, 'and is closed: summarized, analyzed, frozen');
is(sql(q{SELECT string_agg(name || ':' || status, ' ' ORDER BY name) FROM ingest.indexes
		  WHERE partition = (SELECT partition FROM ingest.partitions WHERE event_table = 'ix'::regclass
							  ORDER BY day DESC LIMIT 1)}),
	'brin_timestamp:present customer_ts:deferred org_code_ts:deferred',
	'the hot partition stays lean: only the always-phase BRIN');
is(sql(q{SELECT relallvisible > 0 AND reltuples = 5000 FROM pg_class WHERE relname = 'ix_old2'}), 't',
	'the closed partition was vacuumed and analyzed');

# A late insert holds the partition while a new index is declared: the
# concurrent build waits for it, and other inserts go on meanwhile.
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN; INSERT INTO ix (organization_id, transaction_id, external_customer_id, code, "timestamp")
	VALUES (gen_random_uuid(), 'late-1', 'c1', 'api', now() - interval '2 days')});
sql(q{SELECT ingest.add_index('ix', ARRAY['code', 'timestamp'], name => 'late')});
poll(q{SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'ingest worker'
		  AND query LIKE 'CREATE INDEX CONCURRENTLY%ix_old2_late%' AND wait_event_type = 'Lock')},
	'the concurrent build waits for the open insert');
my $inserted = 0;
for my $i (1 .. 5)
{
	$inserted += sql(qq{SET statement_timeout = '2s';
		INSERT INTO ix (organization_id, transaction_id, external_customer_id, code, "timestamp")
		VALUES (gen_random_uuid(), 'during-$i', 'c1', 'api', now() - interval '2 days') RETURNING 1});
}
is($inserted, 5, 'inserts into the partition are not blocked by the build');
is(sql(q{SELECT status FROM ingest.indexes WHERE partition = 'ix_old2'::regclass AND name = 'late'}),
	'building', 'the index shows as building');

# Kill the worker in the middle of the build.
my $pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'ingest worker'
				 AND query LIKE 'CREATE INDEX CONCURRENTLY%'});
kill_and_recover($node, $pid, $holder);
poll(q{SELECT status = 'present' FROM ingest.indexes WHERE partition = 'ix_old2'::regclass AND name = 'late'},
	'after the crash the index is built again');
is(sql(q{SELECT count(*) FROM pg_index WHERE NOT indisvalid}), '0', 'no invalid index is left');
ok(sql(q{SELECT count(*) FROM ingest.maintenance_log WHERE action = 'drop_index'
		  AND message = 'invalid index left by an interrupted build' AND status = 'ok'}) >= 1,
	'the invalid leftover was dropped first');

# drop_index removes the index from every partition.
sql(q{SELECT ingest.drop_index('ix', 'late')});
poll(q{SELECT NOT EXISTS (SELECT FROM pg_indexes WHERE indexname LIKE 'ix%late')
		  AND NOT EXISTS (SELECT FROM ingest_internal.index_drops)},
	'drop_index leaves no index behind');

# Code of the owner's that the worker's build runs (an index expression
# here) meets the rules any statement meets: it may not change the shape of
# another managed table (0A000).  Before, the worker's DDL let through every
# statement run while it ran.
my $log_before = sql(q{SELECT coalesce(max(id), 0) FROM ingest.maintenance_log});
sql(q{
	SELECT ingest.create_event_table('ix_other', premake => 1);
	CREATE FUNCTION public.reshape_now() RETURNS void LANGUAGE plpgsql AS $$
	BEGIN EXECUTE 'ALTER TABLE public.ix_other DROP COLUMN IF EXISTS value'; END $$;
	CREATE FUNCTION public.reshape(v float8) RETURNS float8 LANGUAGE plpgsql IMMUTABLE AS $$
	BEGIN PERFORM public.reshape_now(); RETURN v; END $$;
	SELECT ingest.add_index('ix', ARRAY['(public.reshape(value))'], name => 'reshape');
});
poll(qq{SELECT EXISTS (SELECT FROM ingest.maintenance_log WHERE action = 'index' AND status = 'error'
		  AND id > $log_before)}, 'the build with the reshaping expression fails');
is(sql(qq{SELECT sqlstate FROM ingest.maintenance_log WHERE action = 'index' AND status = 'error'
		  AND id > $log_before ORDER BY id LIMIT 1}), '0A000',
	'refused as the same ALTER TABLE run by hand is');
is(sql(q{SELECT count(*) FROM pg_attribute WHERE attrelid = 'ix_other'::regclass AND attname = 'value'
		  AND NOT attisdropped}), '1', 'the other managed table keeps its column');
sql(q{SELECT ingest.drop_index('ix', 'reshape')});

# A build that fails leaves the worker's lock timeout as it was: the
# index's (index_lock_timeout, an hour here) was set for the build only, so
# a later step waiting for a lock gives up after ingest.lock_timeout (1 s)
# and says so (55P03), instead of waiting an hour.
sql(q{ALTER SYSTEM SET ingest.index_lock_timeout = '1h'; SELECT pg_reload_conf()});
sql(q{INSERT INTO ix (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	  VALUES (gen_random_uuid(), 'thirteen', 'c1', 'api', now() - interval '2 days', 13)});
sql(q{SELECT ingest.add_index('ix', ARRAY['(1 / (value::int - 13))'], name => 'fails')});
poll(q{SELECT EXISTS (SELECT FROM ingest.maintenance_log WHERE action = 'index' AND status = 'error'
		  AND sqlstate = '22012')}, 'the index build fails on the partition (division by zero)');
sql(q{SELECT ingest.drop_index('ix', 'fails')});
poll(q{SELECT NOT EXISTS (SELECT FROM pg_indexes WHERE indexname LIKE 'ix%fails')
		  AND NOT EXISTS (SELECT FROM ingest_internal.index_drops)}, 'its declaration and leftovers are gone');
my $failed_before = sql(q{SELECT count(*) FROM ingest.maintenance_log WHERE sqlstate = '55P03'});
sql(q{SELECT ingest.configure('ix', premake => 3)});
$holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN; LOCK TABLE ix IN ACCESS EXCLUSIVE MODE});
poll(qq{SELECT count(*) > $failed_before FROM ingest.maintenance_log WHERE sqlstate = '55P03'},
	'a step blocked after the failed build gives up at ingest.lock_timeout (55P03)');
$holder->query_safe('ROLLBACK');
$holder->quit;
poll(q{SELECT count(*) = 4 FROM ingest.partitions WHERE event_table = 'ix'::regclass AND day >= (now() AT TIME ZONE 'UTC')::date},
	'and is done once the lock is gone');

ok(!$node->log_contains('terminated by signal 11'), 'no crash besides the one we caused');
$node->stop;
done_testing();
