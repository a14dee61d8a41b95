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
 * snapshot plus the deltas of later writers are exact.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/snapmgr.h"
#include "utils/xid8.h"

#include "ingest.h"

/*
 * Fold the committed deltas of every table of this database, in a
 * transaction of its own.  A failure is logged and retried next time.
 */
void
IngestFoldRollups(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	pgstat_report_activity(STATE_RUNNING, "folding rollups");
	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_execute("SELECT ingest.fold_rollups()", false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not fold rollups");
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("could not fold rollups: %s", edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
}


PG_FUNCTION_INFO_V1(ingest_rollup_build_ready);

/*
 * ingest_internal.rollup_build_ready(created, horizon): has every writer
 * that may have missed a rollup created by transaction "created" ended?
 *   - no other backend of this database holds a snapshot that may not see
 *	   "created" as committed (such a snapshot's xmin is at most "created"):
 *	   a REPEATABLE READ writer, or a statement under way;
 *   - no transaction with an xid below "horizon" is running: one that wrote
 *	   before the rollup existed and has not committed yet, whose next
 *	   statement would feed it but whose earlier rows were not.
 * A writer whose first write comes later reads the rollups after it has an
 * xid (the loader assigns it first), so it either feeds the new rollup or
 * is caught here.  Transaction ids from another cluster (a restored
 * configuration) are past this one's next xid: nothing waits for them.
 */
Datum
ingest_rollup_build_ready(PG_FUNCTION_ARGS)
{
	FullTransactionId created = PG_GETARG_FULLTRANSACTIONID(0);
	FullTransactionId horizon = PG_GETARG_FULLTRANSACTIONID(1);
	FullTransactionId next = ReadNextFullTransactionId();
	VirtualTransactionId *vxids;
	TransactionId oldest;
	int			n;
	int			i;

	if (!FullTransactionIdPrecedes(created, next) || !FullTransactionIdPrecedesOrEquals(horizon, next))
		PG_RETURN_BOOL(true);
	vxids = GetCurrentVirtualXIDs(XidFromFullTransactionId(created), true, false,
								  PROC_IS_AUTOVACUUM | PROC_IN_VACUUM, &n);
	for (i = 0; i < n; i++)
		if (VirtualTransactionIdIsValid(vxids[i]))
			PG_RETURN_BOOL(false);
	oldest = GetOldestActiveTransactionId();
	PG_RETURN_BOOL(!TransactionIdIsValid(oldest) ||
				   !TransactionIdPrecedes(oldest, XidFromFullTransactionId(horizon)));
}
