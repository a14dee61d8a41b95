# ingest.configure() in a transaction that goes on to lock its table, while
# a maintenance run retires a day of that table.  The detach holds the
# table's lock when it reads the configuration row (still_due in
# maintenance.c); had it waited for the configuring transaction's row lock,
# that transaction's table lock would deadlock with it and one of the two
# fail with 40P01.  The detach fails with 55P03 instead, after the day was
# marked as retiring: the mark is taken back, and the next run retires it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestRun;

my $node = PostgreSQL::Test::Cluster->new('configure_lock');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
ingest.lock_timeout = '60s'
deadlock_timeout = '100ms'
});
$node->start;
sub sql { return $node->safe_psql('postgres', shift); }

sql(q{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('cf', retention => '30 days');
	CREATE TABLE cf_old (LIKE cf);
});
sql(q{SELECT format('ALTER TABLE cf ATTACH PARTITION cf_old FOR VALUES FROM (%L) TO (%L)',
                    (current_date - 40)::timestamp AT TIME ZONE 'UTC',
                    (current_date - 39)::timestamp AT TIME ZONE 'UTC') \gexec});
my $log = q{SELECT string_agg(action || ' ' || status, ', ' ORDER BY id)
              FROM ingest.maintenance_log WHERE partition = 'public.cf_old'};

my $owner = $node->background_psql('postgres');
$owner->query_safe(q{BEGIN; SELECT ingest.configure('cf', premake => 4)});

my $run = start_maintenance_run($node, 'cf');
# the run either waits for the configuring transaction or has passed the day
ok(worker_waits_for_lock($node, "($log) IS NOT NULL"), 'the maintenance run has reached the day');

# what ingest.create_partitions() or an ATTACH would take next
my $locked = eval { $owner->query_safe(q{LOCK TABLE cf IN SHARE UPDATE EXCLUSIVE MODE; SELECT 'locked'}) };
is($locked, 'locked', 'the configuring transaction locks its table with no deadlock') or diag($@);
$owner->query_safe('COMMIT');
$run->{h}->finish;
like($run->{out}, qr/^detach\|public\.cf_old$/m, 'the run planned the detach') or diag($run->{err});
is(sql($log), 'detach error', 'the detach failed');
is(sql(q{SELECT sqlstate || ': ' || message FROM ingest.maintenance_log WHERE partition = 'public.cf_old'}),
	'55P03: configuration of table "cf" is being changed by another transaction',
	'as a lock not available, saying why');
is(sql(q{SELECT consecutive_failures || ' ' || last_sqlstate FROM ingest.event_tables WHERE event_table = 'cf'::regclass}),
	'1 55P03', 'counted as a failure of the table');
is(sql(q{SELECT count(*) FROM ingest_internal.retired}), '0', 'the day keeps no retirement mark');
is(sql(q{SELECT premake FROM ingest.table_config WHERE event_table = 'cf'::regclass}), '4',
	"configure()'s change is kept");

sql(q{SELECT * FROM ingest.run_maintenance('cf')});
is(sql($log), 'detach error, detach ok, drop ok', 'the next run retires the day');
is(sql(q{SELECT consecutive_failures FROM ingest.event_tables WHERE event_table = 'cf'::regclass}), '0',
	'and the table is healthy again');

# The same, where the configuring transaction holds a lock on the day
# itself (an index build on it, a read of a detached day): the retirement
# waits for that lock before it reads the policy, never holding the policy
# while it waits (it did, and deadlocked with the configure).
sql(q{CREATE TABLE cf_day (LIKE cf)});
sql(q{SELECT format('ALTER TABLE cf ATTACH PARTITION cf_day FOR VALUES FROM (%L) TO (%L)',
                    (current_date - 38)::timestamp AT TIME ZONE 'UTC',
                    (current_date - 37)::timestamp AT TIME ZONE 'UTC') \gexec});
sql(q{SELECT ingest.configure('cf', retention_action => 'detach')});
my $day_log = q{SELECT string_agg(action || ' ' || status || coalesce(' ' || sqlstate, ''), ', ' ORDER BY id)
                  FROM ingest.maintenance_log WHERE partition = 'public.cf_day'};

$owner->query_safe(q{BEGIN; LOCK TABLE cf_day IN SHARE MODE});
my $r = start_maintenance_run($node, 'cf');
ok(worker_waits_for_lock($node), 'the detach waits for the lock on the day');
my ($out, $failed) = $owner->query(q{SELECT ingest.configure('cf', premake => 5)});
is($failed, 0, 'the transaction holding the day configures the table') or diag($owner->{stderr});
$owner->query_safe('COMMIT');
$r->{h}->finish;
is(sql($day_log), 'detach ok', 'the day is detached once that transaction ends') or diag($r->{err});

sql(q{SELECT * FROM ingest.run_maintenance('cf')});	# detached, whatever came before
sql(q{SELECT ingest.configure('cf', retention_action => 'drop')});
$owner->query_safe(q{BEGIN; SELECT count(*) FROM cf_day});
$r = start_maintenance_run($node, 'cf');
ok(worker_waits_for_lock($node), 'the drop waits for a reader of the detached day');
($out, $failed) = $owner->query(q{SELECT ingest.configure('cf', premake => 6)});
is($failed, 0, 'the reader configures the table') or diag($owner->{stderr});
$owner->query_safe('COMMIT');
$r->{h}->finish;
is(sql($day_log), 'detach ok, drop ok', 'the day is dropped once the reader ends') or diag($r->{err});
is(sql(q{SELECT premake FROM ingest.table_config WHERE event_table = 'cf'::regclass}), '6',
	"the configuring transactions' changes are kept");

$owner->quit;
$node->stop;
done_testing();
