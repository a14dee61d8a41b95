/*-------------------------------------------------------------------------
 *
 * toplevel.c
 *	  Run a utility statement as a top-level command from a worker.
 *
 * ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY and CREATE INDEX
 * CONCURRENTLY refuse to run inside a function or transaction block: they
 * commit their first transaction and start others themselves.  We run them
 * as the simple query protocol does, in an unnamed portal: an active portal
 * survives those commits, gives the command its PortalContext, and lets
 * whatever runs after the last commit (a user's ddl_command_end event
 * trigger) take a snapshot from it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "nodes/plannodes.h"
#include "pgstat.h"
#include "tcop/dest.h"
#include "tcop/pquery.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "compat.h"
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
	Portal		portal;
	QueryCompletion qc;
	int			save_depth = ingest_internal_ddl_depth;

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
		portal = CreatePortal("", true, true);
		portal->visible = false;
		PortalDefineQuery(portal, NULL, query,
						  CreateCommandTag(linitial_node(RawStmt, parsetrees)->stmt),
						  plantrees, NULL);
		PortalStart(portal, NULL, 0, InvalidSnapshot);
		/* the worker's own partition DDL: tableddl.c lets it through */
		ingest_internal_ddl_depth = ingest_utility_depth + 1;
		(void) IngestPortalRun(portal, FETCH_ALL, true, None_Receiver, None_Receiver, &qc);
		PortalDrop(portal, false);
	}
	PG_FINALLY();
	{
		ingest_internal_ddl_depth = save_depth;
		if (IsTransactionState())
			MemoryContextSwitchTo(TopTransactionContext);
		else
			MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextDelete(stmtcxt);
	}
	PG_END_TRY();
}
