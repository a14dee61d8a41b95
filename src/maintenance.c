/*-------------------------------------------------------------------------
 *
 * maintenance.c
 *	  Carry out the partition maintenance plan of a database.
 *
 * The plan comes from ingest_internal.plan() (SQL), one table at a time,
 * under the table's maintenance lock (tablelock.c) so that the worker and
 * a manual run never act on one table together.  Each action runs in a transaction of
 * its own, under ingest.lock_timeout, and is logged in the same transaction,
 * so the log says "ok" exactly when the action committed.  A failed action
 * is logged with its SQLSTATE in a new transaction; the other actions and
 * tables go on, and the table is retried with backoff.
 *
 * Retiring a partition never takes ACCESS EXCLUSIVE on the parent: the
 * partition is recorded as retiring, detached with DETACH PARTITION
 * CONCURRENTLY run as a top-level statement (toplevel.c), and dropped as a
 * standalone table afterwards.  An interrupted detach is finished with
 * FINALIZE by the next run.  The exception is a table that Citus
 * distributes, while Citus refuses DETACH CONCURRENTLY: a plain DETACH,
 * under lock_timeout on every node, retried by the next run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/index.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "ingest.h"
#include "loader.h"

/* This process saw Citus refuse DETACH ... CONCURRENTLY. */
static bool citus_refuses_concurrent_detach = false;

/*
 * This process holds the maintenance lock of the table it maintains.  A
 * session lock of the default lock method, it goes with any transaction
 * that aborts (as CREATE INDEX CONCURRENTLY's do): a failed step takes it
 * back, and stops the table's run if another run has it by then.
 */
static bool table_lock_held = false;

/* One row of the plan. */
typedef struct MaintAction
{
	char	   *action;
	char	   *partition;		/* may be NULL */
	Oid			partition_oid;	/* the action's partition, if any */
	bool		day_null;
	Datum		day;			/* DateADT */
	char	   *detail;
	char	   *arg;			/* index: declared name; drop_index: index OID */
} MaintAction;

static void xact_begin(void);
static void xact_end(void);
static Datum exec_scalar(const char *sql, int nargs, Oid *types,
						 Datum *values, const char *nulls, bool *isnull);
static List *managed_tables(Oid relid, bool background, MemoryContext cxt,
							 List **not_ready);
static bool lock_table(Oid relid);
static List *plan_table(Oid relid, MemoryContext cxt);
static void unlock_table(Oid relid, bool record, int failures, const char *sqlstate,
						 const char *message);
static void do_detach(Oid relid, int64 run_id, MaintAction *a);
static void detach_concurrently(Oid relid, int64 run_id, MaintAction *a);
static void detach_locking(Oid relid, int64 run_id, MaintAction *a);
static void toplevel_as_owner(Oid rel, const char *sql);
static void log_action(int64 run_id, Oid relid, const char *action,
					   const char *partition, const char *status,
					   const char *sqlstate, const char *message);
static int64 next_run_id(void);

/* The memory context xact_end returns to: the caller's, not Top. */
static MemoryContext xact_caller_cxt = NULL;

static void
xact_begin(void)
{
	xact_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
xact_end(void)
{
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	if (xact_caller_cxt)
		MemoryContextSwitchTo(xact_caller_cxt);
}

/* Run a query returning at most one value (first column of first row). */
static Datum
exec_scalar(const char *sql, int nargs, Oid *types, Datum *values,
			const char *nulls, bool *isnull)
{
	int			rc;

	rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 1);
	if (rc < 0)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0 || SPI_tuptable == NULL)
	{
		*isnull = true;
		return (Datum) 0;
	}
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
}

static int64
next_run_id(void)
{
	bool		isnull;

	return DatumGetInt64(exec_scalar("SELECT pg_catalog.nextval('ingest_internal.run_id_seq')",
									 0, NULL, NULL, NULL, &isnull));
}

/*
 * Tables to maintain, in OID order, as a list in "cxt".  The worker skips
 * tables waiting out a retry delay; a manual run does not.
 */
static List *
managed_tables(Oid relid, bool background, MemoryContext cxt, List **not_ready)
{
	List	   *tables = NIL;
	Oid			types[2] = {OIDOID, BOOLOID};
	Datum		values[2] = {ObjectIdGetDatum(relid), BoolGetDatum(background)};
	char		nulls[2] = {OidIsValid(relid) ? ' ' : 'n', ' '};
	uint64		i;
	int			rc;

	rc = SPI_execute_with_args(
		"SELECT c.event_table::pg_catalog.oid, ingest_internal.ready(c.event_table) "
		"  FROM ingest.table_config c "
		"  LEFT JOIN ingest_internal.table_state s ON s.relid = c.event_table "
		" WHERE ($1 IS NULL OR c.event_table = $1) "
		"   AND (NOT $2 OR s.next_attempt_at IS NULL "
		"        OR s.next_attempt_at <= pg_catalog.now()) "
		" ORDER BY 1",
		2, types, values, nulls, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not list managed tables: %s", SPI_result_code_string(rc));

	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
									  1, &isnull);
		bool		ready = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i],
													   SPI_tuptable->tupdesc, 2, &isnull));
		MemoryContext old = MemoryContextSwitchTo(cxt);

		if (ready)
			tables = lappend_oid(tables, DatumGetObjectId(d));
		else
			*not_ready = lappend_oid(*not_ready, DatumGetObjectId(d));
		MemoryContextSwitchTo(old);
	}
	return tables;
}

/*
 * A managed table whose dedup trigger is missing (a restore that has not
 * restored it yet, or a DROP TRIGGER) is not maintained: say so in the log,
 * once per process for the worker while it stays so, so that a table left
 * out is never left out in silence.
 */
static void
log_not_ready(int64 run_id, List *not_ready, bool background)
{
	static List *said = NIL;
	List	   *now_said = NIL;
	ListCell   *lc;
	MemoryContext old;

	foreach(lc, not_ready)
	{
		Oid			tbl = lfirst_oid(lc);

		if (!background || !list_member_oid(said, tbl))
		{
			xact_begin();
			log_action(run_id, tbl, "run", NULL, "skipped", "55000",
					   "table is not ready: its trigger ingest_dedup is missing "
					   "(a restore not finished, or the trigger dropped: "
					   "ingest.unmanage_table() then ingest.manage_table() make it again)");
			xact_end();
		}
		old = MemoryContextSwitchTo(TopMemoryContext);
		now_said = lappend_oid(now_said, tbl);
		MemoryContextSwitchTo(old);
	}
	/* only tables not ready now: one ready again (or gone) is said anew */
	if (background)
	{
		list_free(said);
		said = now_said;
	}
	else
		list_free(now_said);
}

/* Take the table's maintenance lock, without waiting. */
static bool
lock_table(Oid relid)
{
	bool		locked;

	xact_begin();
	locked = IngestTableLockAcquire(relid, INGEST_LOCK_MAINTENANCE, true, false);
	xact_end();
	table_lock_held = locked;
	return locked;
}

/*
 * Take the table's maintenance lock back after an abort released it (in a
 * transaction; an error outside one released nothing); table_lock_held
 * says whether this process holds it.
 */
static void
retake_table_lock(Oid relid)
{
	table_lock_held = IngestTableLockHeld(relid, INGEST_LOCK_MAINTENANCE) ||
		IngestTableLockAcquire(relid, INGEST_LOCK_MAINTENANCE, true, false);
}

/* Read the table's plan into a list of MaintAction in "cxt". */
static List *
plan_table(Oid relid, MemoryContext cxt)
{
	List	   *plan = NIL;
	Oid			types[2] = {OIDOID, INT4OID};
	Datum		values[2];
	uint64		i;
	int			rc;

	xact_begin();
	values[0] = ObjectIdGetDatum(relid);
	values[1] = Int32GetDatum(ingest_max_drops_per_run);
	rc = SPI_execute_with_args(
		"SELECT action, partition, partition_oid, day, detail, arg "
		"  FROM ingest_internal.plan($1, pg_catalog.now(), $2)",
		2, types, values, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not plan maintenance: %s", SPI_result_code_string(rc));

	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(cxt);
		MaintAction *a = palloc0(sizeof(MaintAction));
		bool		isnull;
		Datum		d;

		a->action = SPI_getvalue(tup, desc, 1);
		a->partition = SPI_getvalue(tup, desc, 2);
		d = SPI_getbinval(tup, desc, 3, &isnull);
		a->partition_oid = isnull ? InvalidOid : DatumGetObjectId(d);
		a->day = SPI_getbinval(tup, desc, 4, &a->day_null);
		a->detail = SPI_getvalue(tup, desc, 5);
		a->arg = SPI_getvalue(tup, desc, 6);
		plan = lappend(plan, a);
		MemoryContextSwitchTo(old);
	}
	xact_end();
	return plan;
}

/*
 * Release the table's maintenance lock; with record, record the outcome of
 * its run first.
 */
static void
unlock_table(Oid relid, bool record, int failures, const char *sqlstate,
			 const char *message)
{
	Oid			types[5] = {OIDOID, INT4OID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', sqlstate ? ' ' : 'n', message ? ' ' : 'n', ' '};
	bool		isnull;

	values[0] = ObjectIdGetDatum(relid);
	values[1] = Int32GetDatum(failures);
	values[2] = sqlstate ? CStringGetTextDatum(sqlstate) : (Datum) 0;
	values[3] = message ? CStringGetTextDatum(message) : (Datum) 0;
	values[4] = Int32GetDatum(ingest_maintenance_interval);

	xact_begin();
	if (record)
		(void) exec_scalar("SELECT ingest_internal.record_outcome($1, $2, $3, $4, $5)",
						   5, types, values, nulls, &isnull);
	if (table_lock_held)
		IngestTableLockRelease(relid, INGEST_LOCK_MAINTENANCE, true);
	table_lock_held = false;
	xact_end();
}

static void
log_action(int64 run_id, Oid relid, const char *action, const char *partition,
		   const char *status, const char *sqlstate, const char *message)
{
	Oid			types[7] = {INT8OID, OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', partition ? ' ' : 'n', ' ',
	sqlstate ? ' ' : 'n', message ? ' ' : 'n'};
	bool		isnull;

	values[0] = Int64GetDatum(run_id);
	values[1] = ObjectIdGetDatum(relid);
	values[2] = CStringGetTextDatum(action);
	values[3] = partition ? CStringGetTextDatum(partition) : (Datum) 0;
	values[4] = CStringGetTextDatum(status);
	values[5] = sqlstate ? CStringGetTextDatum(sqlstate) : (Datum) 0;
	values[6] = message ? CStringGetTextDatum(message) : (Datum) 0;
	(void) exec_scalar("SELECT ingest_internal.log($1, $2, $3, $4, $5, $6, $7)",
					   7, types, values, nulls, &isnull);
}

/* Whether a fresh plan of the table still has the action (in a transaction). */
static bool
still_planned(Oid relid, MaintAction *a)
{
	Datum		args[5] = {ObjectIdGetDatum(relid), Int32GetDatum(ingest_max_drops_per_run),
		CStringGetTextDatum(a->action), ObjectIdGetDatum(a->partition_oid),
	a->arg ? CStringGetTextDatum(a->arg) : (Datum) 0};
	char		nulls[5] = {' ', ' ', ' ', ' ', a->arg ? ' ' : 'n'};
	bool		isnull;

	return DatumGetBool(exec_scalar("SELECT EXISTS (SELECT FROM ingest_internal.plan($1, pg_catalog.now(), $2) p "
									" WHERE p.action OPERATOR(pg_catalog.=) $3 "
									"   AND p.partition_oid OPERATOR(pg_catalog.=) $4 "
									"   AND p.arg IS NOT DISTINCT FROM $5)",
									5, (Oid[]) {OIDOID, INT4OID, TEXTOID, OIDOID, TEXTOID}, args,
									nulls, &isnull));
}

/*
 * Take back the mark mark_retiring gave a day whose detach did not start
 * (no longer due, or failed before it): the day is an ordinary one again
 * until a later run marks it.  A detach that started and was interrupted
 * leaves the day detach-pending, and the mark stays for its finalize.
 */
static void
unmark_retiring(Oid partition_oid)
{
	Datum		arg = ObjectIdGetDatum(partition_oid);
	bool		isnull;

	/* a mark locked by another transaction is being deleted by it */
	(void) exec_scalar("DELETE FROM ingest_internal.retired r "
					   " WHERE r.partition_oid IN (SELECT t.partition_oid FROM ingest_internal.retired t "
					   "                            WHERE t.partition_oid OPERATOR(pg_catalog.=) $1 "
					   "                              FOR UPDATE SKIP LOCKED) "
					   "   AND EXISTS (SELECT FROM pg_catalog.pg_inherits i "
					   "                WHERE i.inhrelid OPERATOR(pg_catalog.=) $1 "
					   "                  AND NOT i.inhdetachpending)",
					   1, (Oid[]) {OIDOID}, &arg, NULL, &isnull);
}

/*
 * Fail a detach or drop, to be retried by the next run, while a
 * transaction that changed the table's configuration (configure()) is
 * still open.  The step reads that row holding its tables' locks: waiting
 * for the row there would deadlock with that transaction if it went on to
 * lock one of them (to make partitions, say).  Otherwise the row is held
 * FOR SHARE.
 */
static void
lock_config_nowait(Oid relid)
{
	Datum		rel = ObjectIdGetDatum(relid);
	bool		isnull;

	(void) exec_scalar("SELECT 1 FROM ingest.table_config c "
					   " WHERE c.event_table OPERATOR(pg_catalog.=) $1 FOR SHARE SKIP LOCKED",
					   1, (Oid[]) {OIDOID}, &rel, NULL, &isnull);
	/* no row at all: the table was unmanaged, and still_planned says so */
	if (isnull &&
		DatumGetBool(exec_scalar("SELECT EXISTS (SELECT FROM ingest.table_config c "
								 " WHERE c.event_table OPERATOR(pg_catalog.=) $1)",
								 1, (Oid[]) {OIDOID}, &rel, NULL, &isnull)))
	{
		char	   *name = get_rel_name(relid);

		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("configuration of table \"%s\" is being changed by another transaction",
						name ? name : "?"),
				 errdetail("A retirement does not wait for it while holding table locks; the next run retries.")));
	}
}

/* Whether a relation is a partition now (in a transaction, with SPI). */
static bool
attached(Oid relid)
{
	Datum		arg = ObjectIdGetDatum(relid);
	bool		isnull;

	return DatumGetBool(exec_scalar("SELECT EXISTS (SELECT FROM pg_catalog.pg_inherits i "
									" WHERE i.inhrelid OPERATOR(pg_catalog.=) $1)",
									1, (Oid[]) {OIDOID}, &arg, NULL, &isnull));
}

/*
 * Whether a planned detach or drop is still due, asked in the transaction
 * that carries it out (a detach's first phase commits it), holding the
 * table's configuration row FOR SHARE: a configure() committed since the
 * plan is seen, and one made later waits for this transaction.  First the
 * tables are locked as the statement will lock them (a detach: the table
 * and the day in lockmode; a drop: the detached day), so that the row is
 * never held while a table lock is waited for; then the row is taken
 * without waiting (lock_config_nowait).  A day no longer due is logged as
 * skipped and loses the mark mark_retiring gave it.
 */
static bool
still_due(Oid relid, int64 run_id, MaintAction *a, LOCKMODE lockmode)
{
	if (strcmp(a->action, "drop") != 0)
	{
		LockRelationOid(relid, lockmode);
		LockRelationOid(a->partition_oid, lockmode);
	}
	else
	{
		/* detached: no loader holds it; attached again: let its loaders be */
		if (!attached(a->partition_oid))
			LockRelationOid(a->partition_oid, AccessExclusiveLock);
		if (attached(a->partition_oid))
		{
			unmark_retiring(a->partition_oid);
			log_action(run_id, relid, a->action, a->partition, "skipped", NULL,
					   "no longer due: the day was attached again");
			return false;
		}
	}
	lock_config_nowait(relid);
	/* a snapshot that sees the policy as the row lock found it */
	PopActiveSnapshot();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (still_planned(relid, a))
		return true;
	unmark_retiring(a->partition_oid);
	log_action(run_id, relid, a->action, a->partition, "skipped", NULL,
			   "no longer due: the table's policy changed since the plan");
	return false;
}

/*
 * A relation's qualified name as it is now (in a transaction): a top-level
 * statement names what the plan found by OID, which may have been renamed
 * since.
 */
static char *
name_now(Oid relid)
{
	char	   *rel = get_rel_name(relid);
	char	   *nsp = rel ? get_namespace_name(get_rel_namespace(relid)) : NULL;

	if (nsp == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u no longer exists", relid)));
	return quote_qualified_identifier(nsp, rel);
}

/*
 * Retire a partition: remember it, detach it, log.  DETACH CONCURRENTLY
 * runs at top level; on a table Citus distributes, where Citus refuses it,
 * a plain DETACH (detach_locking).
 */
static void
do_detach(Oid relid, int64 run_id, MaintAction *a)
{
	Datum		arg = ObjectIdGetDatum(a->partition_oid);
	bool		isnull;
	bool		citus;
	bool		untouched;
	MemoryContext cxt = CurrentMemoryContext;
	ErrorData  *edata;

	xact_begin();
	/*
	 * The plan is a transaction old: a day that a configure() since then
	 * keeps, or a table unmanaged since, is left as it is (asked again
	 * under the lock, still_due, where the detach starts).
	 */
	if (!still_planned(relid, a))
	{
		unmark_retiring(a->partition_oid);	/* one an earlier run left */
		log_action(run_id, relid, a->action, a->partition, "skipped", NULL,
				   "no longer due: the table's policy changed since the plan");
		xact_end();
		return;
	}
	(void) exec_scalar("SELECT ingest_internal.mark_retiring($1)",
					   1, (Oid[]) {OIDOID}, &arg, NULL, &isnull);
	citus = IngestCitusTable(relid);
	xact_end();

	if (citus && citus_refuses_concurrent_detach)
	{
		detach_locking(relid, run_id, a);
		return;
	}
	if (!citus)
	{
		detach_concurrently(relid, run_id, a);
		return;
	}

	/*
	 * Citus 13 refuses DETACH CONCURRENTLY (XX000, "... DETACH PARTITION ..
	 * CONCURRENTLY commands are currently unsupported") before it starts.  A
	 * Citus that runs it is used as it is; one that refuses is not asked
	 * again by this process.  Any other error is the action's.
	 */
	PG_TRY();
	{
		detach_concurrently(relid, run_id, a);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_INTERNAL_ERROR || edata->message == NULL ||
			strstr(edata->message, "CONCURRENTLY commands are currently unsupported") == NULL)
			PG_RE_THROW();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(cxt);
		/* refused before it started: the partition is as it was */
		xact_begin();
		retake_table_lock(relid);
		if (!table_lock_held)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("another maintenance run took table \"%s\"", get_rel_name(relid))));
		untouched = DatumGetBool(exec_scalar("SELECT EXISTS (SELECT FROM pg_catalog.pg_inherits i "
											 " WHERE i.inhrelid OPERATOR(pg_catalog.=) $1 "
											 "   AND NOT i.inhdetachpending)",
											 1, (Oid[]) {OIDOID}, &arg, NULL, &isnull));
		xact_end();
		if (!untouched)
			ReThrowError(edata);
		FreeErrorData(edata);
		citus_refuses_concurrent_detach = true;
		detach_locking(relid, run_id, a);
	}
	PG_END_TRY();
}

/* DETACH CONCURRENTLY at top level, then forget the day's keys and log. */
static void
detach_concurrently(Oid relid, int64 run_id, MaintAction *a)
{
	bool		isnull;
	char	   *parent_name;
	char	   *part_name;
	StringInfoData sql;

	/* the parent locked as the detach will: names cannot change under us */
	xact_begin();
	if (!still_due(relid, run_id, a, ShareUpdateExclusiveLock))
	{
		xact_end();
		return;
	}
	PopActiveSnapshot();
	SPI_finish();
	parent_name = name_now(relid);
	part_name = name_now(a->partition_oid);
	initStringInfo(&sql);
	appendStringInfo(&sql, "ALTER TABLE %s DETACH PARTITION %s CONCURRENTLY",
					 parent_name, part_name);
	toplevel_as_owner(relid, sql.data);

	/* The day is out of the table: its keys leave the dedup ledger. */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	{
		Datum		args[2] = {ObjectIdGetDatum(relid), ObjectIdGetDatum(a->partition_oid)};

		(void) exec_scalar("SELECT ingest_internal.forget_keys($1, $2)",
						   2, (Oid[]) {OIDOID, OIDOID}, args, NULL, &isnull);
	}
	log_action(run_id, relid, a->action, a->partition, "ok", NULL, a->detail);
	xact_end();
}

/*
 * A plain DETACH, the keys forgotten and the log row, in one transaction:
 * it holds ACCESS EXCLUSIVE on the parent until it commits, waiting at most
 * lock_timeout for it on every node.
 */
static void
detach_locking(Oid relid, int64 run_id, MaintAction *a)
{
	Datum		arg = ObjectIdGetDatum(a->partition_oid);
	bool		isnull;

	xact_begin();
	if (!still_due(relid, run_id, a, AccessExclusiveLock))
	{
		xact_end();
		return;
	}
	(void) exec_scalar("SELECT ingest_internal.detach_locking($1)",
					   1, (Oid[]) {OIDOID}, &arg, NULL, &isnull);
	log_action(run_id, relid, a->action, a->partition, "ok", NULL,
			   psprintf("%s%splain DETACH PARTITION: Citus refuses DETACH PARTITION CONCURRENTLY",
						a->detail ? a->detail : "", a->detail ? "; " : ""));
	xact_end();
}

/*
 * Run a top-level statement on a relation as its owner, as owner_ddl does
 * for the others (the worker session's search_path is pinned already).
 * An error leaves the user to IngestWorkerStep (worker.c), which restores
 * it.
 */
static void
toplevel_as_owner(Oid rel, const char *sql)
{
	Oid			save_user;
	int			save_sec;

	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(IngestRelationOwner(rel),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	IngestExecuteTopLevel(sql);
	SetUserIdAndSecContext(save_user, save_sec);
}

/*
 * Lock the target of a top-level statement as the statement will, so that
 * its name stays its own until the statement has looked it up: an index
 * as DROP INDEX CONCURRENTLY locks it (its table first), a partition
 * against renaming.
 */
static void
lock_target(Oid target)
{
	if (get_rel_relkind(target) == RELKIND_INDEX)
	{
		Oid			heap = IndexGetRelation(target, true);

		if (OidIsValid(heap))
			LockRelationOid(heap, ShareUpdateExclusiveLock);
		LockRelationOid(target, ShareUpdateExclusiveLock);
	}
	else
		LockRelationOid(target, AccessShareLock);
}

/*
 * Whether the action on a locked target is still due.  An index drop is
 * asked of a fresh plan; a freeze only needs its day still attached to a
 * managed table and not frozen (the plan closes the oldest day ready,
 * which an index built meanwhile may have made another).
 */
static bool
target_still_due(Oid relid, MaintAction *a)
{
	Datum		args[2] = {ObjectIdGetDatum(a->partition_oid), ObjectIdGetDatum(relid)};
	bool		isnull;

	if (strcmp(a->action, "freeze") != 0)
		return still_planned(relid, a);
	return DatumGetBool(exec_scalar("SELECT EXISTS (SELECT FROM pg_catalog.pg_inherits i "
									" WHERE i.inhrelid OPERATOR(pg_catalog.=) $1 "
									"   AND i.inhparent OPERATOR(pg_catalog.=) $2 "
									"   AND NOT i.inhdetachpending) "
									"   AND EXISTS (SELECT FROM ingest.table_config t "
									"                WHERE t.event_table OPERATOR(pg_catalog.=) $2) "
									"   AND NOT EXISTS (SELECT FROM ingest_internal.partition_closed c "
									"                    WHERE c.partition_oid OPERATOR(pg_catalog.=) $1 "
									"                      AND c.step OPERATOR(pg_catalog.=) 'freeze')",
									2, (Oid[]) {OIDOID, OIDOID}, args, NULL, &isnull));
}

/*
 * Run a top-level statement, then log the action (and run "after", an SQL
 * call taking the partition's OID, if any) in the transaction it returns
 * in.  With a valid "target", the statement is "sql" followed by the name
 * the target has now (the plan gives its OID; it may have been renamed
 * since): the target is locked first (lock_target) and the action asked
 * again under the lock; one no longer due (the target gone, say) is
 * skipped.
 */
static void
toplevel_step(Oid relid, int64 run_id, MaintAction *a, const char *sql,
			  Oid target, const char *after)
{
	const char *logged = a->partition;
	bool		isnull;

	xact_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (OidIsValid(target))
	{
		lock_target(target);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		if (!target_still_due(relid, a))
		{
			log_action(run_id, relid, a->action, a->partition, "skipped", NULL,
					   "no longer due: changed since the plan");
			xact_end();
			return;
		}
		PopActiveSnapshot();
		SPI_finish();
		/* kept where the statement's commits do not free it */
		logged = MemoryContextStrdup(xact_caller_cxt, name_now(target));
		sql = psprintf("%s %s", sql, logged);
	}
	toplevel_as_owner(OidIsValid(a->partition_oid) ? a->partition_oid : relid, sql);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (after)
	{
		Datum		args[2] = {ObjectIdGetDatum(a->partition_oid), ObjectIdGetDatum(relid)};

		(void) exec_scalar(after, 2, (Oid[]) {OIDOID, OIDOID}, args, NULL, &isnull);
	}
	log_action(run_id, relid, a->action, logged, "ok", NULL, a->detail);
	xact_end();
}

/*
 * Build a declared index on a partition with CREATE INDEX CONCURRENTLY: it
 * blocks no insert into the partition, and may wait up to
 * ingest.index_lock_timeout for older transactions.  An interrupted build
 * leaves an invalid index, which the next plan drops and builds again.
 */
static void
do_index(Oid relid, int64 run_id, MaintAction *a)
{
	Datum		args[2] = {ObjectIdGetDatum(a->partition_oid), CStringGetTextDatum(a->arg)};
	Datum		ddl;
	bool		isnull;
	char	   *sql;
	char		buf[32];
	MemoryContext cxt = CurrentMemoryContext;

	xact_begin();
	ddl = exec_scalar("SELECT ingest_internal.partition_index_ddl($1, $2)",
					  2, (Oid[]) {OIDOID, TEXTOID}, args, NULL, &isnull);
	sql = isnull ? NULL : MemoryContextStrdup(cxt, TextDatumGetCString(ddl));
	xact_end();
	if (sql == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("declared index \"%s\" no longer exists", a->arg)));

	snprintf(buf, sizeof(buf), "%d", ingest_index_lock_timeout);
	SetConfigOption("lock_timeout", buf, PGC_SUSET, PGC_S_SESSION);
	PG_TRY();
	{
		toplevel_step(relid, run_id, a, sql, InvalidOid, NULL);
	}
	PG_FINALLY();
	{
		snprintf(buf, sizeof(buf), "%d", ingest_lock_timeout);
		SetConfigOption("lock_timeout", buf, PGC_SUSET, PGC_S_SESSION);
	}
	PG_END_TRY();
}

/* Carry out one action of the plan, logging it in its own transaction. */
static void
action_step(Oid relid, int64 run_id, void *arg)
{
	MaintAction *a = (MaintAction *) arg;
	const char *sql = NULL;
	int			nargs = 1;
	Oid			types[2] = {OIDOID, DATEOID};
	Datum		values[2];
	bool		isnull;

	if (strcmp(a->action, "detach") == 0)
	{
		do_detach(relid, run_id, a);
		return;
	}
	if (strcmp(a->action, "index") == 0)
	{
		do_index(relid, run_id, a);
		return;
	}
	if (strcmp(a->action, "drop_index") == 0)
	{
		/* the plan gives the index's OID */
		Oid			idx = a->arg ? atooid(a->arg) : InvalidOid;

		if (!OidIsValid(idx))
			elog(ERROR, "maintenance plan gave no index to drop");
		toplevel_step(relid, run_id, a, "DROP INDEX CONCURRENTLY IF EXISTS",
					  idx, "SELECT ingest_internal.tidy_index_drops($2)");
		return;
	}
	if (strcmp(a->action, "freeze") == 0)
	{
		toplevel_step(relid, run_id, a, "VACUUM (FREEZE)", a->partition_oid,
					  "SELECT ingest_internal.close_step($1, 'freeze')");
		return;
	}

	values[0] = ObjectIdGetDatum(a->partition_oid);
	if (strcmp(a->action, "create") == 0)
	{
		sql = "SELECT ingest_internal.create_partition($1, $2)";
		nargs = 2;
		values[0] = ObjectIdGetDatum(relid);
		values[1] = a->day;
	}
	else if (strcmp(a->action, "finalize") == 0)
		sql = "SELECT ingest_internal.finalize_detach($1)";
	else if (strcmp(a->action, "drop") == 0)
		sql = "SELECT ingest_internal.drop_retired($1)";
	else if (strcmp(a->action, "summarize") == 0)
		sql = "SELECT ingest_internal.close_step($1, 'summarize')";
	else if (strcmp(a->action, "analyze") == 0)
		sql = "SELECT ingest_internal.close_step($1, 'analyze')";

	xact_begin();
	if (strcmp(a->action, "drop") == 0 && !still_due(relid, run_id, a, NoLock))
	{
		xact_end();
		return;
	}
	/*
	 * A day dropped since the plan (a restore with --clean replaces the
	 * table) is passed over.  Its statements take this lock themselves.
	 */
	if (strcmp(a->action, "summarize") == 0 || strcmp(a->action, "analyze") == 0)
	{
		LockRelationOid(a->partition_oid, ShareUpdateExclusiveLock);
		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(a->partition_oid)))
		{
			log_action(run_id, relid, a->action, a->partition, "skipped", NULL,
					   "no longer due: the day is gone");
			xact_end();
			return;
		}
	}
	if (sql)
	{
		(void) exec_scalar(sql, nargs, types, values, NULL, &isnull);
		/* a create finds NULL: the day was made while it waited for the lock */
		if (isnull && strcmp(a->action, "create") == 0)
		{
			log_action(run_id, relid, a->action, a->partition, "skipped", NULL,
					   a->detail ? psprintf("made meanwhile: %s", a->detail) : "made meanwhile");
			xact_end();
			return;
		}
	}
	else
	{
		/*
		 * "warning" rows (the retirement cap, days missed long ago) also go
		 * to the server log
		 */
		ereport(WARNING,
				(errmsg("maintenance of table \"%s\" left work undone",
						get_rel_name(relid)),
				 errdetail_internal("%s", a->detail)));
	}
	log_action(run_id, relid, a->action, a->partition,
			   sql ? "ok" : "warning", NULL, a->detail);
	xact_end();
}

/* Plan a table: the plan lands in PlanStep.plan. */
typedef struct PlanStep
{
	MemoryContext cxt;
	List	   *plan;
} PlanStep;

static void
plan_step(Oid relid, int64 run_id, void *arg)
{
	PlanStep   *ps = (PlanStep *) arg;

	ps->plan = plan_table(relid, ps->cxt);
}

/* A step of a table's maintenance, as IngestWorkerStep runs it. */
typedef struct GuardedStep
{
	void		(*step) (Oid, int64, void *);
	Oid			relid;
	int64		run_id;
	void	   *arg;
} GuardedStep;

static void
guarded_step(void *arg)
{
	GuardedStep *g = (GuardedStep *) arg;

	g->step(g->relid, g->run_id, g->arg);
}

/*
 * Run one step of a table's maintenance.  An error is caught, its
 * transaction rolled back (worker.c), and it is logged with its SQLSTATE
 * in a new transaction; the caller goes on with the next step.
 */
static bool
run_guarded(void (*step) (Oid, int64, void *), void *arg, Oid relid,
			int64 run_id, const char *action, const char *partition,
			char **sqlstate, char **message)
{
	MemoryContext cxt = CurrentMemoryContext;
	GuardedStep g = {step, relid, run_id, arg};
	ErrorData  *edata;

	pgstat_report_activity(STATE_RUNNING, action);
	edata = IngestWorkerStep(guarded_step, &g);
	pgstat_report_activity(STATE_IDLE, NULL);

	if (edata == NULL)
		return true;

	*sqlstate = pstrdup(unpack_sql_state(edata->sqlerrcode));
	*message = pstrdup(edata->message);
	ereport(LOG,
			(errcode(edata->sqlerrcode),
			 errmsg("ingest maintenance step \"%s\" failed for table with OID %u: %s",
					action, relid, edata->message)));
	FreeErrorData(edata);

	xact_begin();
	log_action(run_id, relid, action, partition, "error", *sqlstate, *message);
	retake_table_lock(relid);
	if (!table_lock_held)
		log_action(run_id, relid, "run", NULL, "skipped", NULL,
				   "another maintenance run took this table after a failed step");
	xact_end();
	MemoryContextSwitchTo(cxt);
	return false;
}

/*
 * Whether a partition of the table is left pending detach (a DETACH ...
 * CONCURRENTLY that failed after its first transaction, or a FINALIZE
 * that failed); a plain DETACH that failed leaves none.
 */
static bool
detach_pending(Oid relid)
{
	Datum		arg = ObjectIdGetDatum(relid);
	bool		isnull;
	bool		pending;

	xact_begin();
	pending = DatumGetBool(exec_scalar("SELECT EXISTS (SELECT FROM pg_catalog.pg_inherits i "
									   " WHERE i.inhparent OPERATOR(pg_catalog.=) $1 "
									   "   AND i.inhdetachpending)",
									   1, (Oid[]) {OIDOID}, &arg, NULL, &isnull));
	xact_end();
	return pending;
}

/* Which of a table's planned steps a pass over it takes. */
typedef enum MaintPass
{
	PASS_ALL,
	PASS_DROPS,					/* drops of the days detached just now */
	PASS_NOT_INDEXES,			/* all but index builds and drops */
	PASS_INDEXES				/* index builds and drops only */
} MaintPass;

static bool
in_pass(MaintAction *a, MaintPass pass)
{
	bool		index = strcmp(a->action, "index") == 0 ||
		strcmp(a->action, "drop_index") == 0;

	switch (pass)
	{
		case PASS_DROPS:
			return strcmp(a->action, "drop") == 0;
		case PASS_NOT_INDEXES:
			return !index;
		case PASS_INDEXES:
			return index;
		default:
			return true;
	}
}

/*
 * Plan and carry out the steps of one table's maintenance that "pass"
 * takes.  Returns the number of failed steps, whether a partition was
 * detached, and whether steps of another pass were planned.
 */
static int
maintain_table(Oid relid, int64 run_id, MaintPass pass, bool background,
			   bool *detached, bool *others, char **sqlstate, char **message)
{
	PlanStep	ps = {CurrentMemoryContext, NIL};
	int			failures = 0;
	bool		pending_left = false;
	ListCell   *lc;

	if (!run_guarded(plan_step, &ps, relid, run_id, "plan", NULL,
					 sqlstate, message))
		return 1;

	foreach(lc, ps.plan)
	{
		MaintAction *a = lfirst(lc);
		bool		detach = strcmp(a->action, "detach") == 0;

		CHECK_FOR_INTERRUPTS();
		if (!table_lock_held)
			break;
		if (!in_pass(a, pass))
		{
			*others = true;
			continue;
		}

		/*
		 * A table has one partition pending detach at most: while one is
		 * left (its FINALIZE or DETACH failed, or is left to the worker),
		 * the next detach would only fail with 55000 and hide why.
		 */
		if (detach && pending_left)
			continue;

		/*
		 * FINALIZE and CREATE INDEX CONCURRENTLY wait for every older
		 * snapshot, and the caller of a manual run holds one while it waits
		 * for us: leave them to the background worker.
		 */
		if (!background && (strcmp(a->action, "finalize") == 0 ||
							strcmp(a->action, "index") == 0))
		{
			xact_begin();
			log_action(run_id, relid, a->action, a->partition, "skipped", NULL,
					   "left to the background worker, which waits for no caller's snapshot");
			xact_end();
			pending_left |= strcmp(a->action, "finalize") == 0;
			continue;
		}
		if (!run_guarded(action_step, a, relid, run_id, a->action, a->partition,
						 sqlstate, message))
		{
			failures++;
			if (detach || strcmp(a->action, "finalize") == 0)
				pending_left = pending_left || detach_pending(relid);
			/* (a run that took the table meanwhile may have marked it) */
			if (detach && table_lock_held)
			{
				xact_begin();
				unmark_retiring(a->partition_oid);
				xact_end();
			}
		}
		else if (detach || strcmp(a->action, "finalize") == 0)
			*detached = true;
	}
	return failures;
}

/* A table's part of a run, over one pass or two. */
typedef struct TableRun
{
	Oid			relid;
	bool		more;			/* a pass is left to it */
	bool		failed;			/* a failure of this run is recorded */
} TableRun;

/*
 * One pass over a table: take its maintenance lock, carry out the steps of
 * "pass" (and drop the days it detached), and let go of the lock.  The
 * table's outcome is recorded under the lock, once a run: at its first
 * failure, or after its last pass (the one with no steps left to a later
 * pass, or whose lock another run took meanwhile).
 */
static void
run_pass(TableRun *r, int64 run_id, MaintPass pass, bool background, bool last)
{
	char	   *sqlstate = NULL;
	char	   *message = NULL;
	bool		detached = false;
	bool		others = false;
	bool		no_matter;
	int			failures;

	r->more = false;
	if (!lock_table(r->relid))
	{
		xact_begin();
		log_action(run_id, r->relid, "run", NULL, "skipped", NULL,
				   "another maintenance run holds this table");
		xact_end();
		return;
	}
	failures = maintain_table(r->relid, run_id, pass, background, &detached,
							  &others, &sqlstate, &message);
	/* Partitions detached just now are dropped in the same run. */
	if (detached && table_lock_held)
		failures += maintain_table(r->relid, run_id, PASS_DROPS, background,
								   &detached, &no_matter, &sqlstate, &message);
	r->more = !last && others && table_lock_held;
	unlock_table(r->relid, !r->failed && (failures > 0 || !r->more),
				 failures, sqlstate, message);
	r->failed |= failures > 0;
}

/*
 * Maintain one table (relid) or all managed tables (InvalidOid).  The worker
 * passes background = true: it honours retry delays and makes its own run
 * id.  A manual run passes its run id and marks it done at the end.
 */
void
IngestMaintainDatabase(Oid relid, int64 run_id, bool background)
{
	MemoryContext runcxt;
	MemoryContext tablecxt;
	MemoryContext old;
	List	   *tables;
	List	   *not_ready = NIL;
	ListCell   *lc;
	bool		split;
	TableRun   *runs;

	runcxt = AllocSetContextCreate(TopMemoryContext, "ingest maintenance run",
								   ALLOCSET_DEFAULT_SIZES);
	tablecxt = AllocSetContextCreate(runcxt, "ingest maintenance table",
									 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(runcxt);

	xact_begin();
	tables = managed_tables(relid, background, runcxt, &not_ready);
	if (run_id == 0)
		run_id = next_run_id();
	xact_end();
	log_not_ready(run_id, not_ready, background);

	/*
	 * With several tables, the worker takes every table's other steps (days
	 * made, retired, closed) before any table's index builds and drops: a
	 * concurrent build takes as long as its day is big and first waits for
	 * every older snapshot (up to ingest.index_lock_timeout), and no table's
	 * days wait for another's indexes.  (A manual run builds none.)
	 */
	split = background && list_length(tables) > 1;
	runs = palloc0(sizeof(TableRun) * Max(list_length(tables), 1));
	for (int pass = 0; pass < (split ? 2 : 1); pass++)
	{
		foreach(lc, tables)
		{
			TableRun   *r = &runs[foreach_current_index(lc)];

			CHECK_FOR_INTERRUPTS();
			r->relid = lfirst_oid(lc);
			if (pass == 1 && !r->more)
				continue;
			MemoryContextSwitchTo(tablecxt);
			run_pass(r, run_id, !split ? PASS_ALL : pass == 0 ? PASS_NOT_INDEXES : PASS_INDEXES,
					 background, !split || pass == 1);
			MemoryContextSwitchTo(runcxt);
			MemoryContextReset(tablecxt);
		}
	}

	if (!background)
	{
		Datum		arg = Int64GetDatum(run_id);
		bool		isnull;

		xact_begin();
		(void) exec_scalar("INSERT INTO ingest_internal.run_done VALUES ($1)",
						   1, (Oid[]) {INT8OID}, &arg, NULL, &isnull);
		xact_end();
	}

	MemoryContextSwitchTo(old);
	MemoryContextDelete(runcxt);
}

/*
 * Trim the maintenance log and the load statistics to ingest.log_retention
 * and the rejects to ingest.rejects_retention (by rejected_at's index:
 * rejects can be many).
 */
void
IngestTrimByAge(void)
{
	Datum		arg = Int32GetDatum(ingest_log_retention);
	bool		isnull;

	xact_begin();
	(void) exec_scalar("DELETE FROM ingest.maintenance_log "
					   " WHERE logged_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)",
					   1, (Oid[]) {INT4OID}, &arg, NULL, &isnull);
	/* an hour's counts go once the whole hour is older than the horizon */
	(void) exec_scalar("DELETE FROM ingest_internal.load_stats "
					   " WHERE hour < pg_catalog.now() - pg_catalog.make_interval(hours => 1, secs => $1)",
					   1, (Oid[]) {INT4OID}, &arg, NULL, &isnull);
	arg = Int32GetDatum(ingest_rejects_retention);
	(void) exec_scalar("DELETE FROM ingest.rejects "
					   " WHERE rejected_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)",
					   1, (Oid[]) {INT4OID}, &arg, NULL, &isnull);
	xact_end();
}

/* Append the rows of a query to a materialized SRF result. */
static void
emit_rows(ReturnSetInfo *rsinfo, const char *sql, int nargs, Oid *types,
		  Datum *values, const char *nulls)
{
	TupleDesc	desc = rsinfo->setDesc;
	int			natts = desc->natts;
	uint64		i;
	int			rc;

	rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	if (rc != SPI_OK_SELECT && rc != SPI_OK_DELETE_RETURNING)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));

	for (i = 0; i < SPI_processed; i++)
	{
		Datum		row[4];
		bool		rownulls[4];
		int			j;

		Assert(natts <= 4);
		for (j = 0; j < natts; j++)
			row[j] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
								   j + 1, &rownulls[j]);
		tuplestore_putvalues(rsinfo->setResult, desc, row, rownulls);
	}
}

PG_FUNCTION_INFO_V1(ingest_run_maintenance);

/*
 * ingest.run_maintenance(tbl regclass, dry_run boolean)
 *
 * dry_run: the plan, computed here.  Otherwise a manual run in a worker
 * (worker.c), whose log rows are returned.
 */
Datum
ingest_run_maintenance(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid = PG_ARGISNULL(0) ? InvalidOid : PG_GETARG_OID(0);
	bool		dry_run = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	Datum		values[2];
	char		nulls[2] = {OidIsValid(relid) ? ' ' : 'n', ' '};
	bool		isnull;
	int64		run_id;
	Oid			extowner;

	InitMaterializedSRF(fcinfo, 0);

	/* the run's worker could call none of another version's objects */
	IngestRequireCurrentVersion();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * A table's owner runs its table's maintenance; a superuser every
	 * table's.  The run itself acts as the extension's owner, as the
	 * worker does.
	 */
	if (OidIsValid(relid) && get_rel_name(relid) != NULL &&
		!has_privs_of_role(GetUserId(), IngestRelationOwner(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of table %s", get_rel_name(relid))));
	if (!OidIsValid(relid) && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to run the maintenance of every table"),
				 errhint("Name one of your tables.")));
	extowner = IngestExtensionOwner();

	values[0] = ObjectIdGetDatum(relid);
	if (OidIsValid(relid))
	{
		(void) exec_scalar("SELECT 1 FROM ingest.table_config WHERE event_table = $1",
						   1, (Oid[]) {OIDOID}, values, NULL, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table \"%s\" is not managed by ingest",
							get_rel_name(relid) ? get_rel_name(relid) : "?"),
					 errhint("Use ingest.create_event_table() or ingest.manage_table() first.")));
	}

	if (!dry_run)
	{
		if (RecoveryInProgress())
			ereport(ERROR,
					(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
					 errmsg("cannot run partition maintenance during recovery")));
		if (IsTransactionBlock())
			ereport(ERROR,
					(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
					 errmsg("ingest.run_maintenance() cannot run inside a transaction block"),
					 errdetail("Its actions commit on their own, as the background worker's do."),
					 errhint("Call it outside BEGIN ... COMMIT, or pass dry_run => true.")));
		if (IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("ingest.run_maintenance() must run in a READ COMMITTED transaction"),
					 errdetail("Its snapshot would not see what the run did."),
					 errhint("SET default_transaction_isolation = 'read committed' first, or pass dry_run => true.")));
	}

	if (dry_run)
	{
		values[1] = Int32GetDatum(ingest_max_drops_per_run);
		AS_OWNER(extowner, emit_rows(rsinfo,
				  "SELECT p.event_table, p.action, p.partition, p.detail "
				  "  FROM ingest.table_config c, "
				  "       LATERAL ingest_internal.plan(c.event_table, pg_catalog.now(), $2) "
				  "       WITH ORDINALITY AS p "
				  " WHERE $1 IS NULL OR c.event_table = $1 "
				  " ORDER BY c.event_table::pg_catalog.oid, p.ordinality",
				  2, (Oid[]) {OIDOID, INT4OID}, values, nulls));
		SPI_finish();
		return (Datum) 0;
	}

	AS_OWNER(extowner, run_id = next_run_id());
	IngestRunManual(relid, run_id, extowner);

	values[0] = Int64GetDatum(run_id);
	AS_OWNER(extowner,
			 (void) exec_scalar("DELETE FROM ingest_internal.run_done WHERE run_id = $1 RETURNING 1",
								1, (Oid[]) {INT8OID}, values, NULL, &isnull));
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("maintenance run " INT64_FORMAT " did not complete", run_id),
				 errhint("See the server log for the worker's error.")));
	emit_rows(rsinfo,
			  "SELECT l.relid::pg_catalog.regclass, l.action, l.partition, "
			  "       CASE l.status WHEN 'error' "
			  "            THEN pg_catalog.format('error %s: %s', l.sqlstate, l.message) "
			  "            WHEN 'skipped' THEN 'skipped: ' || l.message "
			  "            ELSE l.message END "
			  "  FROM ingest.maintenance_log l WHERE l.run_id = $1 ORDER BY l.id",
			  1, (Oid[]) {INT8OID}, values, NULL);
	SPI_finish();
	return (Datum) 0;
}
