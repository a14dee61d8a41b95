/*-------------------------------------------------------------------------
 *
 * toplevel.c
 *	  Run a utility statement as a top-level command from a worker.
 *
 * ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY refuses to run inside a
 * function or transaction block: it commits its first transaction and starts
 * a second one itself.  We run it the way the simple query protocol does,
 * through ProcessUtility with PROCESS_UTILITY_TOPLEVEL, but without a
 * portal, which keeps clear of portal-lifetime checks in the server.  What a
 * portal would provide and the command relies on is a PortalContext that
 * survives its internal commit; ours is the statement's own context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "nodes/plannodes.h"
#include "pgstat.h"
#include "tcop/dest.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "ingest.h"
#include "loader.h"

/*
 * Execute one utility statement at top level.  The caller has started a
 * transaction; on return a transaction (maybe a new one) is open and
 * CurrentMemoryContext is its TopTransactionContext.
 */
void
IngestExecuteTopLevel(const char *sql)
{
	MemoryContext stmtcxt;
	MemoryContext save_portal_context = PortalContext;

	/* The trees must outlive the transaction the statement may commit. */
	stmtcxt = AllocSetContextCreate(TopMemoryContext,
									"ingest top-level statement",
									ALLOCSET_SMALL_SIZES);
	PG_TRY();
	{
		char	   *query;
		List	   *parsetrees;
		List	   *querytrees;
		List	   *plantrees;
		PlannedStmt *pstmt;

		MemoryContextSwitchTo(stmtcxt);
		query = pstrdup(sql);
		parsetrees = pg_parse_query(query);
		if (list_length(parsetrees) != 1)
			elog(ERROR, "expected exactly one statement: %s", query);
		querytrees = pg_analyze_and_rewrite_fixedparams(linitial_node(RawStmt, parsetrees),
														query, NULL, 0, NULL);
		plantrees = pg_plan_queries(querytrees, query, CURSOR_OPT_PARALLEL_OK, NULL);
		pstmt = linitial_node(PlannedStmt, plantrees);
		if (pstmt->commandType != CMD_UTILITY)
			elog(ERROR, "not a utility statement: %s", query);

		pgstat_report_activity(STATE_RUNNING, query);
		PortalContext = stmtcxt;
		PushActiveSnapshot(GetTransactionSnapshot());
		/* the worker's own partition DDL: tableddl.c lets it through */
		ingest_internal_ddl = true;
		ProcessUtility(pstmt, query, false, PROCESS_UTILITY_TOPLEVEL,
					   NULL, NULL, None_Receiver, NULL);
		/* a concurrent detach has already popped our snapshot */
		if (ActiveSnapshotSet())
			PopActiveSnapshot();
	}
	PG_FINALLY();
	{
		ingest_internal_ddl = false;
		PortalContext = save_portal_context;
		if (IsTransactionState())
			MemoryContextSwitchTo(TopTransactionContext);
		else
			MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextDelete(stmtcxt);
	}
	PG_END_TRY();
}
