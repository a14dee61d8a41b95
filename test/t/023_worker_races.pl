# A maintenance run against what a table's owner does while it runs, where
# the run waits for a lock and finds the world changed when it gets it:
#  1. a database whose default isolation is REPEATABLE READ: a drop waits
#     for a reader of the detached day that has configured the table and
#     then commits.  In its own snapshot the worker could not lock the
#     changed configuration (40001); it runs READ COMMITTED whatever the
#     database's default.
#  2. the day a create step waits to make is made by the waited-for
#     transaction: the step is logged as skipped, not failed.
#  3. a partition renamed while the run waits: the closing VACUUM (FREEZE)
#     finds it by OID, not by the name the plan saw.
#  4. a retired day attached again by the reader its drop waits for: the
#     drop lets it be, logged as skipped.
#  5. a partition renamed while the drop of an index no longer declared
#     waits for it: the index is renamed with it, and dropped by its new
#     name.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestRun;

my $node = PostgreSQL::Test::Cluster->new('worker_races');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
ingest.lock_timeout = '60s'
});
$node->start;
sub sql { return $node->safe_psql('postgres', shift); }

sql(q{CREATE EXTENSION ingest});

# --- 1. a drop under a database default of REPEATABLE READ ---------------
sql(q{
	ALTER DATABASE postgres SET default_transaction_isolation = 'repeatable read';
	SELECT ingest.create_event_table('rr', retention => '30 days');
	SELECT ingest.configure('rr', retention_action => 'detach');
	CREATE TABLE rr_old (LIKE rr);
});
sql(q{SELECT format('ALTER TABLE rr ATTACH PARTITION rr_old FOR VALUES FROM (%L) TO (%L)',
                    (current_date - 40)::timestamp AT TIME ZONE 'UTC',
                    (current_date - 39)::timestamp AT TIME ZONE 'UTC') \gexec});
my $rr_log = q{SELECT string_agg(action || ' ' || status || coalesce(' ' || sqlstate, ''), ', ' ORDER BY id)
                 FROM ingest.maintenance_log WHERE partition = 'public.rr_old'};
# a caller must run it READ COMMITTED; the run itself is the worker's
sql(q{SET default_transaction_isolation = 'read committed';
      SELECT * FROM ingest.run_maintenance('rr')});
is(sql($rr_log), 'detach ok', 'the day is detached and kept');
sql(q{SELECT ingest.configure('rr', retention_action => 'drop')});

my $owner = $node->background_psql('postgres');
$owner->query_safe(q{BEGIN; SELECT count(*) FROM rr_old; SELECT ingest.configure('rr', on_error => 'reject')});
my $run = start_maintenance_run($node, 'rr');
ok(worker_waits_for_lock($node), 'the drop waits for the reader of the day');
$owner->query_safe('COMMIT');
$run->{h}->finish;
like($run->{out}, qr/^drop\|public\.rr_old$/m, 'the run planned the drop') or diag($run->{err});
is(sql($rr_log), 'detach ok, drop ok', 'the drop goes on once the reader has committed');
is(sql(q{SELECT to_regclass('public.rr_old') IS NULL}), 't', 'the day is gone');
is(sql(q{SELECT on_error FROM ingest.table_config WHERE event_table = 'rr'::regclass}), 'reject',
	"configure()'s change is kept");
sql(q{ALTER DATABASE postgres RESET default_transaction_isolation});
$owner->query_safe(q{SET default_transaction_isolation = 'read committed'});

# --- 2. a day made by the transaction a create waits for ------------------
sql(q{SELECT ingest.create_event_table('mm')});
my $day = sql(q{SELECT (now() AT TIME ZONE 'UTC')::date + 3});
my $part = sql(qq{SELECT partition FROM ingest.partitions WHERE event_table = 'mm'::regclass AND day = '$day'});
sql(qq{DROP TABLE $part});
$owner->query_safe(q{BEGIN; LOCK TABLE mm IN SHARE UPDATE EXCLUSIVE MODE});
$run = start_maintenance_run($node, 'mm');
ok(worker_waits_for_lock($node), 'the create waits for the transaction holding the table');
$owner->query_safe(qq{SELECT ingest.create_partitions('mm', '$day', '$day'); COMMIT});
$run->{h}->finish;
like($run->{out}, qr/^create\|public\.\Q$part\E$/m, 'the run planned the day') or diag($run->{err});
is(sql(qq{SELECT status || ': ' || message FROM ingest.maintenance_log
           WHERE relid = 'mm'::regclass AND action = 'create'}),
	"skipped: made meanwhile: [$day 00:00:00+00, " . sql(qq{SELECT '$day'::date + 1}) . ' 00:00:00+00)',
	'the create is skipped as made meanwhile, not failed');
is(sql(q{SELECT consecutive_failures FROM ingest.event_tables WHERE event_table = 'mm'::regclass}), '0',
	'the table is healthy');
is(sql(qq{SELECT count(*) FROM ingest.partitions WHERE event_table = 'mm'::regclass AND day = '$day'}), '1',
	'the day exists once');

# --- 3. a closing day renamed while the run waits -------------------------
sql(q{
	SELECT ingest.create_event_table('fz');
	CREATE TABLE fz_old (LIKE fz);
});
sql(q{SELECT format('ALTER TABLE fz ATTACH PARTITION fz_old FOR VALUES FROM (%L) TO (%L)',
                    (current_date - 5)::timestamp AT TIME ZONE 'UTC',
                    (current_date - 4)::timestamp AT TIME ZONE 'UTC') \gexec});
# no declared index (they are found by names made from the day's), so
# that the day is ready to close whatever it is called
sql(q{SELECT ingest.drop_index('fz', name) FROM ingest.index_config WHERE event_table = 'fz'::regclass});
# the day's creates wait for the owner, who renames the old day meanwhile
my $today = sql(q{SELECT partition FROM ingest.partitions
                   WHERE event_table = 'fz'::regclass AND day = (now() AT TIME ZONE 'UTC')::date});
sql(qq{DROP TABLE $today});
$owner->query_safe(q{BEGIN; LOCK TABLE fz IN SHARE UPDATE EXCLUSIVE MODE});
$run = start_maintenance_run($node, 'fz');
ok(worker_waits_for_lock($node), 'the run waits for the transaction holding the table');
$owner->query_safe(q{ALTER TABLE fz_old RENAME TO fz_renamed; COMMIT});
$run->{h}->finish;
like($run->{out}, qr/^freeze\|public\.fz_renamed$/m, 'the run froze the day under its new name')
	or diag($run->{err});
is(sql(q{SELECT string_agg(action || ' ' || status || coalesce(' ' || sqlstate, ''), ', ' ORDER BY id)
           FROM ingest.maintenance_log WHERE relid = 'fz'::regclass
            AND action IN ('summarize', 'analyze', 'freeze')}),
	'summarize ok, analyze ok, freeze ok', 'the day is closed under its new name');
is(sql(q{SELECT string_agg(step, ',' ORDER BY step) FROM ingest_internal.partition_closed
          WHERE partition_oid = 'fz_renamed'::regclass}),
	'analyze,freeze,summarize', 'every closing step is recorded');
is(sql(q{SELECT last_vacuum IS NOT NULL FROM pg_stat_all_tables WHERE relid = 'fz_renamed'::regclass}),
	't', 'the renamed day was vacuumed');
is(sql(q{SELECT partition FROM ingest.maintenance_log WHERE relid = 'fz'::regclass AND action = 'freeze'}),
	'public.fz_renamed', 'and the log names it as it is called now');

# --- 4. a retired day attached again while its drop waits ----------------
sql(q{
	SELECT ingest.create_event_table('ag', retention => '30 days');
	SELECT ingest.configure('ag', retention_action => 'detach');
	CREATE TABLE ag_old (LIKE ag);
});
my $ag_attach = sql(q{SELECT format('ALTER TABLE ag ATTACH PARTITION ag_old FOR VALUES FROM (%L) TO (%L)',
                                   (current_date - 40)::timestamp AT TIME ZONE 'UTC',
                                   (current_date - 39)::timestamp AT TIME ZONE 'UTC')});
sql($ag_attach);
sql(q{SELECT * FROM ingest.run_maintenance('ag')});
sql(q{SELECT ingest.configure('ag', retention_action => 'drop')});
$owner->query_safe(q{BEGIN; SELECT count(*) FROM ag_old});
$run = start_maintenance_run($node, 'ag');
ok(worker_waits_for_lock($node), 'the drop waits for the reader of the detached day');
$owner->query_safe("$ag_attach; COMMIT");
$run->{h}->finish;
like($run->{out}, qr/^drop\|public\.ag_old$/m, 'the run planned the drop') or diag($run->{err});
is(sql(q{SELECT string_agg(action || ' ' || status, ', ' ORDER BY id)
           FROM ingest.maintenance_log WHERE relid = 'ag'::regclass AND partition = 'public.ag_old'}),
	'detach ok, drop skipped', 'the drop lets the day attached again be');
is(sql(q{SELECT message FROM ingest.maintenance_log WHERE relid = 'ag'::regclass AND action = 'drop'}),
	'no longer due: the day was attached again', 'and says why');
is(sql(q{SELECT count(*) FROM pg_inherits WHERE inhrelid = 'ag_old'::regclass AND inhparent = 'ag'::regclass}),
	'1', 'the day is attached');
is(sql(q{SELECT count(*) FROM ingest_internal.retired WHERE partition_oid = 'ag_old'::regclass}), '0',
	'and no longer marked as retiring');

# --- 5. a partition renamed while an index drop waits for it --------------
sql(q{SELECT ingest.create_event_table('di');
      SELECT ingest.drop_index('di', 'brin_timestamp')});
my $dpart = sql(q{SELECT partition FROM ingest.partitions WHERE event_table = 'di'::regclass
                   ORDER BY day LIMIT 1});
$owner->query_safe(qq{BEGIN; LOCK TABLE $dpart IN SHARE UPDATE EXCLUSIVE MODE});
$run = start_maintenance_run($node, 'di');
ok(worker_waits_for_lock($node), 'the index drop waits for the day');
$owner->query_safe(qq{ALTER TABLE $dpart RENAME TO di_renamed; COMMIT});
$run->{h}->finish;
like($run->{out}, qr/^drop_index\|public\.di_renamed_brin_timestamp$/m, 'the run dropped the index by its new name')
	or diag($run->{err});
is(sql(q{SELECT status FROM ingest.maintenance_log WHERE relid = 'di'::regclass
          AND partition = 'public.di_renamed_brin_timestamp'}),
	'ok', 'the index was dropped, logged by its new name');
is(sql(q{SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND tablename LIKE 'di%'}), '0',
	'no partition keeps the index');
is(sql(q{SELECT count(*) FROM ingest_internal.index_drops}), '0', 'the dropped declaration is forgotten');

$owner->quit;
$node->stop;
done_testing();
