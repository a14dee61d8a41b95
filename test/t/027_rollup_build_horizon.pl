# A new rollup is built once every transaction that may have written the
# table without feeding the rollup has ended: those of the table's
# database, every prepared one included.  A transaction of another
# database cannot write the table and holds nothing back.  Before, any
# transaction holding an xid anywhere in the cluster (another database's,
# or autovacuum's ANALYZE) held the build back: the isolation spec
# fold_isolation failed under CI load with the rollup still unbuilt after
# the fold.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('horizon');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
max_prepared_transactions = 4
});
$node->start;

sub sql { return $node->safe_psql('postgres', shift); }
# a load of one event, transaction id "tx", of now
sub load_one
{
	my ($tx) = @_;
	return qq{SELECT ingest.load('ev', format('00000000-0000-0000-0000-000000000001,$tx,c,api,%s,"{""model"": ""m""}",1,', now()))};
}

sql(q{
	CREATE DATABASE other;
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('ev', premake => 0);
});
like(sql(load_one('t1')), qr/^\(1,0,0,0\)$/, 'an event is loaded');
$node->safe_psql('other', 'CREATE TABLE t (i int)');

# A rollup "name" is created and folded (twice: the first fold sets its
# horizon); is it built?
my $n = 0;
sub built_after_create
{
	my $name = 'r' . ++$n;
	sql(qq{SELECT ingest.create_rollup('ev', '$name', ARRAY['model'])});
	sql(q{SELECT ingest.fold_rollups('ev')}) for 1 .. 2;
	return sql(qq{SELECT building_xid IS NULL FROM ingest.rollup_config
				   WHERE event_table = 'ev'::regclass AND name = '$name'});
}

# another database's open transaction, with an xid
my $elsewhere = $node->background_psql('other');
$elsewhere->query_safe('BEGIN; INSERT INTO t VALUES (1)');
is(built_after_create(), 't', "another database's open transaction holds no build back");

# another database's prepared transaction
$elsewhere->query_safe(q{PREPARE TRANSACTION 'elsewhere'});
is(built_after_create(), 't', "another database's prepared transaction holds no build back");

# this database's open writer holds the build until it ends
my $writer = $node->background_psql('postgres');
$writer->query_safe('BEGIN; ' . load_one('t2'));
is(built_after_create(), 'f', "this database's open writer holds the build");
$writer->query_safe('COMMIT');
sql(q{SELECT ingest.fold_rollups('ev')});
is(sql(qq{SELECT building_xid IS NULL FROM ingest.rollup_config WHERE name = 'r$n'}), 't',
	'and it is built once the writer has ended');

# so does this database's prepared transaction, however long it lasts
$writer->query_safe('BEGIN; ' . load_one('t3') . q{; PREPARE TRANSACTION 'here'});
is(built_after_create(), 'f', "this database's prepared writer holds the build");
sql(q{COMMIT PREPARED 'here'});
sql(q{SELECT ingest.fold_rollups('ev')});
is(sql(qq{SELECT building_xid IS NULL FROM ingest.rollup_config WHERE name = 'r$n'}), 't',
	'and it is built once the prepared writer has committed');

# The horizon is the next xid when a fold first sees the rollup, not the
# fold's own xid, which it may have taken before the rollup was created (a
# fold takes one to clear stale marks, or folded another table first): a
# writer that took its xid after it, wrote before the rollup existed and
# idles in its transaction holds the build too.  Before, the rollup was
# built without the writer's rows, and missed them for good.
my $folder = $node->background_psql('postgres');
$folder->query_safe('BEGIN; SELECT pg_current_xact_id()');
$writer->query_safe('BEGIN; ' . load_one('t4'));
sql(q{SELECT ingest.create_rollup('ev', 'r5', ARRAY['model'])});
$folder->query_safe(q{SELECT ingest.fold_rollups('ev'); COMMIT});
is(sql(q{SELECT building_xid IS NULL FROM ingest.rollup_config WHERE name = 'r5'}), 'f',
	'a writer with an xid later than the fold\'s holds the build');
$writer->query_safe('COMMIT');
sql(q{SELECT ingest.fold_rollups('ev')});
is(sql(q{SELECT building_xid IS NULL FROM ingest.rollup_config WHERE name = 'r5'}), 't',
	'and it is built once the writer has ended');

# A fold in the transaction that created the rollup: nobody else sees the
# rollup yet, so a writer meanwhile feeds it nothing; the fold neither
# builds it nor sets its horizon.  Before, it was built there (no other
# transaction was running) and missed the writer's event.
$folder->query_safe(q{BEGIN; SELECT ingest.create_rollup('ev', 'r6', ARRAY['model']); SELECT ingest.fold_rollups('ev')});
is($folder->query_safe(q{SELECT building_xid IS NULL OR building_horizon IS NOT NULL FROM ingest.rollup_config WHERE name = 'r6'}),
	'f', 'a fold in the creating transaction neither builds the rollup nor sets its horizon');
sql(load_one('t5'));
$folder->query_safe('COMMIT');
sql(q{SELECT ingest.fold_rollups('ev')});
is(sql(q{SELECT building_xid IS NULL FROM ingest.rollup_config WHERE name = 'r6'}), 't',
	'the next fold builds it');

# A REPEATABLE READ writer whose snapshot predates the rollup, which wrote
# after the fold set the horizon and then prepared: PREPARE drops its
# snapshot, so any prepared transaction of the database holds the build.
# Before, the rollup was built without its event.
$writer->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ev');
sql(q{SELECT ingest.create_rollup('ev', 'r7', ARRAY['model'])});
sql(q{SELECT ingest.fold_rollups('ev')});
is(sql(q{SELECT building_horizon IS NOT NULL AND building_xid IS NOT NULL FROM ingest.rollup_config WHERE name = 'r7'}), 't',
	'the snapshot older than the rollup holds its build, past its horizon');
$writer->query_safe(load_one('t6'));
$writer->query_safe(q{PREPARE TRANSACTION 'late'});
sql(q{SELECT ingest.fold_rollups('ev')});
is(sql(q{SELECT building_xid IS NULL FROM ingest.rollup_config WHERE name = 'r7'}), 'f',
	'a prepared transaction holds the build, whatever its xid');
sql(q{COMMIT PREPARED 'late'});
sql(q{SELECT ingest.fold_rollups('ev')});
is(sql(q{SELECT building_xid IS NULL FROM ingest.rollup_config WHERE name = 'r7'}), 't',
	'and it is built once it has committed');

is(sql(q{SELECT string_agg(format('%s %s', rollup, events), ', ' ORDER BY rollup) FROM (
		   SELECT rollup, sum(events) AS events FROM ingest_side.ev_rollup GROUP BY 1) s}),
	'default 6, r1 6, r2 6, r3 6, r4 6, r5 6, r6 6, r7 6', 'every rollup counts the six events');
is(sql(q{SELECT count(*) FROM ingest.rollup_config rc, ingest.rollup_verify('ev', '-infinity', 'infinity', rc.name)
		   WHERE rc.event_table = 'ev'::regclass}), '0',
	'the rollups agree with the raw events');

$node->safe_psql('other', q{ROLLBACK PREPARED 'elsewhere'});
$elsewhere->quit;
$writer->quit;
$folder->quit;
$node->stop;

# The ids are compared as 64-bit ones.  A configuration restored from a
# younger cluster names a building_xid 2^31 to 2^32 behind this cluster's
# xids, which a 32-bit comparison takes for one ahead of every snapshot:
# any reader held the build back, as long as readers came.
my $old = PostgreSQL::Test::Cluster->new('wrapped');
$old->init;
$old->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
});
# what initdb wrote must stay visible 2.4 billion xids on
$old->start;
$old->command_ok(['vacuumdb', '--all', '--freeze'], 'the new cluster is frozen');
$old->stop;
# pg_resetwal -x wants the commit log segment of the new next xid
my $xid = 2_400_000_000;
my $seg = sprintf('%s/pg_xact/%04X', $old->data_dir, int($xid / (4 * 8192 * 32)));
open(my $fh, '>', $seg) or die "$seg: $!";
print $fh "\0" x (8192 * 32);
close($fh);
command_ok(['pg_resetwal', '-x', $xid, $old->data_dir], 'the cluster is set 2.4 billion xids on');
$old->start;
$old->safe_psql('postgres', q{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('ev', premake => 0);
	SELECT ingest.create_rollup('ev', 'restored', ARRAY['model']);
	-- as restored from a cluster whose xids were near a million
	UPDATE ingest.rollup_config SET building_xid = '1000000' WHERE name = 'restored';
});
my $reader = $old->background_psql('postgres');
$reader->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ev');
$old->safe_psql('postgres', q{SELECT ingest.fold_rollups('ev')}) for 1 .. 2;
is($old->safe_psql('postgres', q{SELECT building_xid IS NULL FROM ingest.rollup_config WHERE name = 'restored'}),
	't', "a restored rollup's build is not held by a snapshot of this cluster");
$reader->query_safe('COMMIT');
$reader->quit;
$old->stop;
done_testing();
