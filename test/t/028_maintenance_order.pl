# The background worker's run over several tables makes and retires every
# table's days before it builds any table's indexes: a concurrent build
# that waits for an old snapshot (up to ingest.index_lock_timeout) holds up
# no other table's new days.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('maintenance_order');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
ingest.index_lock_timeout = '10min'
max_worker_processes = 16
});
$node->start;
sub sql { return $node->safe_psql('postgres', shift); }

sql(q{CREATE EXTENSION ingest});
# ev_a sorts first: the worker takes tables in OID order
sql(q{SELECT ingest.create_event_table('ev_a'); SELECT ingest.create_event_table('ev_b', premake => 1)});
ok(sql(q{SELECT 'ev_a'::regclass::oid < 'ev_b'::regclass::oid}) eq 't', 'ev_a is maintained first');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM ingest.event_tables WHERE last_maintenance IS NOT NULL}),
	'the worker maintains both tables');

# A reader whose snapshot is older than what follows, then in one
# transaction, so that a run of the worker finds both at its start: an
# index on every day of ev_a, whose builds wait for the reader, and two
# more days for ev_b.  (The run before the change planned ev_a, then
# built its indexes, then planned ev_b; should the commit fall between
# its plans of ev_a and ev_b, that run made ev_b's days first and the
# change went unseen.  The new run plans ev_b's days before any build.)
my $reader = $node->background_psql('postgres');
$reader->query_safe(q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1});
sql(q{
	BEGIN;
	SELECT ingest.add_index('ev_a', ARRAY['code'], phase => 'always');
	SELECT ingest.configure('ev_b', premake => 3);
	COMMIT;
});
my $days_b = q{SELECT newest_day = (now() AT TIME ZONE 'UTC')::date + 3 FROM ingest.event_tables
                WHERE event_table = 'ev_b'::regclass};
my $building = q{SELECT EXISTS (SELECT FROM pg_stat_activity
                                 WHERE backend_type = 'ingest worker' AND wait_event_type = 'Lock'
                                   AND query LIKE 'CREATE INDEX CONCURRENTLY%')};
ok($node->poll_query_until('postgres', $building), "ev_a's index build waits for the reader");
ok($node->poll_query_until('postgres', $days_b), "ev_b's new days are made meanwhile")
	or diag(sql(q{SELECT string_agg(format('%s %s %s %s', relid::regclass, action, partition, status), E'\n' ORDER BY id)
	               FROM ingest.maintenance_log}));
is(sql($building), 't', "and ev_a's build still waits");
is(sql(q{SELECT count(*) FROM ingest.maintenance_log WHERE relid = 'ev_a'::regclass AND action = 'index'}), '0',
	'no build of ev_a has ended');

# The reader ends: every day of ev_a gets its index, and no step failed.
$reader->query_safe('COMMIT');
$reader->quit;
ok($node->poll_query_until('postgres', q{
	SELECT NOT EXISTS (SELECT FROM ingest.run_maintenance('ev_a', dry_run => true) WHERE action = 'index')
	   AND EXISTS (SELECT FROM ingest.maintenance_log WHERE relid = 'ev_a'::regclass AND action = 'index')}),
	"ev_a's days get their index");
is(sql(q{SELECT count(*) >= 4 FROM ingest.maintenance_log l
          WHERE l.relid = 'ev_a'::regclass AND l.action = 'index' AND l.status = 'ok'}),
	't', 'a build for each of the four days of ev_a');
is(sql(q{SELECT count(*) FROM ingest.maintenance_log WHERE status = 'error'}), '0', 'no step failed');
is(sql(q{SELECT count(*) FROM ingest.event_tables WHERE consecutive_failures > 0}), '0',
	'both tables are healthy');

done_testing();
