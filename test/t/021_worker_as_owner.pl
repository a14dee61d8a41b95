# The worker and the management functions act on a table as its owner:
# every DDL statement ingest runs on a non-superuser's managed table (its
# partitions made and retired, triggers, declared indexes built by phase)
# is run as that owner, as an event trigger recording current_user shows.
# Every statement that reads its raw events (the fold, ingest.usage,
# ingest.rollup_verify) runs as that owner too, as pg_stat_statements shows.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('asowner');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest, pg_stat_statements'
pg_stat_statements.track = all
ingest.rollup_fold_interval = 1
ingest.maintenance_interval = 1
ingest.close_delay = 0
ingest.enabled = off
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION ingest;
	CREATE EXTENSION pg_stat_statements;
	CREATE ROLE alice LOGIN;
	CREATE SCHEMA alice AUTHORIZATION alice;
	-- who ran each DDL statement on alice's objects
	CREATE TABLE public.ddl_log (tag text, role name, object text);
	GRANT INSERT ON public.ddl_log TO PUBLIC;
	CREATE FUNCTION public.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
	DECLARE r record;
	BEGIN
		FOR r IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() WHERE object_identity LIKE '%alice.%' LOOP
			INSERT INTO public.ddl_log VALUES (r.command_tag, current_user, r.object_identity);
		END LOOP;
	END $$;
	CREATE FUNCTION public.log_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$
	DECLARE r record;
	BEGIN
		FOR r IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects()
		          WHERE schema_name = 'alice' AND object_type = 'table' LOOP
			INSERT INTO public.ddl_log VALUES ('DROP TABLE', current_user, r.object_identity);
		END LOOP;
	END $$;
	CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION public.log_ddl();
	CREATE EVENT TRIGGER log_drop ON sql_drop EXECUTE FUNCTION public.log_drop();
});

$node->safe_psql('postgres', q{
	SET search_path = alice;
	SELECT ingest.create_event_table('ev', retention => '10 days', premake => 2);
	SELECT ingest.add_index('ev', ARRAY['organization_id', 'code'], phase => 'always');
	SELECT ingest.add_index('ev', ARRAY['external_customer_id'], phase => 'closed');
	-- days the worker will close (yesterday) and retire (20 days ago)
	SELECT ingest.create_partitions('ev', current_date - 1, current_date - 1);
	CREATE TABLE alice.ev_old (LIKE alice.ev);
	SELECT format('ALTER TABLE alice.ev ATTACH PARTITION alice.ev_old FOR VALUES FROM (%L) TO (%L)',
	              (current_date - 20)::timestamp AT TIME ZONE 'UTC',
	              (current_date - 19)::timestamp AT TIME ZONE 'UTC') \gexec
}, extra_params => ['-U', 'alice']);
my %setup = map { ($_ => 1) } split /\n/, $node->safe_psql('postgres',
	q{SELECT DISTINCT tag || '|' || role FROM public.ddl_log});
ok($setup{'CREATE TABLE|alice'} && $setup{'ALTER TABLE|alice'} && $setup{'CREATE TRIGGER|alice'},
	'partitions made by the management functions are made as alice');
# create_event_table makes the table itself as alice too; only the usage
# view (a view of a side table, handed to alice) is made by the extension's
# owner
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT tag || ' ' || object || ' as ' || role, ', ')
	FROM public.ddl_log WHERE role <> 'alice' AND object NOT LIKE 'alice.ev_usage_hourly%'}),
	'', 'nothing else the management functions did to alice\'s objects ran as another role');
$node->safe_psql('postgres', q{TRUNCATE public.ddl_log;
	ALTER SYSTEM SET ingest.enabled = on; SELECT pg_reload_conf()});

ok($node->poll_query_until('postgres', q{ -- a user's event trigger (above) must not break CREATE INDEX or DETACH ... CONCURRENTLY

	SELECT NOT EXISTS (SELECT FROM pg_class WHERE relname = 'ev_old')
	   AND EXISTS (SELECT FROM ingest.indexes WHERE event_table = 'alice.ev'::regclass
	                AND phase = 'closed' AND status = 'present')
	   AND (SELECT count(*) FROM ingest.partitions WHERE event_table = 'alice.ev'::regclass) >= 4}),
	'the worker made, closed and retired partitions');

my %seen = map { my ($t, $r) = split /\|/; ("$t|$r" => 1) }
	split /\n/, $node->safe_psql('postgres', q{SELECT DISTINCT tag, role FROM public.ddl_log ORDER BY 1, 2});
diag(join(', ', sort keys %seen));
# the worker's own DDL since: it closes yesterday (a concurrent index
# build) and retires the old day (detach, then drop)
for my $tag ('CREATE INDEX', 'ALTER TABLE', 'DROP TABLE')
{
	ok($seen{"$tag|alice"}, "$tag on alice's objects ran as alice");
}
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT tag || ' as ' || role, ', ')
	FROM public.ddl_log WHERE role <> 'alice'}), '', 'nothing the worker did ran as another role');

# The fold reads the events as their owner too: after a DELETE, the stale
# hour is recomputed from raw events by a statement that runs as alice.
$node->safe_psql('postgres', q{
	SELECT ingest.load('alice.ev', format(E'00000000-0000-0000-0000-000000000001,f1,c,api,%1$s,{},1,\n'
	                                       '00000000-0000-0000-0000-000000000001,f2,c,api,%1$s,{},2,', now()));
	DELETE FROM alice.ev WHERE transaction_id = 'f1';
}, extra_params => ['-U', 'alice']);
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_stat_statements
	 WHERE ltrim(query, E' \n') LIKE 'WITH marks AS (DELETE FROM%' AND userid = 'alice'::regrole}),
	"the fold's recomputation of stale hours ran as alice");
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_statements
	 WHERE ltrim(query, E' \n') LIKE 'WITH marks AS (DELETE FROM%' AND userid <> 'alice'::regrole}),
	'0', 'and as nobody else');
is($node->safe_psql('postgres', q{SELECT sum(events) FROM ingest.usage('alice.ev', '00000000-0000-0000-0000-000000000001',
	date_trunc('day', now(), 'UTC'), date_trunc('day', now(), 'UTC') + interval '1 day')}),
	'1', 'and the rollup is exact');

# Readers: ingest.usage (partial hours at the edges, and a stale hour not
# folded yet: marked in the reader's own transaction), ingest.rollup_verify.
my $org = '00000000-0000-0000-0000-000000000001';
my %reads = (
	'ingest.usage, edges' => [qq{SELECT sum(events) FROM ingest.usage('alice.ev', '$org',
		now() - interval '90 minutes', now() + interval '90 minutes')},
		'%rc.name = $3 AND e.organization_id = $2%'],
	'ingest.usage, a stale hour' => [qq{BEGIN;
		DELETE FROM alice.ev WHERE transaction_id = 'f2';
		SELECT sum(events) FROM ingest.usage('alice.ev', '$org', date_trunc('day', now(), 'UTC'),
		                                     date_trunc('day', now(), 'UTC') + interval '1 day');
		COMMIT},
		'WITH pieces AS%'],
	'ingest.rollup_verify' => [q{SELECT count(*) FROM ingest.rollup_verify('alice.ev', now() - interval '1 day', now() + interval '1 day')},
		'%rc.name = $2 AND e."timestamp" >= $3 AND e."timestamp" < $4%'],
);
for my $what (sort keys %reads)
{
	my ($sql, $pattern) = @{ $reads{$what} };
	$node->safe_psql('postgres', 'SELECT pg_stat_statements_reset()');
	$node->safe_psql('postgres', $sql, extra_params => ['-U', 'alice']);
	# the statements that read alice.ev's raw events, not those that ask
	# owner_query to
	my $raw = q{ltrim(query, E' \n') NOT LIKE '%owner_query%' AND query LIKE '%FROM alice.ev e%'};
	ok($node->safe_psql('postgres', qq{SELECT count(*) > 0 FROM pg_stat_statements
		 WHERE $raw AND query LIKE '$pattern' AND userid = 'alice'::regrole}) eq 't',
		"$what reads raw events as alice");
	is($node->safe_psql('postgres', qq{SELECT string_agg(DISTINCT userid::regrole::text, ', ')
		 FROM pg_stat_statements WHERE $raw AND userid <> 'alice'::regrole}),
		'', "$what reads them as nobody else");
}

done_testing();
