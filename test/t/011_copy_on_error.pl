# PostgreSQL 17's COPY ... (ON_ERROR ignore) into a managed table: the hook
# leaves it to plain COPY, whose own error handling skips the bad row, and
# ingest's row trigger still deduplicates, exactly.  So does it COPY's
# DEFAULT marker (PostgreSQL 16), which the loader took for the field's
# text.  Skipped before 17.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('onerror');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
});
$node->start;
plan skip_all => 'COPY ON_ERROR needs PostgreSQL 17'
  if $node->safe_psql('postgres', 'SHOW server_version_num') < 170000;

my $org = '00000000-0000-0000-0000-0000000000ef';
my $at = $node->safe_psql('postgres', q{SELECT date_trunc('day', now(), 'UTC') + interval '1 hour'});
$node->safe_psql('postgres', q{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('ev', premake => 1);
});
my $cols = 'organization_id, transaction_id, external_customer_id, code, "timestamp", value';
my ($rc, $out, $err) = $node->psql('postgres',
	"COPY ev ($cols) FROM STDIN (FORMAT csv, ON_ERROR ignore);\n"
	  . "$org,a1,c1,api,$at,1\n"
	  . "$org,a2,c1,api,$at,not-a-number\n"
	  . "$org,a1,c1,api,$at,1\n"
	  . "$org,a3,c1,api,$at,2\n"
	  . "\\.\n");
is($rc, 0, 'COPY with ON_ERROR ignore succeeds') or diag($err);
like($err, qr/1 row was skipped/, "PostgreSQL's own handling skipped the bad row");
is($node->safe_psql('postgres', 'SELECT string_agg(transaction_id, \' \' ORDER BY transaction_id) FROM ev'),
	'a1 a3', 'the duplicate is stored once, the bad row not at all');
is($node->safe_psql('postgres', q{
	SELECT string_agg(transaction_id, ' ' ORDER BY transaction_id) FROM ingest_side.ev_keys}),
	'a1 a3', 'the ledger holds exactly the stored keys');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM ingest.rollup_verify('ev', '-infinity', 'infinity')}),
	'0', 'the rollup equals the raw events');

($rc, $out, $err) = $node->psql('postgres',
	"COPY ev ($cols, properties) FROM STDIN (FORMAT csv, DEFAULT 'DFLT');\n"
	  . "$org,d1,c1,api,$at,1,DFLT\n"
	  . "$org,a1,c1,api,$at,1,DFLT\n"
	  . "\\.\n");
is($rc, 0, 'COPY with a DEFAULT marker succeeds') or diag($err);
is($node->safe_psql('postgres', q{SELECT properties FROM ev WHERE transaction_id = 'd1'}),
	'{}', 'the marked field takes its default');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ev}), '3', 'the duplicate is not stored');

$node->stop;
done_testing();
