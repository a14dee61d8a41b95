/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: starts one maintenance worker per database.
 *
 * The launcher is connected to no database.  Every maintenance interval it
 * lists the databases that accept connections and starts a worker for each
 * one that has none; a worker finding no ingest extension in its database
 * exits at once.  So a database that runs CREATE EXTENSION is served within
 * one interval, with no configuration.  A statement that stopped a
 * database's worker asks for a scan at once (registry.c).  During recovery
 * the launcher starts nothing and says so once; after promotion it starts
 * work.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "ingest.h"

/* A worker this launcher started and has not yet seen exit. */
typedef struct LaunchedWorker
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
} LaunchedWorker;

static List *launched = NIL;	/* in TopMemoryContext */

/* What ingest.maintenance_role names, for the workers to connect as. */
typedef enum RoleState
{
	ROLE_OK,
	ROLE_MISSING,
	ROLE_UNFIT					/* not a superuser, or cannot log in */
} RoleState;

static bool said_no_slots = false;
static RoleState said_bad_role = ROLE_OK;

static List *connectable_databases(Oid *roleid, RoleState *role_state);
static void launch_missing_workers(void);

void
IngestRegisterLauncher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 10;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "ingest");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "ingest_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "ingest launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "ingest launcher");
	RegisterBackgroundWorker(&worker);
}

void
ingest_launcher_main(Datum main_arg)
{
	TimestampTz last_scan = 0;
	TimestampTz next_scan = 0;
	bool		said_recovery = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* Shared catalogs only: pg_database and pg_authid. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	IngestRegistrySetLauncher();
	pgstat_report_appname("ingest launcher");

	for (;;)
	{
		TimestampTz now;
		long		timeout;

		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* a shorter interval counts from the last scan */
			next_scan = Min(next_scan,
							TimestampTzPlusMilliseconds(last_scan,
														ingest_maintenance_interval * 1000L));
		}

		/* read after any reset of the latch: a request is never missed */
		if (IngestRegistryTakeRescan())
			next_scan = 0;

		now = GetCurrentTimestamp();
		if (now >= next_scan)
		{
			if (RecoveryInProgress())
			{
				if (!said_recovery)
					ereport(LOG,
							(errmsg("ingest launcher is idle while the server is in recovery"),
							 errdetail("Partition maintenance starts when the server is promoted.")));
				said_recovery = true;
			}
			else if (ingest_enabled)
				launch_missing_workers();
			last_scan = now;
			next_scan = TimestampTzPlusMilliseconds(now,
													ingest_maintenance_interval * 1000L);
		}

		timeout = TimestampDifferenceMilliseconds(now, next_scan);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(timeout, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Databases a worker could serve, and the role workers connect as.  Returns
 * the list in the caller's memory context.
 */
static List *
connectable_databases(Oid *roleid, RoleState *role_state)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *dbs = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;

		if (!db->datallowconn || db->datistemplate ||
			database_is_invalid_form(db))
			continue;
		old = MemoryContextSwitchTo(cxt);
		dbs = lappend_oid(dbs, db->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);

	*roleid = InvalidOid;
	*role_state = ROLE_OK;
	if (ingest_maintenance_role[0] != '\0')
	{
		HeapTuple	role = SearchSysCache1(AUTHNAME,
										   CStringGetDatum(ingest_maintenance_role));

		*role_state = ROLE_MISSING;
		if (HeapTupleIsValid(role))
		{
			Form_pg_authid a = (Form_pg_authid) GETSTRUCT(role);

			*roleid = a->oid;
			/* a worker could neither connect nor do its work */
			*role_state = a->rolsuper && a->rolcanlogin ? ROLE_OK : ROLE_UNFIT;
			ReleaseSysCache(role);
		}
	}

	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return dbs;
}

/*
 * Wait a little for a worker this launcher started to exit, and forget it:
 * false if none does.  Workers of databases without the extension exit at
 * once, so when slots run out a scan waits for one of them instead of
 * leaving the databases after it without a worker: the ones before it in
 * pg_database would take the slots again at every scan.
 */
#define SLOT_WAIT_MS 10000

static bool
a_worker_exits(void)
{
	TimestampTz give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SLOT_WAIT_MS);
	bool		exited = false;
	bool		woken = false;

	while (launched != NIL && !exited)
	{
		ListCell   *lc;

		foreach(lc, launched)
		{
			LaunchedWorker *w = lfirst(lc);
			pid_t		pid;

			if (GetBackgroundWorkerPid(w->handle, &pid) == BGWH_STOPPED)
			{
				launched = foreach_delete_current(launched, lc);
				pfree(w->handle);
				pfree(w);
				exited = true;
				break;
			}
		}
		if (exited || GetCurrentTimestamp() >= give_up)
			break;
		if (WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					  100, PG_WAIT_EXTENSION) & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			woken = true;
		}
		CHECK_FOR_INTERRUPTS();
	}
	/* a wake meant for the main loop (a rescan asked for) is passed on */
	if (woken)
		SetLatch(MyLatch);
	return exited;
}

static void
launch_missing_workers(void)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	List	   *dbs;
	List	   *still_running = NIL;
	ListCell   *lc;
	Oid			roleid;
	RoleState	role_state;

	pgstat_report_activity(STATE_RUNNING, "looking for databases");
	dbs = connectable_databases(&roleid, &role_state);

	/* Forget workers that have exited. */
	foreach(lc, launched)
	{
		LaunchedWorker *w = lfirst(lc);
		pid_t		pid;

		if (GetBackgroundWorkerPid(w->handle, &pid) == BGWH_STOPPED)
		{
			pfree(w->handle);
			pfree(w);
		}
		else
			still_running = lappend(still_running, w);
	}
	list_free(launched);
	launched = still_running;

	if (role_state != ROLE_OK)
	{
		if (said_bad_role != role_state && role_state == ROLE_MISSING)
			ereport(LOG,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("role \"%s\" named by \"ingest.maintenance_role\" does not exist",
							ingest_maintenance_role),
					 errdetail("No maintenance worker is started until it does.")));
		else if (said_bad_role != role_state)
			ereport(LOG,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("role \"%s\" named by \"ingest.maintenance_role\" is not a superuser that can log in",
							ingest_maintenance_role),
					 errdetail("No maintenance worker is started until it is.")));
		said_bad_role = role_state;
		dbs = NIL;
	}
	else
		said_bad_role = ROLE_OK;

	foreach(lc, dbs)
	{
		Oid			dboid = lfirst_oid(lc);
		ListCell   *lc2;
		bool		running = IngestRegistryWorkerPid(dboid) != 0;
		BackgroundWorkerHandle *handle;
		LaunchedWorker *w;

		CHECK_FOR_INTERRUPTS();

		/* A worker we started may not have claimed its slot yet. */
		foreach(lc2, launched)
		{
			if (((LaunchedWorker *) lfirst(lc2))->dboid == dboid)
				running = true;
		}
		if (running)
			continue;

		handle = IngestStartDatabaseWorker(dboid, roleid);
		while (handle == NULL && a_worker_exits())
			handle = IngestStartDatabaseWorker(dboid, roleid);
		if (handle == NULL)
		{
			if (!said_no_slots)
				ereport(LOG,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("could not start an ingest worker: all background worker slots are in use"),
						 errdetail("Databases without a worker (that may not have the extension) wait for a slot; the launcher tries again at every scan."),
						 errhint("Raise \"max_worker_processes\".")));
			said_no_slots = true;
			break;
		}
		said_no_slots = false;
		w = palloc(sizeof(LaunchedWorker));
		w->dboid = dboid;
		w->handle = handle;
		launched = lappend(launched, w);
	}
	list_free(dbs);
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(old);
}
