# COPY FROM STDIN through the hook that waits for its table's lock while
# the table is unmanaged, or given a trigger of the user's: once it has the
# lock it sees what committed and runs as plain COPY (the table is no longer
# one the loader takes), rather than failing with an internal error or
# loading past the trigger.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('copy_ddl');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
});
$node->start;
sub sql { return $node->safe_psql('postgres', shift); }

sql(q{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('um', premake => 0);
	SELECT ingest.create_event_table('tg', premake => 0);
	CREATE TABLE fired (tx text);
	CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql
		AS $$ BEGIN INSERT INTO fired VALUES (NEW.transaction_id); RETURN NEW; END $$;
});
my $ts = sql(q{SELECT now()});

# A COPY of one row into tbl, started now; returns what run_copy_end needs.
sub copy_start
{
	my ($tbl, $tx) = @_;
	my %c = (in => "00000000-0000-0000-0000-000000000001,$tx,c,api,$ts\n", out => '', err => '');
	$c{h} = IPC::Run::start(
		[
			'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-h', $node->host, '-p', $node->port, '-d', 'postgres',
			'-c', qq{COPY $tbl (organization_id, transaction_id, external_customer_id, code, "timestamp") FROM STDIN (FORMAT csv)}
		],
		'<', \$c{in}, '>', \$c{out}, '2>', \$c{err},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	return \%c;
}

sub waits_for
{
	my ($tbl) = @_;
	ok($node->poll_query_until('postgres', qq{
		SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		                WHERE l.relation = '$tbl'::regclass AND NOT l.granted
		                  AND a.query LIKE 'COPY%')}), "the COPY into $tbl waits for the table's lock");
}

# Unmanaged while the COPY waits: plain COPY then stores the row.
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN; SELECT ingest.unmanage_table('um')});
my $c = copy_start('um', 'u1');
waits_for('um');
$holder->query_safe('COMMIT');
$c->{h}->finish;
is($c->{out}, "COPY 1\n", 'the COPY completes once the table is unmanaged') or diag($c->{err});
unlike($c->{err}, qr/ERROR|ingest:/, 'as plain COPY, with no error');
is(sql(q{SELECT count(*) FROM um}), '1', 'the row is stored');

# A trigger made while the COPY waits (named to fire before ingest_dedup,
# as tableddl.c requires): plain COPY fires it.
$holder->query_safe(q{BEGIN; CREATE TRIGGER a_note BEFORE INSERT ON tg FOR EACH ROW EXECUTE FUNCTION note()});
$c = copy_start('tg', 't1');
waits_for('tg');
$holder->query_safe('COMMIT');
$c->{h}->finish;
is($c->{out}, "COPY 1\n", 'the COPY completes once the trigger is committed') or diag($c->{err});
is(sql(q{SELECT string_agg(tx, ',') FROM fired}), 't1', "the user's trigger fired for the row");
is(sql(q{SELECT count(*) FROM tg}), '1', 'the row is stored');

$holder->quit;
$node->stop;
done_testing();
