# Loader fuzz test: bounded and seeded (INGEST_FUZZ_SEED, INGEST_FUZZ_CASES).
# Mutated csv, text, jsonl and binary payloads go through ingest.load and
# COPY FROM STDIN (the hook).  Whatever each case does (loads, sets rows
# aside or fails), afterwards no backend has crashed, no key is stored
# twice, the ledger holds exactly the stored events' keys and the rollup
# equals the raw events.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $seed = $ENV{INGEST_FUZZ_SEED} // 20261126;
my $cases = $ENV{INGEST_FUZZ_CASES} // 160;
srand($seed);
note("seed $seed, $cases cases");

my $node = PostgreSQL::Test::Cluster->new('fuzz');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
});
$node->start;
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
my $day = $node->safe_psql('postgres', q{SELECT date_trunc('day', now(), 'UTC')});
$node->safe_psql('postgres', q{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('ev', premake => 1);
});

my @orgs = map { sprintf('00000000-0000-0000-0000-%012d', $_) } 1 .. 3;

# A valid row: a key drawn from a small space, so duplicates and conflicts
# happen, and a timestamp sometimes outside every partition.
sub row
{
	my $org = $orgs[ int(rand(@orgs)) ];
	my $tx = 'tx' . int(rand(400));
	my $minutes = int(rand(3 * 24 * 60)) - 24 * 60;
	my $ts = qq{'$day'::timestamptz + interval '$minutes minutes'};
	my $value = rand() < 0.1 ? '' : int(rand(1000)) / 10;
	return { org => $org, tx => $tx, ts => $ts, value => $value };
}

# Turn a payload into a damaged one, in one of several ways.
sub mutate
{
	my ($s) = @_;
	my $how = int(rand(9));
	my $pos = length($s) ? int(rand(length($s))) : 0;
	return $s if $how == 0;
	return substr($s, 0, $pos) if $how == 1;    # truncated
	return substr($s, 0, $pos) . substr($s, $pos + 1) if $how == 2;    # a byte gone
	return substr($s, 0, $pos) . (qw(" \\ , ; { } \t \r \n ' . \\.)[ int(rand(12)) ]) . substr($s, $pos)
	  if $how == 3;                                                       # a special character
	return substr($s, 0, $pos) . ('x' x int(rand(3000))) . substr($s, $pos) if $how == 4;    # a long run
	return $s . "\n" . $s if $how == 5;    # everything twice
	return substr($s, 0, $pos) . "\n\\.\n" . substr($s, $pos) if $how == 6;    # an end marker
	return substr($s, 0, $pos) . chr(0xc3) . substr($s, $pos) if $how == 7;   # broken UTF-8
	return join("\n", reverse split /\n/, $s);                                    # lines reordered
}

# The rows of a case rendered by the server as csv, text or jsonl text.
sub rendered
{
	my ($format, @rows) = @_;
	my $values = join(",\n",
		map {
			my $v = $_->{value} eq '' ? 'NULL' : $_->{value};
			"('$_->{org}'::uuid, '$_->{tx}', 'c' || ${v}::int % 3, 'api', $_->{ts}, '{\"k\": 1}'::jsonb, ${v}::float8)"
		} @rows);
	my $select = "SELECT * FROM (VALUES $values) v(organization_id, transaction_id, external_customer_id, code, ts, properties, value)";
	if ($format eq 'jsonl')
	{
		return $node->safe_psql('postgres', qq{
			SELECT string_agg(json_build_object('organization_id', organization_id, 'transaction_id', transaction_id,
			       'external_customer_id', external_customer_id, 'code', code, 'timestamp', ts,
			       'properties', properties, 'value', value)::text, E'\\n') FROM ($select) s});
	}
	my $delim = $format eq 'csv' ? "','" : "E'\\t'";
	my $null = $format eq 'csv' ? "''" : "'\\N'";
	return $node->safe_psql('postgres', qq{
		SELECT string_agg(concat_ws($delim, organization_id, transaction_id, external_customer_id, code, ts,
		       properties, COALESCE(value::text, $null), $null), E'\\n') FROM ($select) s});
}

my %outcome;
for my $case (1 .. $cases)
{
	my $format = (qw(csv text jsonl binary))[ int(rand(4)) ];
	my @rows = map { row() } 1 .. 1 + int(rand(30));
	my ($rc, $out, $err);
	if ($format eq 'binary')
	{
		my $file = $node->data_dir . "/fuzz.bin";
		my $values = join(",\n",
			map {
				my $v = $_->{value} eq '' ? 'NULL' : $_->{value};
				"('$_->{org}'::uuid, '$_->{tx}', 'c', 'api', $_->{ts}, '{}'::jsonb, ${v}::float8, NULL::numeric)"
			} @rows);
		$node->safe_psql('postgres', "COPY (VALUES $values) TO '$file' (FORMAT binary)");
		# damage bytes of the file's contents on the server
		my $flips = int(rand(4));
		my $bytes = "pg_read_binary_file('$file')";
		for (1 .. $flips)
		{
			$bytes = "set_byte($bytes, (random() * (length($bytes) - 1))::int, (random() * 255)::int)";
		}
		($rc, $out, $err) = $node->psql('postgres',
			"SELECT setseed(" . rand() . "); SELECT * FROM ingest.load('ev', $bytes, format => 'binary')");
	}
	else
	{
		my $payload = mutate(rendered($format, @rows));
		my $quoted = $payload =~ s/'/''/gr;
		if ($format ne 'jsonl' && rand() < 0.5)
		{
			# through the COPY hook, with the payload as COPY data
			my $data = $payload;
			$data .= "\n" unless $data =~ /\n\z/;
			($rc, $out, $err) = $node->psql('postgres',
				"COPY ev (organization_id, transaction_id, external_customer_id, code, \"timestamp\", properties, value, decimal_value) FROM STDIN (FORMAT $format);\n$data\\.\n");
		}
		else
		{
			($rc, $out, $err) = $node->psql('postgres',
				"SELECT * FROM ingest.load('ev', E'" . ($quoted =~ s/\\/\\\\/gr) . "', format => '$format')");
		}
	}
	$outcome{ $rc == 0 ? 'ok' : 'error' }++;
	# the server answers: nothing crashed
	last unless is($node->safe_psql('postgres', 'SELECT 1'), '1', "case $case ($format): the server answers");
}
note(join(', ', map { "$_: $outcome{$_}" } sort keys %outcome));

is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT organization_id, transaction_id FROM ev GROUP BY 1, 2 HAVING count(*) > 1) d}),
	'0', 'no key is stored twice');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT organization_id, transaction_id COLLATE "C" FROM ev
	                      EXCEPT ALL SELECT organization_id, transaction_id FROM ingest_side.ev_keys) x}),
	'0', 'every event has its key in the ledger');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT organization_id, transaction_id FROM ingest_side.ev_keys
	                      EXCEPT ALL SELECT organization_id, transaction_id COLLATE "C" FROM ev) x}),
	'0', 'every key in the ledger has its event');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ingest.rollup_verify('ev', '-infinity', 'infinity')}),
	'0', 'the rollup equals the raw events');
$node->safe_psql('postgres', 'SELECT ingest.fold_rollups()');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ingest.rollup_verify('ev', '-infinity', 'infinity')}),
	'0', 'and after a fold');
cmp_ok($node->safe_psql('postgres', 'SELECT count(*) FROM ev'), '>', 0, 'some events were stored');
ok(!$node->log_contains('terminated by signal'), 'no backend was terminated by a signal');
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started, 'the server never restarted');

$node->stop;
done_testing();
