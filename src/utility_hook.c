/*-------------------------------------------------------------------------
 *
 * utility_hook.c
 *	  ProcessUtility hook: stop a database's worker before DROP DATABASE;
 *	  send COPY FROM STDIN into a managed table through the loader; keep
 *	  the side state of managed tables whose partitions change by hand.
 *
 * A worker stays connected to its database, which would make DROP DATABASE
 * fail with "database is being accessed by other users".  So the dropping
 * backend asks the worker to exit first and waits for it, as long as
 * DROP DATABASE itself would wait for other sessions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"

#include "compat.h"
#include "ingest.h"
#include "loader.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

static void
stop_database_worker(const char *dbname)
{
	Oid			dboid = get_database_oid(dbname, true);
	pid_t		pid;
	int			i;

	/* Only the database's owner may make us stop its worker. */
	if (!OidIsValid(dboid) || !object_ownercheck(DatabaseRelationId, dboid, GetUserId()))
		return;

	pid = IngestRegistryWorkerPid(dboid);
	if (pid == 0)
		return;
	if (kill(pid, SIGTERM) != 0)
		return;
	for (i = 0; i < 50 && IngestRegistryWorkerPid(dboid) == pid; i++)
	{
		CHECK_FOR_INTERRUPTS();
		pg_usleep(100 * 1000L);
	}
}

static void
ingest_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					  bool readOnlyTree, ProcessUtilityContext context,
					  ParamListInfo params, QueryEnvironment *queryEnv,
					  DestReceiver *dest, QueryCompletion *qc)
{
	void	   *partition_work;

	if (IsA(pstmt->utilityStmt, DropdbStmt))
		stop_database_worker(((DropdbStmt *) pstmt->utilityStmt)->dbname);
	if (IsA(pstmt->utilityStmt, CopyStmt) &&
		IngestCopyHook((CopyStmt *) pstmt->utilityStmt, queryString, qc))
		return;
	partition_work = IngestPartitionDDLBefore(pstmt->utilityStmt);

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (partition_work)
		IngestPartitionDDLAfter(partition_work);
}

void
IngestInstallUtilityHook(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = ingest_ProcessUtility;
}
