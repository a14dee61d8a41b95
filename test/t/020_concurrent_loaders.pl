# Four loaders at once for a bounded time, each through another path
# (ingest.load csv, ingest.load jsonl, COPY FROM STDIN through the hook, an
# INSERT ... SELECT through the dedup trigger), every call with 200 keys
# in the same order ("C" collation), 10% of them shared with whichever
# calls of the other sessions run in the same half second.  Afterwards: no
# key stored twice, every row a call reported loaded is stored (and no
# other), the ledger equals the events and the rollup the raw events, as
# written and after ingest.fold_rollups() (regress.invariants() of
# sql/00_setup.sql, read from that file), and no deadlock (40P01) nor any
# other error in the server log.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use IPC::Run;
use Time::HiRes qw(time);

my $seconds = 20;
my $node = PostgreSQL::Test::Cluster->new('concurrent');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
log_line_prefix = '%m [%p] %e '
deadlock_timeout = 100ms
});
$node->start;

# regress.invariants(), as the regression tests define it
my $setup = slurp_file("$FindBin::RealBin/../../sql/00_setup.sql");
$setup =~ /^(CREATE FUNCTION regress\.daily_mismatch\(.*?^CREATE FUNCTION regress\.invariants\(\).*?^END \$\$;)$/ms
  or die "regress.invariants() not found in sql/00_setup.sql";
my $invariants = $1;

$node->safe_psql('postgres', qq{
	CREATE EXTENSION ingest;
	CREATE EXTENSION pgtap;
	CREATE SCHEMA regress;
	$invariants
	SELECT ingest.create_event_table('ev');
	-- one instant for every row, so that a shared key is the same event
	-- whichever session sends it
	CREATE TABLE conc_conf AS SELECT date_trunc('hour', now()) AS ts;
	-- what each call reported
	CREATE TABLE conc_calls (session int, loaded bigint, duplicates bigint);
	CREATE SEQUENCE conc_call;
	-- A call's 200 rows: 180 keys of its own, 20 shared by every call in the
	-- same half second, in the ledger's order.
	CREATE FUNCTION conc_rows(s int)
	RETURNS TABLE(organization_id uuid, transaction_id text, external_customer_id text, code text,
				  ts timestamptz, properties jsonb, value float8)
	LANGUAGE sql VOLATILE AS \$\$
		WITH c AS (SELECT nextval('conc_call') AS n,
						  floor(extract(epoch FROM clock_timestamp()) * 2)::bigint AS w),
			 k AS (SELECT format('s%s-%s-%s', s, c.n, lpad(i::text, 3, '0')) AS tx, i FROM c, generate_series(1, 180) i
				   UNION ALL
				   SELECT format('sh-%s-%s', c.w, lpad(i::text, 3, '0')), i FROM c, generate_series(1, 20) i)
		SELECT '00000000-0000-0000-0000-000000000001'::uuid, k.tx, 'cust' || k.i % 5, 'api',
			   (SELECT ts FROM conc_conf), '{}'::jsonb, k.i::float8
		  FROM k ORDER BY k.tx COLLATE "C"
	\$\$;
});
my $ts = $node->safe_psql('postgres', 'SELECT ts FROM conc_conf');
my $cols = 'organization_id, transaction_id, external_customer_id, code, "timestamp", properties, value';

# Three sessions run by pgbench, one client each, for $seconds.
my %scripts = (
	1 => q{INSERT INTO conc_calls SELECT 1, loaded, duplicates FROM ingest.load('ev',
		(SELECT string_agg(concat_ws(',', organization_id, transaction_id, external_customer_id, code, ts,
									 properties, value), E'\n' ORDER BY transaction_id COLLATE "C")
		   FROM conc_rows(1)), columns => ARRAY['organization_id', 'transaction_id', 'external_customer_id',
												'code', 'timestamp', 'properties', 'value']);},
	2 => q{INSERT INTO conc_calls SELECT 2, loaded, duplicates FROM ingest.load('ev',
		(SELECT string_agg(json_build_object('organization_id', organization_id, 'transaction_id', transaction_id,
											 'external_customer_id', external_customer_id, 'code', code,
											 'timestamp', ts, 'properties', properties, 'value', value)::text,
						   E'\n' ORDER BY transaction_id COLLATE "C")
		   FROM conc_rows(2)), format => 'jsonl');},
	4 => qq{WITH ins AS (INSERT INTO ev ($cols) SELECT * FROM conc_rows(4) ORDER BY transaction_id COLLATE "C"
						 RETURNING 1)
		INSERT INTO conc_calls SELECT 4, count(*), 200 - count(*) FROM ins;},);
my %bench;
for my $s (sort keys %scripts)
{
	my $file = $node->basedir . "/session$s.sql";
	open(my $fh, '>', $file) or die "cannot write $file: $!";
	print $fh ($scripts{$s} =~ s/\s*\n\s*/ /gr), "\n";
	close($fh);
	my ($out, $err) = ('', '');
	$bench{$s} = {
		out => \$out,
		err => \$err,
		run => IPC::Run::start(
			[
				'pgbench', '-n', '-c', '1', '-j', '1', '-T', $seconds, '-f', $file,
				'-h', $node->host, '-p', $node->port, 'postgres'
			],
			'>', \$out, '2>', \$err)
	};
}

# The fourth: COPY FROM STDIN through the hook, one psql per call.
my ($copies, $copy_failures, $n) = (0, 0, 0);
my $until = time() + $seconds;
while (time() < $until)
{
	$n++;
	my $w = int(time() * 2);
	my @rows = (
		(map { sprintf('s3-%d-%03d,%d', $n, $_, $_) } 1 .. 180),
		(map { sprintf('sh-%d-%03d,%d', $w, $_, $_) } 1 .. 20));
	my $data = join('',
		map {
			my ($tx, $i) = split /,/;
			"00000000-0000-0000-0000-000000000001,$tx,cust" . ($i % 5) . ",api,$ts,{},$i\n"
		} sort @rows);
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[
			'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-h', $node->host, '-p', $node->port,
			'-d', 'postgres', '-c', "COPY ev ($cols) FROM STDIN (FORMAT csv)"
		],
		'<', \$data, '>', \$out, '2>', \$err);
	if ($? == 0 && $out =~ /^COPY (\d+)$/m)
	{
		my $loaded = $1;
		$node->safe_psql('postgres', "INSERT INTO conc_calls VALUES (3, $loaded, " . (200 - $loaded) . ")");
		$copies++;
	}
	else
	{
		$copy_failures++;
		diag("COPY failed: $err");
	}
}

for my $s (sort keys %bench)
{
	my $exited_0 = $bench{$s}{run}->finish;
	my $out = ${ $bench{$s}{out} };
	ok($exited_0, "session $s: pgbench exits 0") or diag(${ $bench{$s}{err} });
	my ($done) = $out =~ /number of transactions actually processed: (\d+)/;
	my ($failed) = $out =~ /number of failed transactions: (\d+)/;
	ok($done && $done > 0, "session $s: calls made (" . ($done // 0) . ")");
	is($failed // 0, 0, "session $s: no failed call");
}
ok($copies > 0, "session 3 (COPY): calls made ($copies)");
is($copy_failures, 0, 'session 3 (COPY): no failed call');

my $calls = $node->safe_psql('postgres', q{
	SELECT string_agg(format('session %s: %s calls, %s loaded, %s duplicates', session, calls, loaded, duplicates), E'\n')
	  FROM (SELECT session, count(*) AS calls, sum(loaded) AS loaded, sum(duplicates) AS duplicates
			  FROM conc_calls GROUP BY session ORDER BY session) c});
note($calls);

is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT organization_id, transaction_id FROM ev GROUP BY 1, 2 HAVING count(*) > 1) d}),
	'0', 'no key is stored twice');
is($node->safe_psql('postgres', 'SELECT (SELECT sum(loaded) FROM conc_calls) = (SELECT count(*) FROM ev)'),
	't', 'the table holds exactly the rows the calls reported loaded');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ev WHERE transaction_id LIKE 'sh-%'}),
	$node->safe_psql('postgres', q{SELECT count(DISTINCT transaction_id) FROM ev WHERE transaction_id LIKE 'sh-%'}),
	'each shared key is stored once');
# the sessions did meet: shared keys were sent by more than one of them
cmp_ok($node->safe_psql('postgres', 'SELECT sum(duplicates) FROM conc_calls'), '>', 0,
	'shared keys were skipped as duplicates');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ingest.rejects}), '0', 'nothing was set aside');

# ledger = events and rollup = raw events, as written and after a fold
my @inv = split /\n/, $node->safe_psql('postgres', 'SELECT * FROM regress.invariants()');
is(scalar(@inv), 8, 'the invariants ran for the table');
is(join("\n", grep { !/^ok / } @inv), '', 'the ledger equals the events, the rollup the raw events and the daily rows the hourly rows, before and after a fold');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ingest.rollup_verify('ev', '-infinity', 'infinity')}),
	'0', 'after ingest.fold_rollups() the rollup equals the raw events');

# no deadlock, nor any other error, during the run
my $log = slurp_file($node->logfile);
my $deadlocks = () = $log =~ / 40P01 /g;
my @errors = $log =~ /^.* [0-9A-Z]{5} (?:ERROR|FATAL):.*$/mg;
note("40P01 errors in the server log: $deadlocks");
is($deadlocks, 0, 'no deadlock (40P01)');
is(join("\n", @errors), '', 'no error in the server log');

$node->stop;
done_testing();
