# PostgreSQL 17's MERGE in a WITH query.  Two MERGEs writing one managed
# table in one statement are refused: a row entering a partition could be
# one's insert or a row the other moves to another day (a BEFORE UPDATE
# trigger changing "timestamp"), which no transition table shows.  One
# MERGE in WITH updates as a MERGE statement does, and a row it moves is
# refused.  MERGE into a view (17) that renames "timestamp" is refused
# when it sets it, and not when it sets a column the view calls so.
# Skipped before 17.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('mergewith');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
});
$node->start;
plan skip_all => 'MERGE in WITH needs PostgreSQL 17'
  if $node->safe_psql('postgres', 'SHOW server_version_num') < 170000;

my $org = '00000000-0000-0000-0000-0000000000ef';
$node->safe_psql('postgres', qq{
	CREATE EXTENSION ingest;
	SELECT ingest.create_event_table('ev', premake => 1);
	INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	VALUES ('$org', 'm1', 'c1', 'api', date_trunc('day', now(), 'UTC') + interval '1 hour', 1);
	CREATE TABLE fixes (tx text, value float8);
	INSERT INTO fixes VALUES ('m1', 5);
	CREATE TABLE new_rows (tx text);
	INSERT INTO new_rows VALUES ('m2');
});
my $two = qq{
	WITH fixed AS (MERGE INTO ev t USING fixes f ON t.organization_id = '$org' AND t.transaction_id = f.tx
	               WHEN MATCHED THEN UPDATE SET value = f.value RETURNING t.transaction_id)
	MERGE INTO ev t USING new_rows s ON t.organization_id = '$org' AND t.transaction_id = s.tx
	 WHEN NOT MATCHED THEN INSERT (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
	 VALUES ('$org', s.tx, 'c1', 'api', date_trunc('day', now(), 'UTC') + interval '2 hours', 1)};
my $one = qq{
	WITH fixed AS (MERGE INTO ev t USING fixes f ON t.organization_id = '$org' AND t.transaction_id = f.tx
	               WHEN MATCHED THEN UPDATE SET value = f.value RETURNING t.transaction_id)
	SELECT count(*) FROM fixed};

sub exact
{
	return $node->safe_psql('postgres', q{
		SELECT (SELECT string_agg(transaction_id, ' ' ORDER BY transaction_id) FROM ingest_side.ev_keys)
		     = (SELECT string_agg(transaction_id, ' ' ORDER BY transaction_id) FROM ev)
		   AND NOT EXISTS (SELECT FROM ingest.rollup_verify('ev', '-infinity', 'infinity'))});
}

# two MERGEs writing the table in one statement: a row entering a partition
# could be one's insert or the other's move, so the statement is refused
# (it was refused as a moved row, the inner MERGE having no INSERT action)
my ($rc, $out, $err) = $node->psql('postgres', $two);
like($err, qr/a statement may not write managed table "ev" by more than one MERGE/,
	'two MERGEs writing one managed table in one statement are refused');
is($node->safe_psql('postgres', q{SELECT string_agg(transaction_id || '=' || value, ' ' ORDER BY transaction_id) FROM ev}),
	'm1=1', 'nothing changed');

# one MERGE in WITH updates as a MERGE statement does
($rc, $out, $err) = $node->psql('postgres', $one);
is($rc, 0, 'an UPDATE-only MERGE in WITH succeeds') or diag($err);
is($node->safe_psql('postgres', q{SELECT string_agg(transaction_id || '=' || value, ' ' ORDER BY transaction_id) FROM ev}),
	'm1=5', 'it updated');
is(exact(), 't', 'the ledger and the rollup follow it');

# a row that it moves to another day (a BEFORE UPDATE trigger) is refused
$node->safe_psql('postgres', q{
	CREATE FUNCTION next_day() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN NEW."timestamp" := NEW."timestamp" + interval '1 day'; RETURN NEW; END $$;
	CREATE TRIGGER a_next_day BEFORE UPDATE ON ev FOR EACH ROW EXECUTE FUNCTION next_day();
	UPDATE fixes SET value = 6;
});
($rc, $out, $err) = $node->psql('postgres', $one);
like($err, qr/MERGE cannot move a row of managed table "ev" to another partition/,
	'a row moved by a MERGE in WITH is refused');
is(exact(), 't', 'and nothing changed');

# a MERGE into a view that names the columns its own way: "timestamp" is
# the table's column, whatever the view calls it (its SET entry was
# looked up by the view's name)
$node->safe_psql('postgres', q{
	DROP TRIGGER a_next_day ON ev;
	CREATE VIEW ev_v AS SELECT organization_id, transaction_id, external_customer_id, code,
	                           "timestamp" AS ts, properties AS "timestamp", value FROM ev;
});
($rc, $out, $err) = $node->psql('postgres', qq{
	MERGE INTO ev_v t USING (VALUES ('m1'), ('m3')) s(tx) ON t.organization_id = '$org' AND t.transaction_id = s.tx
	 WHEN MATCHED THEN UPDATE SET ts = t.ts + interval '1 day'
	 WHEN NOT MATCHED THEN INSERT (organization_id, transaction_id, external_customer_id, code, ts)
	 VALUES ('$org', s.tx, 'c1', 'api', date_trunc('day', now(), 'UTC') + interval '3 hours')});
like($err, qr/MERGE cannot update "timestamp" of managed table "ev"/,
	'a MERGE into a view setting the timestamp under another name is refused');
($rc, $out, $err) = $node->psql('postgres', qq{
	MERGE INTO ev_v t USING (VALUES ('m1'), ('m3')) s(tx) ON t.organization_id = '$org' AND t.transaction_id = s.tx
	 WHEN MATCHED THEN UPDATE SET "timestamp" = '{"a": 1}'
	 WHEN NOT MATCHED THEN INSERT (organization_id, transaction_id, external_customer_id, code, ts)
	 VALUES ('$org', s.tx, 'c1', 'api', date_trunc('day', now(), 'UTC') + interval '3 hours')});
is($rc, 0, 'a MERGE into a view setting another column named "timestamp" there succeeds') or diag($err);
is($node->safe_psql('postgres', q{SELECT string_agg(transaction_id || '=' || properties::text, ' ' ORDER BY transaction_id) FROM ev}),
	'm1={"a": 1} m3={}', 'it updated and inserted');
is(exact(), 't', 'the ledger and the rollup follow it');

$node->stop;
done_testing();
