# Shared by the TAP tests that watch maintenance workers: start a manual
# run in the background, wait until its worker waits for a lock, wait for
# a database's worker.
package IngestRun;
use strict;
use warnings;
use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::Utils;
our @EXPORT = qw(start_maintenance_run worker_waits_for_lock worker_in_database);

# ingest.run_maintenance($tbl) in psql in the background, READ COMMITTED
# whatever the database's default; returns {h, out, err}, and
# $run->{h}->finish waits for it.  Its rows are "action|partition".
sub start_maintenance_run
{
	my ($node, $tbl) = @_;
	my $run = { out => '', err => '' };
	$run->{h} = IPC::Run::start(
		[
			'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-h', $node->host, '-p', $node->port,
			'-d', 'postgres', '-c', q{SET default_transaction_isolation = 'read committed'},
			'-c', qq{SELECT action, partition FROM ingest.run_maintenance('$tbl')}
		],
		'>', \$run->{out}, '2>', \$run->{err},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	return $run;
}

# True once a maintenance worker waits for a heavyweight lock, or $or (an
# SQL condition) holds.
sub worker_waits_for_lock
{
	my ($node, $or) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT EXISTS (SELECT FROM pg_stat_activity
		                WHERE backend_type = 'ingest worker' AND wait_event_type = 'Lock')
		    OR @{[ $or // 'false' ]}});
}

# True once database $db has a maintenance worker.
sub worker_in_database
{
	my ($node, $db) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT EXISTS (SELECT FROM pg_stat_activity
		                WHERE backend_type = 'ingest worker' AND datname = '$db')});
}

1;
