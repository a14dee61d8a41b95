/*-------------------------------------------------------------------------
 *
 * utility_hook.c
 *	  ProcessUtility hook: stop a database's worker before a statement that
 *	  needs the database to itself; send COPY FROM STDIN into a managed
 *	  table through the loader; keep the side state of managed tables whose
 *	  partitions change by hand.
 *
 * A worker stays connected to its database, which would make DROP
 * DATABASE, CREATE DATABASE ... TEMPLATE it, ALTER DATABASE ... RENAME and
 * ALTER DATABASE ... SET TABLESPACE fail with "database is being accessed
 * by other users".  So the backend running one first takes the lock on the
 * database that the statement is about to take, which makes any new
 * connection to it (a worker the launcher restarts included) wait in its
 * start-up, before it counts as a session of the database; then it asks
 * the worker to exit and waits for it, as long as the statement itself
 * would wait for other sessions.  When the transaction ends the launcher
 * is woken: it starts the worker again (the database keeps its OID through
 * a rename or a move), and one for a database just copied from a template
 * that has the extension.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/acl.h"

#include "compat.h"
#include "ingest.h"
#include "loader.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;
static bool wake_launcher_at_end = false;
static bool wake_callback_registered = false;

/* At the end of a transaction that stopped a worker: the launcher rescans. */
static void
wake_launcher_callback(XactEvent event, void *arg)
{
	if (!wake_launcher_at_end)
		return;
	/* a prepared RENAME keeps its lock: the new worker waits for it */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		wake_launcher_at_end = false;
		IngestWakeLauncher(true);
	}
}

/*
 * The database a statement needs to itself, and the lock PostgreSQL takes
 * on it for that statement; NULL for other statements.
 */
static const char *
database_needed_alone(Node *stmt, LOCKMODE *mode)
{
	ListCell   *lc;

	*mode = AccessExclusiveLock;
	if (IsA(stmt, DropdbStmt))
		return ((DropdbStmt *) stmt)->dbname;
	if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		return ((RenameStmt *) stmt)->subname;
	if (IsA(stmt, AlterDatabaseStmt))
	{
		/* SET TABLESPACE moves the database's files */
		foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
			if (strcmp(lfirst_node(DefElem, lc)->defname, "tablespace") == 0)
				return ((AlterDatabaseStmt *) stmt)->dbname;
		return NULL;
	}
	if (IsA(stmt, CreatedbStmt))
	{
		/* a copy of a template: ShareLock lets two copies run at once */
		*mode = ShareLock;
		foreach(lc, ((CreatedbStmt *) stmt)->options)
		{
			DefElem    *d = lfirst_node(DefElem, lc);

			if (strcmp(d->defname, "template") == 0 && d->arg != NULL)
				return defGetString(d);
		}
		return NULL;
	}
	return NULL;
}

static void
stop_database_worker(const char *dbname, LOCKMODE mode)
{
	Oid			dboid = get_database_oid(dbname, true);
	pid_t		pid;
	int			i;

	/*
	 * Only the database's owner may make us stop its worker (the statements
	 * need ownership, or superuser, anyway).
	 */
	if (!OidIsValid(dboid) || !IngestRegistryLoaded() ||
		!object_ownercheck(DatabaseRelationId, dboid, GetUserId()))
		return;

	/*
	 * The statement's own lock, taken now: a worker started for this
	 * database from here on waits for it in its connection start-up, not
	 * yet a session of the database, instead of slipping in between the
	 * stop below and the statement's check for other sessions.
	 */
	LockSharedObject(DatabaseRelationId, dboid, 0, mode);
	if (!wake_callback_registered)
	{
		RegisterXactCallback(wake_launcher_callback, NULL);
		wake_callback_registered = true;
	}
	wake_launcher_at_end = true;

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
process_utility(PlannedStmt *pstmt, const char *queryString,
				bool readOnlyTree, ProcessUtilityContext context,
				ParamListInfo params, QueryEnvironment *queryEnv,
				DestReceiver *dest, QueryCompletion *qc)
{
	void	   *partition_work;
	void	   *outer;
	const char *alone;
	LOCKMODE	mode;
	Oid			copy_rel = InvalidOid;

	alone = database_needed_alone(pstmt->utilityStmt, &mode);
	if (alone != NULL)
		stop_database_worker(alone, mode);
	if (IsA(pstmt->utilityStmt, CopyStmt) &&
		IngestCopyHook((CopyStmt *) pstmt->utilityStmt, queryString, qc))
		return;
	if (IsA(pstmt->utilityStmt, CopyStmt))
		IngestSideCopyCheck((CopyStmt *) pstmt->utilityStmt);
	/* a client's own: not one in a function or a DO block */
	if (IsA(pstmt->utilityStmt, TruncateStmt) && context == PROCESS_UTILITY_TOPLEVEL)
		IngestSideTruncateCheck((TruncateStmt *) pstmt->utilityStmt);
	partition_work = IngestPartitionDDLBefore(pstmt->utilityStmt);
	/* a plain COPY FROM inserts its rows, whatever command it runs in */
	if (IsA(pstmt->utilityStmt, CopyStmt) && ((CopyStmt *) pstmt->utilityStmt)->is_from &&
		((CopyStmt *) pstmt->utilityStmt)->relation != NULL)
		copy_rel = RangeVarGetRelid(((CopyStmt *) pstmt->utilityStmt)->relation, NoLock, true);
	if (OidIsValid(copy_rel))
		IngestCopyFromEnter(copy_rel);

	outer = IngestStatementEnter(pstmt->utilityStmt);
	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		IngestStatementLeave(outer);
		if (OidIsValid(copy_rel))
			IngestCopyFromLeave(copy_rel);
	}
	PG_END_TRY();

	if (partition_work)
		IngestPartitionDDLAfter(partition_work);
	if (IsA(pstmt->utilityStmt, AlterTableStmt))
		IngestTriggersAltered((AlterTableStmt *) pstmt->utilityStmt);
}

/* Utility statements being run, nested (a subcommand is its statement's). */
int			ingest_utility_depth = 0;

static void
ingest_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					  bool readOnlyTree, ProcessUtilityContext context,
					  ParamListInfo params, QueryEnvironment *queryEnv,
					  DestReceiver *dest, QueryCompletion *qc)
{
	bool		counted = (context != PROCESS_UTILITY_SUBCOMMAND);

	if (counted)
		ingest_utility_depth++;
	PG_TRY();
	{
		process_utility(pstmt, queryString, readOnlyTree, context, params,
						queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		if (counted)
			ingest_utility_depth--;
	}
	PG_END_TRY();
}

void
IngestInstallUtilityHook(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = ingest_ProcessUtility;
}
