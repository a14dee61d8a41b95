# Shared by the TAP tests that kill a backend: the postmaster then kills
# every backend and, with the test clusters' restart_after_crash off, goes
# down; start it again, which runs crash recovery.
package IngestCrash;
use strict;
use warnings;
use Exporter 'import';
our @EXPORT = qw(kill_and_recover);

sub kill_and_recover
{
	my ($node, $pid, @sessions) = @_;

	kill 'KILL', $pid;
	eval { $_->quit; } for @sessions;
	for (my $i = 0; $i < 600 && -e $node->data_dir . '/postmaster.pid'; $i++)
	{
		select(undef, undef, undef, 0.1);
	}
	$node->_update_pid(0);
	$node->start;
	return;
}

1;
