# Inputs that crashed the server in 0.2.0 (SIGSEGV: every session killed,
# crash recovery) are loaded, refused or computed, and the server never
# restarts: a stored generated column through ingest.load and COPY in every
# format, INSERT after an attempt to retype transaction_id, a day partition
# that is itself partitioned, and one that is a foreign table (refused).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('nocrash');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
});
$node->start;
my $pid = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

my $org = '00000000-0000-0000-0000-0000000000ee';
my $day = $node->safe_psql('postgres', q{SELECT date_trunc('day', now(), 'UTC') + interval '1 hour'});
$node->safe_psql('postgres', q{
	CREATE EXTENSION ingest;
	CREATE EXTENSION file_fdw;
	SELECT ingest.create_event_table('ev', premake => 1);
	ALTER TABLE ev ADD COLUMN doubled float8 GENERATED ALWAYS AS (value * 2) STORED;
	CREATE ROLE writer;
	GRANT INSERT ON ev TO writer;
});

# a role with INSERT only, as the issue's reproduction had it
sub load_as_writer
{
	my ($sql) = @_;
	return $node->psql('postgres', "SET ROLE writer; $sql");
}

my ($rc, $out, $err);
($rc, $out, $err) = load_as_writer(qq{SELECT loaded FROM ingest.load('ev', '$org,csv-1,c,api,$day,{},2,')});
is($rc, 0, 'csv load into a table with a generated column') or diag($err);
($rc, $out, $err) = load_as_writer(
	qq{SELECT loaded FROM ingest.load('ev', E'$org\\ttext-1\\tc\\tapi\\t$day\\t{}\\t3\\t\\\\N', format => 'text')});
is($rc, 0, 'text load into a table with a generated column') or diag($err);
($rc, $out, $err) = load_as_writer(
	qq{SELECT loaded FROM ingest.load('ev', '{"organization_id": "$org", "transaction_id": "jsonl-1", "external_customer_id": "c", "code": "api", "timestamp": "$day", "value": 4}', format => 'jsonl')});
is($rc, 0, 'jsonl load into a table with a generated column') or diag($err);
my $bin = $node->data_dir . '/ev.bin';
$node->safe_psql('postgres', qq{
	COPY (SELECT '$org'::uuid, 'binary-1', 'c', 'api', '$day'::timestamptz, '{}'::jsonb, 5::float8, NULL::numeric)
	  TO '$bin' (FORMAT binary)});
($rc, $out, $err) = $node->psql('postgres',
	qq{SELECT loaded FROM ingest.load('ev', pg_read_binary_file('$bin'), format => 'binary')});
is($rc, 0, 'binary load into a table with a generated column') or diag($err);
($rc, $out, $err) = $node->psql('postgres',
	qq{SET ROLE writer;
COPY ev (organization_id, transaction_id, external_customer_id, code, "timestamp", properties, value, decimal_value)
  FROM STDIN (FORMAT csv);
$org,copy-1,c,api,$day,{},6,
\\.
}, extra_params => [ '-v', 'ON_ERROR_STOP=1' ]);
is($rc, 0, 'COPY through the hook into a table with a generated column') or diag($err);
is($node->safe_psql('postgres', q{SELECT string_agg(transaction_id || '=' || doubled, ' ' ORDER BY transaction_id) FROM ev}),
	'binary-1=10 copy-1=12 csv-1=4 jsonl-1=8 text-1=6', 'every row has its generated value');

# the column ingest keys on cannot be retyped; INSERT goes on working
($rc, $out, $err) = $node->psql('postgres', 'ALTER TABLE ev ALTER COLUMN transaction_id TYPE bigint USING 0');
like($err, qr/cannot change the type of column "transaction_id" of managed table "ev"/, 'retyping is refused');
($rc, $out, $err) = load_as_writer(qq{INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp")
	VALUES ('$org', 'insert-1', 'c', 'api', '$day')});
is($rc, 0, 'INSERT after the refused retype') or diag($err);

# a day partition that is partitioned, or a foreign table, is refused as it
# comes (with no partition of the day, a load of it sets the row aside)
$node->safe_psql('postgres', q{CREATE TABLE ev_sub (LIKE ev INCLUDING GENERATED) PARTITION BY LIST (code)});
($rc, $out, $err) = $node->psql('postgres', qq{
	ALTER TABLE ev ATTACH PARTITION ev_sub FOR VALUES FROM ('$day'::timestamptz - interval '1 day' - interval '1 hour')
	                                                  TO ('$day'::timestamptz - interval '1 hour')});
like($err, qr/partition "public.ev_sub" of managed table "public.ev" is a partitioned table/, 'a partitioned day partition is refused');
($rc, $out, $err) = $node->psql('postgres', qq{
	CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
	CREATE FOREIGN TABLE ev_remote PARTITION OF ev
	   FOR VALUES FROM ('$day'::timestamptz - interval '1 day' - interval '1 hour')
	                TO ('$day'::timestamptz - interval '1 hour')
	   SERVER files OPTIONS (filename '/dev/null');
}, extra_params => [ '-v', 'ON_ERROR_STOP=1' ]);
like($err, qr/partition "public.ev_remote" of managed table "public.ev" is a foreign table/, 'a foreign day partition is refused');
($rc, $out, $err) = load_as_writer(
	qq{SELECT loaded, rejected FROM ingest.load('ev', '$org,remote-1,c,api,' || ('$day'::timestamptz - interval '1 day') || ',{},1,')});
is($out, '0|1', 'a load into that day sets its row aside') or diag($err);

ok(!$node->log_contains('terminated by signal'), 'no backend was terminated by a signal');
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $pid, 'the server never restarted');

$node->stop;
done_testing();
