/*-------------------------------------------------------------------------
 *
 * fold.c
 *	  The worker's fold of the hourly rollups, and the snapshot check that
 *	  lets a fold finish a rollup being built.
 *
 * The fold itself is SQL (ingest_internal.fold): merge committed deltas,
 * recompute stale hours from raw events, build new rollups.  A new rollup
 * is built like CREATE INDEX CONCURRENTLY's second phase: once no snapshot
 * taken before its creation committed is left, every writer that could
 * have missed it has finished, and the raw events of a fresh snapshot plus
 * the deltas of later writers are exact.
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


PG_FUNCTION_INFO_V1(ingest_older_snapshots);

/*
 * ingest_internal.older_snapshots(xid): does another backend of this
 * database hold a snapshot that may not see transaction xid as committed?
 * Such a snapshot's xmin is at most xid.  An xid from another cluster (a
 * restored configuration) is past this one's next xid: nothing waits.
 */
Datum
ingest_older_snapshots(PG_FUNCTION_ARGS)
{
	FullTransactionId fxid = PG_GETARG_FULLTRANSACTIONID(0);
	VirtualTransactionId *vxids;
	int			n;
	int			i;

	if (!FullTransactionIdPrecedes(fxid, ReadNextFullTransactionId()))
		PG_RETURN_BOOL(false);
	vxids = GetCurrentVirtualXIDs(XidFromFullTransactionId(fxid), true, false,
								  PROC_IS_AUTOVACUUM | PROC_IN_VACUUM, &n);
	for (i = 0; i < n; i++)
		if (VirtualTransactionIdIsValid(vxids[i]))
			PG_RETURN_BOOL(true);
	PG_RETURN_BOOL(false);
}
