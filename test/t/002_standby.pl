# On a streaming standby the launcher idles, says so once, and starts work
# after promotion.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
# The primary's worker is off so that the standby inherits missing partitions.
$primary->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
ingest.enabled = off
});
$primary->start;
$primary->safe_psql('postgres', q{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('template');
	CREATE TABLE ev (LIKE template) PARTITION BY RANGE ("timestamp");
	SELECT ingest.manage_table('ev', premake => 2);
});
$primary->backup('b');

my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->append_conf('postgresql.conf', 'ingest.enabled = on');
$standby->start;
$primary->wait_for_catchup($standby);

$standby->wait_for_log(qr/ingest launcher is idle while the server is in recovery/);
sleep(3);
my $log = slurp_file($standby->logfile);
my $said = () = $log =~ /ingest launcher is idle while the server is in recovery/g;
is($said, 1, 'the standby says once that it is idle');
unlike($log, qr/ERROR|terminated by signal/, 'the standby logs no error');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM ingest.partitions WHERE event_table = 'ev'::regclass}),
	'0', 'nothing is done on the standby');
my ($rc, $out, $err) = $standby->psql('postgres', 'SELECT * FROM ingest.run_maintenance()');
like($err, qr/cannot run partition maintenance during recovery/, 'a manual run is refused on a standby');

$standby->promote;
ok($standby->poll_query_until('postgres',
	q{SELECT count(*) = 3 FROM ingest.partitions WHERE event_table = 'ev'::regclass}),
	'after promotion the worker makes the partitions');

$standby->stop;
$primary->stop;
done_testing();
