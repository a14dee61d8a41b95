# A non-superuser runs the README's quick start and the whole demo
# (test/demo.sh) on tables of its own, read from those files, not copied;
# another non-superuser can touch none of them.  A third runs the demo with
# its clock at 00:05 UTC, where the 20 minutes before it fall in yesterday,
# which a new table has no partition for.
use strict;
use warnings;
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = dirname(__FILE__) . '/../..';
sub slurp { my ($f) = @_; open(my $fh, '<', $f) or die "$f: $!"; local $/; return <$fh>; }

my ($quick) = slurp("$top/README.md") =~ /^## Quick start\n\n```sql\n(.*?)^```/ms;
my ($demo) = slurp("$top/test/demo.sh") =~ /^run -e <<'SQL'\n(.*?)^SQL$/ms;
ok(defined $quick && defined $demo, 'the quick start and the demo are found');
# the superuser installs the extension once; everything else is the user's
for ($quick, $demo) { s/^CREATE EXTENSION ingest;\n//m or die "no CREATE EXTENSION"; }
(my $quick2 = $quick) =~ s/usage_events/quick_events/g;

my $node = PostgreSQL::Test::Cluster->new('nonsuper');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.maintenance_interval = 1
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION ingest;
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE carol LOGIN;
	CREATE SCHEMA alice AUTHORIZATION alice;
	CREATE SCHEMA bob AUTHORIZATION bob;
	CREATE SCHEMA carol AUTHORIZATION carol;
	ALTER ROLE alice SET search_path = alice;
	ALTER ROLE bob SET search_path = bob;
	ALTER ROLE carol SET search_path = carol;
});

sub as
{
	my ($role, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql,
		extra_params => ['-U', $role, '-v', 'ON_ERROR_STOP=1']);
	return ($rc, $out, $err);
}

sub as_out { my ($rc, $out, $err) = as(@_); die $err if $rc; return $out; }

my ($rc, $out, $err) = as('alice', $quick2);
is($rc, 0, 'alice runs the quick start') or diag($err);
($rc, $out, $err) = as('alice', $demo);
is($rc, 0, 'alice runs the demo') or diag($err);
like($out, qr/^1010\|1010$/m, 'the demo stores 1,010 events, each key once');
like($out, qr/^0$/m, 'the rollups agree with the raw events');
# five minutes past midnight UTC, today
(my $demo_midnight = $demo) =~
  s/now\(\)/(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '5 minutes')/g;
($rc, $out, $err) = as('carol', $demo_midnight);
is($rc, 0, 'carol runs the demo at 00:05 UTC') or diag($err);
like($out, qr/^1010\|1010$/m, 'at 00:05 UTC the demo stores 1,010 events, each key once');
is(as_out('carol', q{SELECT count(*) FROM ingest.rejects}), '2', 'at 00:05 UTC only the bad row and the re-stamped retry are set aside');
ok($node->poll_query_until('postgres',
		q{SELECT NOT EXISTS (SELECT FROM pg_class WHERE relname = 'usage_events_old')}),
	"the worker retires alice's and carol's old partitions");
is(as_out('alice', q{SELECT count(*) > 0 FROM ingest.maintenance_log WHERE action = 'drop' AND status = 'ok'}), 't',
	'alice reads the log of her tables');

# bob can use none of it
my @denied = (
	[q{SELECT * FROM ingest.load('alice.usage_events', E'6f1c1f4e-0000-4000-8000-000000000001,b1,c,api,2030-01-01,{},1,')}, 'load'],
	[q{COPY alice.usage_events (organization_id, transaction_id, external_customer_id, code, "timestamp") FROM STDIN (FORMAT csv);
6f1c1f4e-0000-4000-8000-000000000001,b2,c,api,2030-01-01
\.}, 'COPY'],
	[q{SELECT ingest.configure('alice.usage_events', retention => '1 day')}, 'configure'],
	[q{SELECT ingest.unmanage_table('alice.usage_events')}, 'unmanage_table'],
	[q{SELECT * FROM ingest.run_maintenance('alice.usage_events')}, 'run_maintenance'],
	[q{SELECT ingest.create_partitions('alice.usage_events', current_date - 3, current_date - 1)}, 'create_partitions'],
	[q{SELECT ingest.add_index('alice.usage_events', ARRAY['code'])}, 'add_index'],
	[q{SELECT ingest.create_rollup('alice.usage_events', 'by_model', ARRAY['model'])}, 'create_rollup'],
	[q{SELECT ingest.fold_rollups('alice.usage_events')}, 'fold_rollups'],
	[q{SELECT * FROM ingest.usage('alice.usage_events', '6f1c1f4e-0000-4000-8000-000000000001', now() - interval '1 hour', now())}, 'usage'],
	[q{SELECT ingest.manage_table('alice.usage_events')}, 'manage_table'],
	[q{DELETE FROM ingest.table_config}, 'configuration'],
	[q{INSERT INTO ingest_internal.retired VALUES (1, 2)}, 'internal tables'],
);
for my $d (@denied)
{
	($rc, $out, $err) = as('bob', $d->[0]);
	like($err, qr/permission denied|must be owner|42501/, "bob cannot $d->[1] alice's table");
}
is(as_out('alice', q{SELECT count(*) FROM ingest.rejects}), '2', 'alice sees her reject and her conflict');
is(as_out('bob', q{SELECT count(*) FROM ingest.rejects}), '0', "bob sees none of alice's rejects");
is($node->safe_psql('postgres', q{SELECT count(*) FROM alice.usage_events WHERE transaction_id LIKE 'b%'}),
	'0', 'nothing of bob reached the table');
is($node->safe_psql('postgres', q{SELECT retention FROM ingest.table_config WHERE event_table = 'alice.usage_events'::regclass}),
	'30 days', "alice's policy is unchanged");

done_testing();
