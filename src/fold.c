/*-------------------------------------------------------------------------
 *
 * fold.c
 *	  The worker's fold of the hourly rollups, and the snapshot check that
 *	  lets a fold finish a rollup being built.
 *
 * The fold itself is SQL (ingest_internal.fold): merge committed deltas,
 * recompute stale hours from raw events, build new rollups.  A new rollup
 * is built like CREATE INDEX CONCURRENTLY's later phases: once every
 * writer that could have missed it has finished, the raw events of a fresh
 * snapshot plus the deltas of later writers are exact.  The worker folds
 * each table in a transaction of its own and records the outcome in
 * ingest_internal.fold_state (ingest.rollup_health).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/twophase.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#if PG_VERSION_NUM < 170000
#include "storage/sinvaladt.h"
#endif
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/xid8.h"

#include "ingest.h"

/*
 * What a step of the fold works on, each in a transaction of its own: a
 * table whose fold is due, or (on a Citus node) a shard it holds of a
 * distributed managed table, not adopted yet, with its shard id.
 */
typedef struct FoldItem
{
	Oid			rel;
	int64		shardid;
} FoldItem;

/* A query that lists FoldItems (a relation, and a shard id if two columns). */
typedef struct FoldList
{
	const char *query;
	List	   *items;			/* FoldItem *, outliving the transaction */
} FoldList;

/* Run a FoldList's query in a transaction of its own, into its items. */
static void
list_items(void *arg)
{
	FoldList   *list = (FoldList *) arg;
	MemoryContext caller = CurrentMemoryContext;
	List	   *items = NIL;
	uint64		i;

	/* all or nothing: a step that fails lists nothing */
	list->items = NIL;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute(list->query, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not run \"%s\"", list->query);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(caller);
		FoldItem   *item = palloc0(sizeof(FoldItem));

		item->rel = DatumGetObjectId(SPI_getbinval(row, desc, 1, &isnull));
		if (desc->natts > 1)
			item->shardid = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
		items = lappend(items, item);
		MemoryContextSwitchTo(old);
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	list->items = items;
}

/*
 * Adopt one shard (a FoldItem) in a transaction of its own, without
 * waiting for a writer that is adopting it (ingest_internal.citus_adopt).
 * A write that finds its shard not adopted adopts it in the writer's
 * transaction, which the shard's other first writers then wait for: the
 * worker adopts them first.
 */
static void
adopt_shard(void *arg)
{
	FoldItem   *s = (FoldItem *) arg;
	Datum		args[2] = {ObjectIdGetDatum(s->rel), Int64GetDatum(s->shardid)};

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute_with_args("SELECT ingest_internal.citus_adopt($1, $2)", 2,
							  (Oid[]) {REGCLASSOID, INT8OID}, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not adopt shard " INT64_FORMAT, s->shardid);
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
}

/*
 * Run a step of the worker's fold (worker.c), logging its error ("what"
 * failed); the error goes to *error when asked for, else NULL.
 */
static void
try_step(void (*step) (void *), void *arg, const char *what, ErrorData **error)
{
	ErrorData  *edata = IngestWorkerStep(step, arg);

	if (error)
		*error = edata;
	if (edata == NULL)
		return;
	ereport(LOG,
			(errcode(edata->sqlerrcode),
			 errmsg("could not %s: %s", what, edata->message)));
	if (error == NULL)
		FreeErrorData(edata);
}

/* A table's fold, or (with a sqlstate) the failure of its fold to record. */
typedef struct FoldOutcome
{
	Oid			relid;
	TimestampTz started;
	const char *sqlstate;
	const char *message;
} FoldOutcome;

/*
 * Fold one table and record the outcome (a FoldOutcome), in a transaction
 * of its own; with a sqlstate, only record that failure (its SQLSTATE,
 * message and backoff).
 */
static void
fold_table(void *arg)
{
	FoldOutcome *o = (FoldOutcome *) arg;
	Oid			relid = o->relid;
	const char *sqlstate = o->sqlstate;
	const char *message = o->message;
	Datum		args[5];
	char		nulls[5] = {' ', ' ', sqlstate ? ' ' : 'n', message ? ' ' : 'n', ' '};

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	args[0] = ObjectIdGetDatum(relid);
	if (sqlstate == NULL)
	{
		bool		isnull;

		if (SPI_execute_with_args("SELECT ingest_internal.fold($1)", 1, (Oid[]) {REGCLASSOID},
								  args, NULL, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not fold the rollups of table %u", relid);
		(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		/* DDL on the table: not a fold, so no success to record (fold_lag grows) */
		if (isnull)
		{
			PopActiveSnapshot();
			SPI_finish();
			CommitTransactionCommand();
			return;
		}
	}
	args[1] = TimestampTzGetDatum(o->started);
	args[2] = sqlstate ? CStringGetTextDatum(sqlstate) : (Datum) 0;
	args[3] = message ? CStringGetTextDatum(message) : (Datum) 0;
	args[4] = Int32GetDatum(ingest_rollup_fold_interval);
	if (SPI_execute_with_args("SELECT ingest_internal.record_fold($1, $2, $3, $4, $5)", 5,
							  (Oid[]) {OIDOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, INT4OID},
							  args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not record the fold of table %u", relid);
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
}

/*
 * The worker's fold: the committed deltas of each table whose fold is due,
 * each table in a transaction of its own, so that one table's failing fold
 * (a lock it cannot get, a broken side table) holds up no other's.  A
 * failure is recorded in ingest.rollup_health and retried with backoff.
 */
void
IngestFoldRollups(void)
{
	FoldList	shards = {"SELECT shard, shardid FROM ingest_internal.citus_unadopted_here()", NIL};
	FoldList	due = {"SELECT ingest_internal.folds_due()", NIL};
	ListCell   *lc;

	pgstat_report_activity(STATE_RUNNING, "folding rollups");
	try_step(list_items, &shards, "list the Citus shards of this node", NULL);
	foreach(lc, shards.items)
	{
		CHECK_FOR_INTERRUPTS();
		try_step(adopt_shard, lfirst(lc), "adopt a Citus shard of this node", NULL);
	}
	list_free_deep(shards.items);
	try_step(list_items, &due, "list the tables to fold", NULL);

	foreach(lc, due.items)
	{
		FoldOutcome o = {((FoldItem *) lfirst(lc))->rel, GetCurrentTimestamp(), NULL, NULL};
		char		what[64];
		ErrorData  *edata;

		CHECK_FOR_INTERRUPTS();
		snprintf(what, sizeof(what), "fold the rollups of table %u", o.relid);
		try_step(fold_table, &o, what, &edata);
		if (edata == NULL)
			continue;
		/* the failure is recorded in a transaction of its own */
		o.sqlstate = unpack_sql_state(edata->sqlerrcode);
		o.message = edata->message;
		snprintf(what, sizeof(what), "record the failed fold of table %u", o.relid);
		try_step(fold_table, &o, what, NULL);
		FreeErrorData(edata);
	}
	list_free_deep(due.items);
	pgstat_report_activity(STATE_IDLE, NULL);
}


/*
 * May the transaction "vxid" names have missed the rollup?  A backend's
 * may if it holds an xid below "horizon" (invalid: below every running
 * xid).  A prepared transaction (which keeps the vxid of the backend that
 * prepared it) may whatever its xid: a REPEATABLE READ one may have read
 * the rollups with a snapshot older than the rollup, and PREPARE dropped
 * that snapshot's xmin, which the snapshot test looks for.  The backend's
 * xid is read first: PREPARE makes the prepared transaction visible
 * before it clears the backend's xid, so an xid moving over is seen in
 * one place or the other.  The backend may have gone on to another
 * transaction (or database): its xid then is later than "horizon", or is
 * a false alarm, never a miss.
 */
static bool
may_have_missed(VirtualTransactionId vxid, TransactionId horizon)
{
	TransactionId xid = InvalidTransactionId;
	TransactionId xmin;
	bool		more = false;

	if (!VirtualTransactionIdIsRecoveredPreparedXact(vxid))
	{
#if PG_VERSION_NUM >= 170000
		int			nsubxid;
		bool		overflowed;

		ProcNumberGetTransactionIds(vxid.procNumber, &xid, &xmin, &nsubxid, &overflowed);
#elif PG_VERSION_NUM >= 160000
		int			nsubxid;
		bool		overflowed;

		BackendIdGetTransactionIds(vxid.backendId, &xid, &xmin, &nsubxid, &overflowed);
#else
		BackendIdGetTransactionIds(vxid.backendId, &xid, &xmin);
#endif
		if (TransactionIdIsValid(horizon) && TransactionIdIsValid(xid) &&
			TransactionIdPrecedes(xid, horizon))
			return true;
	}
	xid = TwoPhaseGetXidByVirtualXID(vxid, &more);
	return more || TransactionIdIsValid(xid);
}

/*
 * The oldest xid that any transaction or snapshot may still hold, as a
 * 64-bit id, and the next xid.  The procarray holds 32-bit ids, all within
 * 2^31 before the next one; an id older than the oldest (a configuration
 * restored from another cluster, or a rollup left unbuilt for long) is
 * nobody's, and compared in 32 bits could wrap around and look newer.
 */
static FullTransactionId
oldest_running(FullTransactionId *next)
{
	/* read before "next": it is at most "next" then */
	TransactionId oldest = GetOldestTransactionIdConsideredRunning();
	uint32		behind;

	*next = ReadNextFullTransactionId();
	behind = XidFromFullTransactionId(*next) - oldest;
	/* 15.0 to 15.2 could wrap it below the first xid (vacuum_defer_cleanup_age) */
	if (behind > U64FromFullTransactionId(*next) - FirstNormalTransactionId)
		return FullTransactionIdFromEpochAndXid(0, FirstNormalTransactionId);
	return FullTransactionIdFromU64(U64FromFullTransactionId(*next) - behind);
}

/*
 * Is "id" one this cluster may still be running: before the next xid, and
 * not older than the oldest running one?  Others (a configuration restored
 * from another cluster) are nobody's here.
 */
static bool
running_range(FullTransactionId id, FullTransactionId oldest, FullTransactionId next)
{
	return FullTransactionIdPrecedes(id, next) && !FullTransactionIdPrecedes(id, oldest);
}

PG_FUNCTION_INFO_V1(ingest_rollup_build_horizon);

/*
 * ingest_internal.rollup_build_horizon(created): the next xid to be
 * assigned, or NULL while "created" is this transaction (or one of its
 * subtransactions).  Ids of another cluster (a restored configuration),
 * past the next xid or older than the oldest running one, are nobody's.
 */
Datum
ingest_rollup_build_horizon(PG_FUNCTION_ARGS)
{
	FullTransactionId created = PG_GETARG_FULLTRANSACTIONID(0);
	FullTransactionId next;
	FullTransactionId oldest = oldest_running(&next);

	if (running_range(created, oldest, next) &&
		TransactionIdIsCurrentTransactionId(XidFromFullTransactionId(created)))
		PG_RETURN_NULL();
	PG_RETURN_FULLTRANSACTIONID(next);
}

PG_FUNCTION_INFO_V1(ingest_rollup_build_ready);

/*
 * ingest_internal.rollup_build_ready(created, horizon): has every writer
 * that may have missed a rollup created by transaction "created" ended?
 *   - no other backend of this database holds a snapshot that may not see
 *	   "created" as committed (such a snapshot's xmin is at most "created"):
 *	   a REPEATABLE READ writer, or a statement under way;
 *   - no transaction of this database with an xid below "horizon" is
 *	   running: one that wrote before the rollup existed and has not
 *	   committed yet, whose next statement would feed it but whose earlier
 *	   rows were not;
 *   - no transaction of this database is prepared (see may_have_missed).
 * Only this database's transactions can write the table; autovacuum's
 * (ANALYZE takes an xid) write none.  Waiting for the whole cluster's
 * would hold a build back behind every long transaction elsewhere.
 * A writer whose first write comes later reads the rollups after it has an
 * xid (the loader assigns it first), so it either feeds the new rollup or
 * is caught here.  Transaction ids from another cluster (a restored
 * configuration) past this one's next xid, or older than its oldest
 * running one, are nobody's here: nothing waits for them.
 */
Datum
ingest_rollup_build_ready(PG_FUNCTION_ARGS)
{
	FullTransactionId created = PG_GETARG_FULLTRANSACTIONID(0);
	FullTransactionId horizon = PG_GETARG_FULLTRANSACTIONID(1);
	FullTransactionId next;
	FullTransactionId oldest = oldest_running(&next);
	VirtualTransactionId *vxids;
	int			n;
	int			i;

	if (!FullTransactionIdPrecedes(created, next) || !FullTransactionIdPrecedesOrEquals(horizon, next))
		PG_RETURN_BOOL(true);
	/* an id older than every running one holds nothing (in 32 bits it may wrap) */
	if (running_range(created, oldest, next))
	{
		vxids = GetCurrentVirtualXIDs(XidFromFullTransactionId(created), true, false,
									  PROC_IS_AUTOVACUUM | PROC_IN_VACUUM, &n);
		for (i = 0; i < n; i++)
			if (VirtualTransactionIdIsValid(vxids[i]))
				PG_RETURN_BOOL(false);
		pfree(vxids);
	}

	/* every transaction of this database but autovacuum's, and our own */
	vxids = GetCurrentVirtualXIDs(InvalidTransactionId, false, false,
								  PROC_IS_AUTOVACUUM | PROC_IN_VACUUM, &n);
	for (i = 0; i < n; i++)
		if (VirtualTransactionIdIsValid(vxids[i]) &&
			may_have_missed(vxids[i],
							FullTransactionIdPrecedes(oldest, horizon) ?
							XidFromFullTransactionId(horizon) : InvalidTransactionId))
			PG_RETURN_BOOL(false);
	pfree(vxids);
	PG_RETURN_BOOL(true);
}
