# Upgrades: a database made at every released version and brought to the
# current one with ALTER EXTENSION ingest UPDATE has the same objects as a
# fresh install, keeps its data, and loads.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
ingest.enabled = off
});
$node->start;

my $current = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'ingest'});
my @released = split /\n/, $node->safe_psql('postgres', qq{
	SELECT version FROM pg_available_extension_versions
	 WHERE name = 'ingest' AND version <> '$current' ORDER BY version});
ok(@released > 0, 'there are released versions to upgrade from');

# Every object of the extension, with its definition: functions, tables and
# their columns and storage options, indexes, views, triggers.
my $objects = q{
	SELECT string_agg(o, E'\n' ORDER BY o) FROM (
	  SELECT 'function ' || p.oid::regprocedure || ' ' ||
	         -- an aggregate has no definition text: its functions and state
	         CASE WHEN p.prokind = 'a'
	              THEN (SELECT concat_ws(' ', a.aggkind, a.aggtransfn, a.aggfinalfn, a.aggcombinefn,
	                                     a.aggmtransfn, a.aggfinalmodify, a.aggtranstype::regtype,
	                                     a.aggtransspace, a.agginitval, p.proparallel)
	                      FROM pg_aggregate a WHERE a.aggfnoid = p.oid)
	              ELSE md5(pg_get_functiondef(p.oid)) END ||
	         ' ' || coalesce(obj_description(p.oid, 'pg_proc'), '-') AS o
	    FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
	   WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND d.classid = 'pg_proc'::regclass
	  UNION ALL
	  SELECT 'relation ' || c.oid::regclass || ' ' || c.relkind::text || ' ' || coalesce(c.reloptions::text, '-') ||
	         ' ' || coalesce(md5(pg_get_viewdef(c.oid)), '-') || ' ' ||
	         coalesce((SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod) ||
	                                     CASE WHEN a.attnotnull THEN ' not null' ELSE '' END ||
	                                     coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), ''), ', ' ORDER BY a.attnum)
	                     FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
	                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') ||
	         ' ' || coalesce((SELECT string_agg(pg_get_indexdef(i.indexrelid), '; ' ORDER BY pg_get_indexdef(i.indexrelid))
	                            FROM pg_index i WHERE i.indrelid = c.oid), '') ||
	         ' ' || coalesce((SELECT string_agg(pg_get_constraintdef(k.oid), '; ' ORDER BY pg_get_constraintdef(k.oid))
	                            FROM pg_constraint k WHERE k.conrelid = c.oid), '') ||
	         ' ' || coalesce((SELECT string_agg(pg_get_triggerdef(t.oid), '; ' ORDER BY pg_get_triggerdef(t.oid))
	                            FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), '') ||
	         ' ' || coalesce(c.relacl::text, '-')
	    FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
	   WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND d.classid = 'pg_class'::regclass
	  UNION ALL
	  SELECT 'schema ' || n.nspname || ' ' || coalesce(n.nspacl::text, '-')
	    FROM pg_namespace n WHERE n.nspname IN ('ingest', 'ingest_internal')
	  UNION ALL
	  SELECT 'event trigger ' || e.evtname || ' ' || e.evtevent || ' ' || coalesce(e.evttags::text, '-')
	    FROM pg_event_trigger e WHERE e.evtname LIKE 'ingest%'
	) s
};

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION ingest');
my $want = $node->safe_psql('fresh', $objects);

# A database for a test at released version $v: the extension at $v and a
# managed table "ev", then the statements of $setup.
sub db_at
{
	my ($prefix, $v, $setup) = @_;
	my $db = $prefix . ($v =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, qq{
		CREATE EXTENSION ingest VERSION '$v';
		SELECT ingest.create_event_table('ev');
		$setup});
	return $db;
}

for my $v (@released)
{
	# The library refuses to write through an older version's objects, so
	# the data is stored as that version kept it: 600 events of two
	# organizations, their keys in the extension-wide ledger, the rollup
	# of the first 300 folded and of the rest in deltas.
	my $db = db_at("from_", $v, qq{
		SET session_replication_role = replica;
		INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
		SELECT ('00000000-0000-0000-0000-00000000000' || (1 + n % 2))::uuid, 'tx-' || n, 'c' || n % 3,
		       'api', date_trunc('day', now()) + n * interval '1 minute', n
		  FROM generate_series(1, 600) n;
		RESET session_replication_role;
		INSERT INTO ingest_internal.event_keys
		SELECT 'ev'::regclass, e.organization_id, e.transaction_id, ingest_internal.payload_hash(e) FROM ev e;
		CREATE TEMP VIEW agg AS
		SELECT 'ev'::regclass::oid AS relid, 'default'::text AS rollup, e.organization_id,
		       date_trunc('hour', e."timestamp", 'UTC') AS hour, e.code, e.external_customer_id,
		       '{}'::jsonb AS dims, count(*)::bigint AS events, sum(e.value::numeric) AS value_sum,
		       sum(e.decimal_value) AS decimal_sum, min(e.value) AS value_min, max(e.value) AS value_max,
		       (array_agg(e.value ORDER BY e."timestamp" DESC, e.transaction_id COLLATE "C" DESC))[1] AS latest_value,
		       max(e."timestamp") AS latest_at,
		       (array_agg(e.transaction_id COLLATE "C" ORDER BY e."timestamp" DESC, e.transaction_id COLLATE "C" DESC))[1] AS latest_tx,
		       substr(e.transaction_id, 4)::int <= 300 AS folded
		  FROM ev e GROUP BY 3, 4, 5, 6, 16;
		INSERT INTO ingest_internal.rollup_hours SELECT relid, rollup, organization_id, hour, code, external_customer_id,
		       dims, events, value_sum, decimal_sum, value_min, value_max, latest_value, latest_at, latest_tx
		  FROM agg WHERE folded;
		INSERT INTO ingest_internal.rollup_deltas SELECT relid, rollup, organization_id, hour, code, external_customer_id,
		       dims, events, value_sum, decimal_sum, value_min, value_max, latest_value, latest_at, latest_tx
		  FROM agg WHERE NOT folded;
	});
	my ($rc, $out, $err) = $node->psql($db, q{INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp")
		VALUES ('00000000-0000-0000-0000-000000000001', 'x', 'c', 'api', now())});
	like($err, qr/extension "ingest" is at version $v, its library at version $current/,
		"$v: the library refuses to write through the objects of $v");
	($rc, $out, $err) = $node->psql($db, q{SELECT * FROM ingest.run_maintenance('ev')});
	like($err, qr/extension "ingest" is at version $v, its library at version $current/,
		"$v: a maintenance run refuses the objects of $v (its worker failed on them)");
	$node->safe_psql($db, 'ALTER EXTENSION ingest UPDATE');
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'ingest'}),
		$current, "$v updates to $current");
	is($node->safe_psql($db, $objects), $want, "$v updated has the objects of a fresh $current");
	is($node->safe_psql($db, q{SELECT count(*) FROM ev}), '600', "$v: the events are kept");
	is($node->safe_psql($db, q{SELECT count(*) FROM ingest_side.ev_keys k JOIN ev e USING (organization_id, transaction_id)}),
		'600', "$v: the ledger moved to the table's side table");
	is($node->safe_psql($db, q{SELECT count(*) FROM ingest.rollup_verify('ev', '-infinity', 'infinity')}),
		'0', "$v: the rollup moved and agrees with the events");
	# rows that differ either way between the daily rows and the merge of
	# the hourly rows per UTC day, and the events the daily rows count
	my $daily_q = q{WITH m AS (
		SELECT rollup, organization_id, date_trunc('day', hour, 'UTC'), code, external_customer_id, dims,
		       sum(events), sum(value_sum), min(value_min), max(value_max), max(latest_at)
		  FROM ingest_side.ev_rollup GROUP BY 1, 2, 3, 4, 5, 6
		), y AS (
		SELECT rollup, organization_id, day, code, external_customer_id, dims,
		       events, value_sum, value_min, value_max, latest_at FROM ingest_side.ev_daily)
		SELECT (SELECT count(*) FROM (TABLE m EXCEPT ALL TABLE y) a) + (SELECT count(*) FROM (TABLE y EXCEPT ALL TABLE m) b)
		       || ':' || (SELECT sum(events) FROM y)};
	is($node->safe_psql($db, $daily_q), '0:300', "$v: the daily rows are made from the folded hourly rows");
	is($node->safe_psql($db, q{SELECT sum(events) || ':' || sum(value_sum)
		FROM ingest.usage('ev', '00000000-0000-0000-0000-000000000001', date_trunc('day', now()), date_trunc('day', now()) + interval '1 day')}),
		'300:90300', "$v: usage after the update");
	is($node->safe_psql($db, qq{SELECT loaded || ',' || duplicates FROM ingest.load('ev',
		E'00000000-0000-0000-0000-000000000001,tx-2,c,api,' || now() || E',{},1,\\n' ||
		E'00000000-0000-0000-0000-000000000001,tx-new,c,api,' || now() || E',{},1,\\n')}),
		'1,1', "$v: the updated extension loads and deduplicates against the old keys");
	is($node->safe_psql($db, q{SELECT ingest.fold_rollups() > 0 AND
		NOT EXISTS (SELECT FROM ingest.rollup_verify('ev', '-infinity', 'infinity'))}),
		't', "$v: folds and still agrees");
	is($node->safe_psql($db, $daily_q), '0:601', "$v: the fold keeps the daily rows");
}

# A table 0.3.0 could not follow (a user's BEFORE INSERT row trigger that
# would fire after ingest_dedup, changing a claimed key) stops the update
# with 0A000, naming it; once renamed, the update goes through.
for my $v (@released)
{
	my $db = db_at("refuse_", $v, qq{
		CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql
		  AS \$\$BEGIN NEW.transaction_id := NEW.transaction_id || '-x'; RETURN NEW; END\$\$;
		CREATE TRIGGER zz_stamp BEFORE INSERT ON ev FOR EACH ROW EXECUTE FUNCTION stamp();
	});
	my ($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\nALTER EXTENSION ingest UPDATE");
	like($err, qr/0A000: table "public.ev" has a BEFORE INSERT row trigger that would fire after ingest claims the key.*Triggers: zz_stamp on public.ev/s,
		"$v: the update refuses a table with a trigger firing after ingest_dedup");
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'ingest'}),
		$v, "$v: the refused update leaves the extension at $v");
	$node->safe_psql($db, 'ALTER TRIGGER zz_stamp ON ev RENAME TO a_stamp; ALTER EXTENSION ingest UPDATE');
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'ingest'}),
		$current, "$v: with the trigger renamed, the update goes through");
}

# The update reads every table as the superuser running it: a table whose
# owner retyped a column (0.2.0 let them) to a type of their own, with an
# assignment cast to uuid, had the owner's cast run as that superuser (it
# made its owner one).  The update refuses such a table before reading any.
for my $v (@released)
{
	my $db = "escalate_" . ($v =~ s/\./_/gr);
	my $role = "mallory_" . ($v =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db; CREATE ROLE $role LOGIN");
	$node->safe_psql($db, qq{
		CREATE EXTENSION ingest VERSION '$v';
		CREATE SCHEMA m AUTHORIZATION $role;
		SELECT ingest.create_event_table('m.ev');
		SELECT format('ALTER TABLE %s OWNER TO $role', p.relid) FROM pg_partition_tree('m.ev') p \\gexec
		SET session_replication_role = replica;
		INSERT INTO m.ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
		VALUES ('6f1c1f4e-0000-4000-8000-000000000001', 'tx-1', 'c1', 'api', now(), 1);
		RESET session_replication_role;
		SET ROLE $role;
		CREATE TYPE m.u AS (v uuid);
		CREATE FUNCTION m.evil(m.u) RETURNS uuid LANGUAGE plpgsql AS \$\$
		BEGIN
			IF current_setting('is_superuser') = 'on' THEN EXECUTE 'ALTER ROLE $role SUPERUSER'; END IF;
			RETURN \$1.v;
		END \$\$;
		CREATE CAST (m.u AS uuid) WITH FUNCTION m.evil(m.u) AS ASSIGNMENT;
		ALTER TABLE m.ev ALTER COLUMN organization_id TYPE m.u USING ROW(organization_id)::m.u;
	});
	my ($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\nALTER EXTENSION ingest UPDATE");
	like($err, qr/42804: column "organization_id" of table "m.ev" has type m.u, not uuid/,
		"$v: the update refuses a table whose owner retyped a column");
	is($node->safe_psql($db, qq{SELECT rolsuper FROM pg_roles WHERE rolname = '$role'}),
		'f', "$v: the owner's cast did not run as the superuser updating");
}

# 0.2.0 stored a second event under a key after an UPDATE of its
# transaction_id.  The update refuses such a table (23505) rather than make
# a ledger one key short of its events: deleting one of them later would
# then forget the key the other still has, and the key could be loaded
# again.  With the duplicate deleted under the old version, it goes through.
for my $v (@released)
{
	my $db = db_at("dup_", $v, qq{
		SET session_replication_role = replica;
		INSERT INTO ev (organization_id, transaction_id, external_customer_id, code, "timestamp", value)
		SELECT '00000000-0000-0000-0000-000000000001', 'tx-' || least(n, 2), 'c', 'api', now(), n
		  FROM generate_series(1, 3) n;
		RESET session_replication_role;
	});
	my ($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\nALTER EXTENSION ingest UPDATE");
	like($err, qr/23505: table "public.ev" stores 1 events whose key another event has/,
		"$v: the update refuses a table with two events under one key");
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'ingest'}),
		$v, "$v: the refused update leaves the extension at $v");
	$node->safe_psql($db, q{SET session_replication_role = replica; DELETE FROM ev WHERE value = 3});
	$node->safe_psql($db, 'ALTER EXTENSION ingest UPDATE');
	is($node->safe_psql($db, q{SELECT count(*) || ':' || (SELECT count(*) FROM ingest_side.ev_keys) FROM ev}),
		'2:2', "$v: with the duplicate deleted, the update goes through, a key per event");
}

$node->stop;
done_testing();
