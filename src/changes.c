/*-------------------------------------------------------------------------
 *
 * changes.c
 *	  The key ledger and the rollups follow every change the loader does
 *	  not make.
 *
 * One statement trigger function, with transition tables, on a managed
 * table and on each of its partitions (a statement fires the statement
 * triggers of the table it names only):
 *	  INSERT	the rows' rollup deltas; under MERGE also their keys, which
 *				the dedup row trigger leaves to it (23505 for a key stored
 *				already, as a unique index would)
 *	  UPDATE	keys that changed are released and claimed (23505 for a key
 *				stored already), changed payloads rehashed; the hours of the
 *				old and the new rows go stale
 *	  DELETE	the rows' keys are released; their hours go stale
 *	  TRUNCATE	(before it) the keys of the rows are released; their hours
 *				go stale
 * A stale hour is recomputed from raw events by the next fold (a rollup's
 * min, max and latest cannot be subtracted); until then readers take it
 * from raw events.  Everything runs in the writer's transaction, as the
 * table's owner.  tableddl.c uses the same steps for partitions attached,
 * detached or dropped by hand.
 *
 * With session_replication_role = replica these triggers do not fire, and
 * logical replication's apply worker fires no INSERT, UPDATE or DELETE
 * statement trigger at all: a guard enabled for replica mode only refuses
 * such writes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "loader.h"

/* Run a statement whose $1 is the managed table; returns rows processed. */
static uint64
exec_sql(IngestTable *t, const char *sql, int expected)
{
	Datum		arg = ObjectIdGetDatum(t->relid);
	Oid			argtype = REGCLASSOID;
	int			rc;

	/*
	 * Steps on a whole partition (TRUNCATE, ATTACH, DETACH, DROP) read it
	 * with the latest snapshot, as RI checks do: the DDL holds its lock by
	 * then, and a REPEATABLE READ snapshot would miss rows committed since.
	 */
	if (t->latest_snapshot)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, 1, &argtype);

		if (plan == NULL)
			elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		rc = SPI_execute_snapshot(plan, &arg, NULL, GetLatestSnapshot(), InvalidSnapshot,
								  false, false, 0);
		SPI_freeplan(plan);
	}
	else
		rc = SPI_execute_with_args(sql, 1, &argtype, &arg, NULL, false, 0);

	if (rc != expected)
		elog(ERROR, "could not keep the side state of table %u: %s", t->relid,
			 SPI_result_code_string(rc));
	return SPI_processed;
}

/* 23505 naming the key in the first row of the last result, if any. */
static void
refuse_duplicate(IngestTable *t, const char *what)
{
	if (SPI_processed == 0)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_UNIQUE_VIOLATION),
			 errmsg("duplicate event key in table \"%s\"", get_rel_name(t->relid)),
			 errdetail("Key (organization_id, transaction_id)=(%s, %s) %s.",
					   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
					   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
					   what)));
}

/*
 * Claim the keys of every row of src, as a unique index would: a key twice
 * among the rows, or stored already, is refused with 23505.  A key being
 * claimed by another transaction is waited for.  Set operations, hashed:
 * no plan here is quadratic in the rows of a statement.
 */
/* 23505 for a key that two rows of src have */
static void
refuse_repeated_keys(IngestTable *t, const char *src)
{
	exec_sql(t, psprintf("SELECT s.organization_id, s.transaction_id COLLATE \"C\" FROM %s s "
						 "GROUP BY 1, 2 HAVING count(*) > 1 LIMIT 1", src),
			 SPI_OK_SELECT);
	refuse_duplicate(t, "is given more than once");
}

void
IngestClaimKeysStrict(IngestTable *t, const char *src)
{
	refuse_repeated_keys(t, src);
	exec_sql(t, psprintf("WITH claimed AS ("
						 "  INSERT INTO %s AS k "
						 "  SELECT s.organization_id, s.transaction_id COLLATE \"C\", "
						 "         ingest_side.payload_hash(s) "
						 "    FROM %s s ORDER BY 1, 2 "
						 "  ON CONFLICT DO NOTHING "
						 "  RETURNING k.organization_id, k.transaction_id) "
						 "SELECT s.organization_id, s.transaction_id COLLATE \"C\" FROM %s s "
						 "EXCEPT SELECT c.organization_id, c.transaction_id FROM claimed c "
						 "LIMIT 1",
						 IngestQualifiedName(t->ledger), src, src),
			 SPI_OK_SELECT);
	refuse_duplicate(t, "is stored already");
}

/* Release the keys of the rows of src. */
void
IngestForgetKeys(IngestTable *t, const char *src)
{
	exec_sql(t, psprintf("DELETE FROM %s k USING %s s "
						 " WHERE k.organization_id = s.organization_id "
						 "   AND k.transaction_id = s.transaction_id COLLATE \"C\"",
						 IngestQualifiedName(t->ledger), src),
			 SPI_OK_DELETE);
}

/*
 * Mark the hours of the rows of src stale: each organization's own hours,
 * or (per_org false, for whole partitions) the span of hours of all.
 */
void
IngestMarkStale(IngestTable *t, const char *src, bool per_org)
{
	const char *hour = "pg_catalog.date_trunc('hour', s.\"timestamp\", 'UTC')";

	if (per_org)
		exec_sql(t, psprintf("INSERT INTO %s "
							 "SELECT DISTINCT s.organization_id, %s, %s + interval '1 hour' "
							 "  FROM %s s",
							 IngestQualifiedName(t->rollup_stale), hour, hour, src),
				 SPI_OK_INSERT);
	else
		exec_sql(t, psprintf("INSERT INTO %s "
							 "SELECT NULL, pg_catalog.date_trunc('hour', min(s.\"timestamp\"), 'UTC'), "
							 "       pg_catalog.date_trunc('hour', max(s.\"timestamp\"), 'UTC') "
							 "       + interval '1 hour' "
							 "  FROM %s s HAVING count(*) > 0",
							 IngestQualifiedName(t->rollup_stale), src),
				 SPI_OK_INSERT);
}

/*
 * Is partition "part" the oldest of the table (not a default partition, nor
 * one whose detach is pending), and has the table stale marks of hours
 * from its first whole hour on?  Taking it out retires those hours before
 * the next partition's start (the hour it shares with the next day too).
 * As the owner, with the latest snapshot.
 */
bool
IngestOldestDayMarked(IngestTable *t, Oid part)
{
	IngestOwnerScope scope;
	bool		marked;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	IngestOwnerPush(t->owner, true, &scope);
	t->latest_snapshot = true;
	marked = exec_sql(t, psprintf("SELECT FROM ingest_side.partition_bounds(%u) b, %s x "
								  " WHERE NOT b.is_default "
								  "   AND NOT EXISTS (SELECT FROM pg_catalog.pg_inherits i, "
								  "                        ingest_side.partition_bounds(i.inhrelid) o "
								  "                    WHERE i.inhparent = $1 AND NOT i.inhdetachpending "
								  "                      AND NOT o.is_default AND o.lower_bound < b.lower_bound) "
								  "   AND x.hi > date_trunc('hour', b.lower_bound - interval '1 microsecond', 'UTC') "
								  "              + interval '1 hour' "
								  " LIMIT 1",
								  part, IngestQualifiedName(t->rollup_stale)),
					  SPI_OK_SELECT) > 0;
	IngestOwnerPop(&scope);
	SPI_finish();
	return marked;
}

/* Append the rollup deltas of the rows of src that satisfy cond. */
static void
feed_deltas_where(IngestTable *t, const char *src, const char *cond)
{
	exec_sql(t, psprintf("INSERT INTO %s %s", IngestQualifiedName(t->rollup_deltas),
						 IngestRollupAggSql(src, cond)),
			 SPI_OK_INSERT);
}

/* Append the rollup deltas of the rows of src. */
void
IngestFeedDeltas(IngestTable *t, const char *src)
{
	feed_deltas_where(t, src, "true");
}

/*
 * The rows of an INSERT (e) outside the partitions "off" whose triggers
 * this session disabled: theirs were not claimed, and go uncounted as
 * their own statement trigger would leave them (pg_restore
 * --disable-triggers --load-via-partition-root copies each partition's
 * rows through the table, whose own statement triggers fire, alongside
 * the restored rollups; datarestore.c).
 */
static char *
rows_outside(List *off)
{
	StringInfoData oids;
	ListCell   *lc;

	initStringInfo(&oids);
	foreach(lc, off)
		appendStringInfo(&oids, "%s%u", oids.len > 0 ? "," : "", lfirst_oid(lc));
	return psprintf("NOT EXISTS (SELECT FROM pg_catalog.unnest('{%s}'::pg_catalog.oid[]) p, "
					"                   ingest_side.partition_bounds(p) b "
					"             WHERE e.\"timestamp\" OPERATOR(pg_catalog.>=) b.lower_bound "
					"               AND e.\"timestamp\" OPERATOR(pg_catalog.<) b.upper_bound)",
					oids.data);
}

/* The keys of a transition table, in the ledger's collation. */
#define KEYS_OF(tt) \
	"SELECT x.organization_id, x.transaction_id COLLATE \"C\" AS transaction_id FROM " tt " x"

/*
 * 23502 for a new row of "src" with a null where ingest may have none
 * (IngestNeverNull): an adopted table's columns may be nullable (loader.c
 * and dedup.c refuse one on the way in).
 */
static void
refuse_null_keys(IngestTable *t, Relation rel, const char *src)
{
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData sql;
	int			i;
	bool		nullable = false;

	/* NOT NULL columns (every table create_event_table makes) need no look */
	for (i = 0; i < INGEST_NEVER_NULL; i++)
		if (!TupleDescAttr(desc, get_attnum(RelationGetRelid(rel), IngestNeverNull[i]) - 1)->attnotnull)
			nullable = true;
	if (!nullable)
		return;
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT CASE");
	for (i = 0; i < INGEST_NEVER_NULL; i++)
		appendStringInfo(&sql, " WHEN n.%s IS NULL THEN %d", quote_identifier(IngestNeverNull[i]), i);
	appendStringInfo(&sql, " END AS i FROM %s n WHERE", src);
	for (i = 0; i < INGEST_NEVER_NULL; i++)
		appendStringInfo(&sql, "%s n.%s IS NULL", i > 0 ? " OR" : "", quote_identifier(IngestNeverNull[i]));
	appendStringInfoString(&sql, " LIMIT 1");
	if (exec_sql(t, sql.data, SPI_OK_SELECT) > 0)
	{
		bool		isnull;
		int			col = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
													  1, &isnull));

		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg_internal("%s", IngestNullColumnError(IngestNeverNull[col]))));
	}
}

/*
 * UPDATE: keys that changed move in the ledger, payloads that changed are
 * rehashed, and the hours of the old and the new rows go stale.
 */
static void
changes_update(IngestTable *t, Relation rel)
{
	char	   *ledger = IngestQualifiedName(t->ledger);

	refuse_null_keys(t, rel, "ingest_new");

	/* a key changed to one too wide to claim or fold (dedup.c) */
	if (exec_sql(t, "SELECT w.why FROM (SELECT n.transaction_id, n.code, n.external_customer_id FROM ingest_new n "
				 "  EXCEPT SELECT o.transaction_id, o.code, o.external_customer_id FROM ingest_old o) n, "
				 "LATERAL ingest_side.key_width_error(n.transaction_id, n.code, n.external_customer_id) w(why) "
				 " WHERE w.why IS NOT NULL LIMIT 1", SPI_OK_SELECT) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event too wide for managed table \"%s\"", get_rel_name(t->relid)),
				 errdetail("The %s.", SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1))));

	/*
	 * Keys gone, then keys new (most updates change none).  Rows that end
	 * up sharing a key may share one of their old ones (no new key to
	 * claim): the old keys being distinct, one of them is then gone.
	 */
	if (exec_sql(t, psprintf("DELETE FROM %s k USING (" KEYS_OF("ingest_old") " EXCEPT "
							 KEYS_OF("ingest_new") ") g "
							 " WHERE k.organization_id = g.organization_id "
							 "   AND k.transaction_id = g.transaction_id",
							 ledger),
				 SPI_OK_DELETE) > 0)
		refuse_repeated_keys(t, "ingest_new");
	if (exec_sql(t, KEYS_OF("ingest_new") " EXCEPT " KEYS_OF("ingest_old") " LIMIT 1",
				 SPI_OK_SELECT) > 0)
		IngestClaimKeysStrict(t, "(SELECT n.* FROM ingest_new n "
							  "  JOIN (" KEYS_OF("ingest_new") " EXCEPT " KEYS_OF("ingest_old") ") g "
							  "    ON g.organization_id = n.organization_id "
							  "   AND g.transaction_id = n.transaction_id COLLATE \"C\")");
	exec_sql(t, psprintf("UPDATE %s k SET payload_hash = n.h "
						 "  FROM (SELECT n.organization_id, n.transaction_id COLLATE \"C\" AS tx, "
						 "               ingest_side.payload_hash(n) AS h FROM ingest_new n) n "
						 " WHERE k.organization_id = n.organization_id AND k.transaction_id = n.tx "
						 "   AND k.payload_hash <> n.h",
						 ledger),
			 SPI_OK_UPDATE);
	IngestMarkStale(t, "(SELECT o.organization_id, o.\"timestamp\" FROM ingest_old o "
					"  UNION ALL SELECT n.organization_id, n.\"timestamp\" FROM ingest_new n)", true);
}

/*
 * TRUNCATE (before it runs): of the table, the ledger is emptied and every
 * hour goes stale; of a partition, its rows' keys and hours.  Truncating
 * the table fires its partitions' triggers too: they find the ledger empty.
 */
static void
changes_truncate(IngestTable *t, Relation rel)
{
	char	   *part;

	if (RelationGetRelid(rel) == t->relid)
	{
		exec_sql(t, psprintf("TRUNCATE %s", IngestQualifiedName(t->ledger)), SPI_OK_UTILITY);
		exec_sql(t, psprintf("INSERT INTO %s VALUES (NULL, '-infinity', 'infinity')",
							 IngestQualifiedName(t->rollup_stale)),
				 SPI_OK_INSERT);
		return;
	}
	/*
	 * TRUNCATE removes rows whatever the snapshot: so many keys go, read
	 * with the latest snapshot (an older one, REPEATABLE READ's, could find
	 * the ledger empty while rows committed since are truncated).
	 */
	t->latest_snapshot = true;
	if (exec_sql(t, psprintf("SELECT 1 FROM %s LIMIT 1", IngestQualifiedName(t->ledger)),
				 SPI_OK_SELECT) == 0)
		return;
	part = IngestQualifiedName(RelationGetRelid(rel));
	IngestForgetKeys(t, part);
	IngestMarkStale(t, part, false);
}

PG_FUNCTION_INFO_V1(ingest_replica_guard);

/*
 * ingest_side.replica_guard(): a row trigger (INSERT, UPDATE, DELETE) and
 * a TRUNCATE statement trigger enabled only for session_replication_role
 * = replica (ENABLE REPLICA), the mode of logical replication's apply and
 * table sync workers and of sessions that set it.  ingest's own triggers
 * do not fire there, so the ledger and rollups could not follow: refused.
 * Free of cost otherwise: it does not fire.
 */
Datum
ingest_replica_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	IngestTable t;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ingest_side.replica_guard() must be a trigger")));
	/* a partition detached by hand keeps its triggers: they do nothing */
	if (IngestLookupTable(IngestRootOf(RelationGetRelid(td->tg_relation)), &t) && t.ready)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot write managed table \"%s\" with session_replication_role = replica",
						get_rel_name(t.relid)),
				 errdetail("ingest's triggers do not fire in replica mode (logical replication's apply, or a session that sets it), so the key ledger and rollups could not follow."),
				 errhint("Replicate into a table ingest does not manage, or write with session_replication_role = origin.")));
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		return PointerGetDatum(NULL);
	return PointerGetDatum(TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple);
}

PG_FUNCTION_INFO_V1(ingest_track_changes);

/* ingest_side.track_changes(): the statement trigger. */
Datum
ingest_track_changes(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerEvent ev;
	IngestTable t;
	IngestOwnerScope scope;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ingest_side.track_changes() must be a statement trigger")));
	ev = td->tg_event;
	IngestRequireCurrentVersion();

	/* a partition detached by hand keeps its triggers: they do nothing */
	if (!IngestLookupTable(IngestRootOf(RelationGetRelid(td->tg_relation)), &t) || !t.ready)
	{
		/* a Citus shard: refused */
		IngestRefuseCitusTrigger(RelationGetRelid(td->tg_relation));
		return PointerGetDatum(NULL);
	}
	/*
	 * The coordinator's table of a distributed one (Citus fires its TRUNCATE
	 * triggers there too): each shard's triggers keep its side state.
	 */
	if (t.distributed)
		return PointerGetDatum(NULL);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER)
		elog(ERROR, "could not register the transition tables");
	IngestOwnerPush(t.owner, true, &scope);
	/* a TRUNCATE reads its partition (transition tables have no policy) */
	IngestOwnerAllRows(&scope);

	if (TRIGGER_FIRED_BY_INSERT(ev))
	{
		const char *counted = "true";

		if (IngestCommandWriting(RelationGetRelid(td->tg_relation), NULL) == CMD_MERGE)
		{
			refuse_null_keys(&t, td->tg_relation, "ingest_new");
			IngestClaimKeysStrict(&t, "ingest_new");
		}
		else
		{
			/* an INSERT or plain COPY: its rows were counted by dedup_row */
			IngestLoadCounts counts = {0};
			List	   *off = IngestTriggersOffHere(t.relid);

			counts.calls = 1;
			IngestCountLoad(t.relid, &counts);
			if (off != NIL)
				counted = rows_outside(off);
		}
		feed_deltas_where(&t, "ingest_new", counted);
	}
	else if (TRIGGER_FIRED_BY_UPDATE(ev))
		changes_update(&t, td->tg_relation);
	else if (TRIGGER_FIRED_BY_DELETE(ev))
	{
		IngestForgetKeys(&t, "ingest_old");
		IngestMarkStale(&t, "ingest_old", true);
	}
	else if (TRIGGER_FIRED_BY_TRUNCATE(ev))
		changes_truncate(&t, td->tg_relation);

	IngestOwnerPop(&scope);
	SPI_finish();
	return PointerGetDatum(NULL);
}

/*
 * The same steps for SQL callers (adopting a table, retention), on the
 * rows of relation "src", as the table's owner.  The callers keep writers
 * out of src (adoption locks the table first; retention reads a detached
 * partition), so src is read with the latest snapshot, as RI checks read:
 * rows committed while the lock was waited for count, also under
 * REPEATABLE READ.
 */
static void
side_state_of(Oid relid, Oid src, void (*step) (IngestTable *, const char *))
{
	IngestTable t;
	IngestOwnerScope scope;

	if (!IngestLookupTable(relid, &t))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not managed by ingest", get_rel_name(relid))));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	t.latest_snapshot = true;
	IngestOwnerPush(t.owner, true, &scope);
	/* the side state of every row (42501 otherwise), not of a policy's */
	IngestOwnerAllRows(&scope);
	step(&t, IngestQualifiedName(src));
	IngestOwnerPop(&scope);
	SPI_finish();
}

PG_FUNCTION_INFO_V1(ingest_claim_keys);

/* ingest_internal.claim_keys(tbl, src): claim the keys of src's rows. */
Datum
ingest_claim_keys(PG_FUNCTION_ARGS)
{
	side_state_of(PG_GETARG_OID(0), PG_GETARG_OID(1), IngestClaimKeysStrict);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(ingest_release_keys);

/* ingest_internal.release_keys(tbl, src): free the keys of src's rows. */
Datum
ingest_release_keys(PG_FUNCTION_ARGS)
{
	side_state_of(PG_GETARG_OID(0), PG_GETARG_OID(1), IngestForgetKeys);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(ingest_feed_deltas);

/* ingest_internal.feed_deltas(tbl, src): rollup deltas of src's rows. */
Datum
ingest_feed_deltas(PG_FUNCTION_ARGS)
{
	side_state_of(PG_GETARG_OID(0), PG_GETARG_OID(1), IngestFeedDeltas);
	PG_RETURN_VOID();
}
