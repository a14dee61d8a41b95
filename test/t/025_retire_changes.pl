# Changes to a day that commit after the worker's last fold before the
# day's retirement, while its DETACH ... CONCURRENTLY waits for them: the
# retired day's rollup hours take them in (they were lost with the day's
# stale marks), also when the detach ends later (a FINALIZE by hand ended
# it without settling the day's keys or hours); folds meanwhile leave
# them.  A failed maintenance step keeps its run's table lock.  A retired
# day made again (by hand, or attached by ingest.create_partitions) counts
# its new events alone.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use IngestRun;

my $node = PostgreSQL::Test::Cluster->new('retire_changes');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
ingest.lock_timeout = '60s'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ingest');
sub sql { return $node->safe_psql('postgres', shift); }

# A table with a day 40 days old (past its retention of 30) holding three
# events of one organization in one hour, folded.
sub old_day
{
	my ($tbl, $action) = @_;
	sql(qq{
		SELECT ingest.create_event_table('$tbl', retention => '30 days');
		SELECT ingest.configure('$tbl', retention_action => '$action');
		CREATE TABLE ${tbl}_old (LIKE $tbl);
	});
	sql(qq{SELECT format('ALTER TABLE $tbl ATTACH PARTITION ${tbl}_old FOR VALUES FROM (%L) TO (%L)',
	                     (current_date - 40)::timestamp AT TIME ZONE 'UTC',
	                     (current_date - 39)::timestamp AT TIME ZONE 'UTC') \\gexec});
	sql(qq{
		INSERT INTO $tbl (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
		SELECT '00000000-0000-4000-8000-000000000001', 'tx' || i, 'c1', 'api_call',
		       (current_date - 40)::timestamp AT TIME ZONE 'UTC' + interval '10 hours' + i * interval '1 minute', i
		  FROM generate_series(1, 3) i;
		SELECT ingest.fold_rollups('$tbl');
	});
}

# The retired day's usage: events, value_sum and value_max.
sub day_usage
{
	my ($tbl) = @_;
	return sql(qq{SELECT events || ' ' || value_sum || ' ' || value_max
	                FROM ingest.usage('$tbl', '00000000-0000-4000-8000-000000000001',
	                                  (current_date - 40)::timestamp AT TIME ZONE 'UTC',
	                                  (current_date - 39)::timestamp AT TIME ZONE 'UTC')});
}

my $log = q{SELECT string_agg(action || ' ' || status || coalesce(' ' || sqlstate, ''), ', ' ORDER BY id)
              FROM ingest.maintenance_log WHERE partition = 'public.%s'};

# 1. An UPDATE and a DELETE of the day, open before the run starts: the
# run's fold does not see them, and its detach waits for them.
old_day('rc', 'drop');
is(day_usage('rc'), '3 6 3', 'the day is folded');
my $writer = $node->background_psql('postgres');
$writer->query_safe(q{
	BEGIN;
	UPDATE rc SET value = 10 WHERE transaction_id = 'tx3';
	DELETE FROM rc WHERE transaction_id = 'tx1';
});
my $run = start_maintenance_run($node, 'rc');
ok(worker_waits_for_lock($node), 'the detach waits for the writer');
$writer->query_safe('COMMIT');
$run->{h}->finish;
is(sql(sprintf($log, 'rc_old')), 'detach ok, drop ok', 'the day is retired') or diag($run->{err});
is(day_usage('rc'), '2 12 10', "the retired day's hours have the changes committed during its detach");
is(sql(q{SELECT count(*) FROM ingest_side.rc_stale}), '0', 'no stale mark is left');
is(sql(q{SELECT count(*) FROM ingest_side.rc_keys}), '0', "the day's keys are forgotten");

# 2. A failed step (the table's configuration is being changed) does not
# cost the run its table's maintenance lock, which the step's abort
# released: the run takes it back.
old_day('rl', 'drop');
$writer->query_safe(q{BEGIN; SELECT ingest.configure('rl', premake => 4)});
sql(q{SELECT * FROM ingest.run_maintenance('rl')});
$writer->query_safe('COMMIT');
is(sql(sprintf($log, 'rl_old')), 'detach error 55P03', 'the detach fails');
unlike(slurp_file($node->logfile), qr/you don't own a lock/,
	'the runs held their table lock through their failed steps');

# 3. As 1, where the detach's end fails: a fold holds the fold lock, which
# the end of the detach does not wait for (the fold may be waiting for the
# day), and the day stays detach pending.  Folds leave its marks to its
# FINALIZE, here by hand.
old_day('rk', 'detach');
$writer->query_safe(q{
	BEGIN;
	UPDATE rk SET value = 20 WHERE transaction_id = 'tx2';
});
my $folder = $node->background_psql('postgres');
$run = start_maintenance_run($node, 'rk');
ok(worker_waits_for_lock($node), 'the detach waits for the writer');
$folder->query_safe(q{BEGIN; SELECT ingest_internal.lock_fold('rk'::regclass, true)});
$writer->query_safe('COMMIT');
$run->{h}->finish;
is(sql(sprintf($log, 'rk_old')), 'detach error 55P03', 'the end of the detach fails')
	or diag($run->{err});
is(sql(q{SELECT message FROM ingest.maintenance_log WHERE partition = 'public.rk_old'}),
	'the rollups of table "public.rk" are being folded', 'as the fold lock is held');
$folder->query_safe('COMMIT');
is(sql(q{SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'rk_old'::regclass}), 't',
	'the day is detach pending');
sql(q{SELECT ingest.fold_rollups('rk')});
is(sql(q{SELECT count(*) FROM ingest_side.rk_stale}), '1', 'a fold leaves the mark in the detaching day');
# a mark across the detaching day (a TRUNCATE's is of all hours) is split
# there: the rest of it is folded
sql(q{
	INSERT INTO rk (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('00000000-0000-4000-8000-000000000001', 'today', 'c1', 'api_call', now(), 5);
	SELECT ingest_internal.mark_stale('rk', NULL, current_date - 45, current_date + 1);
	SELECT ingest.fold_rollups('rk');
});
is(sql(q{SELECT count(*) || ' ' || bool_and(lo >= (current_date - 40)::timestamp AT TIME ZONE 'UTC'
                                            AND hi <= (current_date - 39)::timestamp AT TIME ZONE 'UTC')
           FROM ingest_side.rk_stale}),
	'2 true', "a rebuild's mark is folded but for the detaching day's hours");
is(sql(q{SELECT count(*) FROM ingest.rollup_verify('rk', current_date - 45, current_date + 1)}), '0',
	'the retained hours are exact');
# dropped by hand, the day ends its retirement as the worker's FINALIZE
# would (001_worker): its keys stayed in the ledger for good (read through
# the table, which does not show a day detach pending)
sql(q{DROP TABLE rk_old});
is(day_usage('rk'), '3 24 20', "the retired day's hours have the change");
is(sql(q{SELECT count(*) FROM ingest_side.rk_stale}), '0', 'no stale mark is left');
is(sql(q{SELECT string_agg(transaction_id, ',') FROM ingest_side.rk_keys}), 'today', "the day's keys are forgotten");

# 4. A retired day made again by hand (CREATE TABLE ... PARTITION OF) to
# load it anew: its hours are its raw events again, not the retired ones
# plus the new ones (which counted both).
is(day_usage('rc'), '2 12 10', 'the retired day before');
sql(q{SELECT format('CREATE TABLE rc_again PARTITION OF rc FOR VALUES FROM (%L) TO (%L)',
                    (current_date - 40)::timestamp AT TIME ZONE 'UTC',
                    (current_date - 39)::timestamp AT TIME ZONE 'UTC') \gexec});
sql(q{
	INSERT INTO rc (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('00000000-0000-4000-8000-000000000001', 'again', 'c1', 'api_call',
	        (current_date - 40)::timestamp AT TIME ZONE 'UTC' + interval '10 hours', 7);
});
is(day_usage('rc'), '1 7 7', 'the day made again has its own events, before a fold');
sql(q{SELECT ingest.fold_rollups('rc')});
is(day_usage('rc'), '1 7 7', 'and after it');
is(sql(q{SELECT count(*) FROM ingest.rollup_verify('rc', current_date - 41, current_date)}), '0',
	'the rollup equals the raw events');

# 5. That day dropped by hand (the oldest: a retirement, its hours stay),
# then made again empty by ingest.create_partitions (an ATTACH): its hours
# are its raw events again (the ATTACH marked its rows' hours: none).
sql(q{DROP TABLE rc_again});
sql(q{SELECT ingest.fold_rollups('rc')});
is(day_usage('rc'), '1 7 7', 'the day dropped by hand keeps its hours');
sql(q{SELECT ingest.configure('rc', retention => '60 days')});
sql(q{SELECT ingest.create_partitions('rc', current_date - 40, current_date - 40)});
is(day_usage('rc'), '', 'the day made again has no events');
sql(q{SELECT ingest.fold_rollups('rc')});
is(day_usage('rc'), '', 'nor after a fold');
# a day made ahead holds no rollup row: no mark (each day's premake marked
# the day, and the next fold scanned the whole rollup for it)
sql(q{SELECT ingest.create_partitions('rc', current_date + 20, current_date + 20)});
is(sql(q{SELECT count(*) FROM ingest_side.rc_stale}), '0', 'a day made ahead marks nothing');

# 6. Two retired days made again in the order ingest.create_partitions
# makes them, earliest first: both are their own events again (only the
# earliest was, at 23112fc: the later one counted its retired events too).
# A table with two days 40 and 39 days old (past its retention of 30),
# three events each (values 1, 2 and 3) in their tenth hour, folded, then
# both retired.
sub two_retired_days
{
	my ($tbl) = @_;
	sql(qq{
		SELECT ingest.create_event_table('$tbl', retention => '30 days');
		CREATE TABLE ${tbl}_a (LIKE $tbl);
		CREATE TABLE ${tbl}_b (LIKE $tbl);
	});
	for my $d ([ "${tbl}_a", 40 ], [ "${tbl}_b", 39 ])
	{
		my ($p, $ago) = @$d;
		sql(qq{SELECT format('ALTER TABLE $tbl ATTACH PARTITION $p FOR VALUES FROM (%L) TO (%L)',
		                     (current_date - $ago)::timestamp AT TIME ZONE 'UTC',
		                     (current_date - $ago + 1)::timestamp AT TIME ZONE 'UTC') \\gexec});
	}
	sql(qq{
		INSERT INTO $tbl (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
		SELECT '00000000-0000-4000-8000-000000000001', 'old' || d || '-' || i, 'c1', 'api_call',
		       (current_date + d)::timestamp AT TIME ZONE 'UTC' + interval '10 hours', i
		  FROM generate_series(-40, -39) d, generate_series(1, 3) i;
		SELECT ingest.fold_rollups('$tbl');
	});
	sql(qq{SELECT * FROM ingest.run_maintenance('$tbl')});
}
two_retired_days('rm');
is(sql(q{SELECT count(*) FROM ingest.maintenance_log
           WHERE partition IN ('public.rm_a', 'public.rm_b') AND action = 'detach' AND status = 'ok'}), '2',
	'both days are retired');
sql(q{SELECT ingest.configure('rm', retention => '60 days')});
sql(q{SELECT ingest.create_partitions('rm', current_date - 40, current_date - 39)});
sql(q{
	INSERT INTO rm (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	SELECT '00000000-0000-4000-8000-000000000001', 'new' || d, 'c1', 'api_call',
	       (current_date + d)::timestamp AT TIME ZONE 'UTC' + interval '10 hours', 1
	  FROM generate_series(-40, -39) d;
	SELECT ingest.fold_rollups('rm');
});
is(sql(q{SELECT count(*) FROM ingest.rollup_verify('rm', current_date - 41, current_date)}), '0',
	'the rollup equals the raw events of both days');

# 7. A hole: of two retired days, the earlier one made again alone.  The
# later one's hours stay retired: rollup_verify leaves them (it has no
# events to check them against), and a change to every hour (a TRUNCATE)
# leaves them as they were.  (Before, the first retained hour moved back
# to the day made again: verify found the hole's hours wrong, and the
# TRUNCATE's fold made them empty.)
two_retired_days('rh');
sql(q{SELECT ingest.configure('rh', retention => '60 days')});
sql(q{SELECT ingest.create_partitions('rh', current_date - 40, current_date - 40)});
sql(q{
	INSERT INTO rh (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('00000000-0000-4000-8000-000000000001', 'new', 'c1', 'api_call',
	        (current_date - 40)::timestamp AT TIME ZONE 'UTC' + interval '10 hours', 7);
	SELECT ingest.fold_rollups('rh');
});
# usage of day D-ago of table rh
sub rh_usage
{
	my ($ago) = @_;
	return sql(qq{SELECT events || ' ' || value_sum || ' ' || value_max
	                FROM ingest.usage('rh', '00000000-0000-4000-8000-000000000001',
	                                  (current_date - $ago)::timestamp AT TIME ZONE 'UTC',
	                                  (current_date - $ago + 1)::timestamp AT TIME ZONE 'UTC')});
}
is(rh_usage(40) . '|' . rh_usage(39), '1 7 7|3 6 3', 'the day made again is its event; the hole is retired');
is(sql(q{SELECT count(*) FROM ingest.rollup_verify('rh', current_date - 41, current_date)}), '0',
	'rollup_verify leaves the hours of the hole');
sql(q{TRUNCATE rh});
sql(q{SELECT ingest.fold_rollups('rh')});
is(rh_usage(40) . '|' . rh_usage(39), '|3 6 3', 'a TRUNCATE leaves the hours of the hole');
is(sql(q{SELECT count(*) FROM ingest.rollup_verify('rh', current_date - 41, current_date)}), '0',
	'and the rollup equals the raw events');
is(sql(q{SELECT retired <> '{}' FROM ingest.table_config WHERE event_table = 'rh'::regclass}), 't',
	'the hole is recorded');
# a day of the hole made again is retained again: its own events
sql(q{SELECT ingest.create_partitions('rh', current_date - 39, current_date - 39)});
sql(q{SELECT ingest.fold_rollups('rh')});
is(rh_usage(39), '', 'a day of the hole made again has its own events (none)');
# that day loaded, then dropped by hand: no retirement (it is not the
# oldest), so its events leave and the rollup follows (before, the day
# fell back into the hole, and its dropped event stayed billed)
sql(q{
	INSERT INTO rh (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('00000000-0000-4000-8000-000000000001', 'in-hole', 'c1', 'api_call',
	        (current_date - 39)::timestamp AT TIME ZONE 'UTC' + interval '10 hours', 5);
	SELECT ingest.fold_rollups('rh');
});
is(rh_usage(39), '1 5 5', 'the day in the hole is loaded');
sql(q{SELECT format('DROP TABLE %s', partition) FROM ingest_internal.bounds
       WHERE relid = 'rh'::regclass AND lower_bound = (current_date - 39)::timestamp AT TIME ZONE 'UTC' \gexec});
sql(q{SELECT ingest.fold_rollups('rh')});
is(rh_usage(39), '', 'dropped by hand, its events leave the rollup');
is(sql(q{SELECT count(*) FROM ingest.rollup_verify('rh', current_date - 41, current_date)}), '0',
	'which equals the raw events');

$writer->quit;
$folder->quit;
$node->stop;
done_testing();
