/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The per-database maintenance worker, and workers for manual runs.
 *
 * A database worker runs partition maintenance every
 * ingest.maintenance_interval and trims the maintenance log.  It exits
 * quietly when the extension is not (or no longer) installed, when the
 * worker is disabled, or when its role setting changes; the launcher starts
 * a new one at its next scan if there is work.
 *
 * ingest.run_maintenance() starts a one-shot worker in the caller's database
 * as the calling role and waits for it: DETACH PARTITION CONCURRENTLY must
 * run as a top-level statement, which a function cannot do in its own
 * backend, and this way a manual run is exactly a worker's run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "ingest.h"

/* What a worker is asked to do, passed in bgw_extra. */
typedef struct IngestWorkerArgs
{
	Oid			roleid;
	bool		manual;
	Oid			relid;			/* manual: one table, or InvalidOid for all */
	int64		run_id;			/* manual: the caller's run id */
} IngestWorkerArgs;

StaticAssertDecl(sizeof(IngestWorkerArgs) <= BGW_EXTRALEN,
				 "IngestWorkerArgs must fit in bgw_extra");

static void prepare_worker(BackgroundWorker *worker, Oid dboid,
						   const IngestWorkerArgs *args);
static bool extension_present(void);
static void apply_lock_timeout(void);
static void database_loop(Oid roleid);

static void
prepare_worker(BackgroundWorker *worker, Oid dboid, const IngestWorkerArgs *args)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "ingest");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "ingest_worker_main");
	snprintf(worker->bgw_name, BGW_MAXLEN, "ingest worker for database %u", dboid);
	snprintf(worker->bgw_type, BGW_MAXLEN, "ingest worker");
	worker->bgw_main_arg = ObjectIdGetDatum(dboid);
	worker->bgw_notify_pid = MyProcPid;
	memcpy(worker->bgw_extra, args, sizeof(*args));
}

/* Start the long-lived worker of a database; NULL when no slot is free. */
BackgroundWorkerHandle *
IngestStartDatabaseWorker(Oid dboid, Oid roleid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	IngestWorkerArgs args = {0};

	args.roleid = roleid;
	args.manual = false;
	prepare_worker(&worker, dboid, &args);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		return NULL;
	return handle;
}

/*
 * Run maintenance in a one-shot worker of this database, as the current
 * role, and wait for it to finish.
 */
void
IngestRunManual(Oid relid, int64 run_id, Oid roleid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	IngestWorkerArgs args = {0};
	BgwHandleStatus status;

	args.roleid = roleid;
	args.manual = true;
	args.relid = relid;
	args.run_id = run_id;
	prepare_worker(&worker, MyDatabaseId, &args);
	snprintf(worker.bgw_name, BGW_MAXLEN, "ingest maintenance run " INT64_FORMAT,
			 run_id);

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a maintenance worker"),
				 errdetail("All background worker slots are in use."),
				 errhint("Raise \"max_worker_processes\".")));

	PG_TRY();
	{
		status = WaitForBackgroundWorkerShutdown(handle);
	}
	PG_CATCH();
	{
		/* Cancelled: do not leave the run going on behind the caller. */
		TerminateBackgroundWorker(handle);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (status == BGWH_POSTMASTER_DIED)
		ereport(FATAL,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg("postmaster exited during a maintenance run")));
}

/*
 * The version of the extension in this database, in "cxt"; NULL when it is
 * not installed.
 */
static char *
extension_version(MemoryContext cxt)
{
	char	   *v = NULL;
	char	   *found;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	found = IngestExtensionVersionLatest();
	if (found != NULL)
		v = MemoryContextStrdup(cxt, found);
	CommitTransactionCommand();
	return v;
}

static bool
extension_present(void)
{
	return extension_version(CurrentMemoryContext) != NULL;
}

/*
 * Is roleid (what the launcher connected this worker as) the role
 * ingest.maintenance_role names now?  Compared by OID: the setting may have
 * changed between the launcher's reading and this process's start.
 */
static bool
connected_as_configured(Oid roleid)
{
	Oid			want = InvalidOid;

	if (ingest_maintenance_role[0] != '\0')
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		want = get_role_oid(ingest_maintenance_role, true);
		CommitTransactionCommand();
	}
	return want == roleid;
}

/* Every maintenance statement waits at most ingest.lock_timeout for a lock. */
static void
apply_lock_timeout(void)
{
	char		buf[32];

	snprintf(buf, sizeof(buf), "%d", ingest_lock_timeout);
	SetConfigOption("lock_timeout", buf, PGC_SUSET, PGC_S_SESSION);
}

/*
 * Where Citus is loaded: the worker reads the catalog rows of the shards it
 * folds, which Citus hides from sessions that are not its own, and the
 * partitions it makes for a distributed table get ingest's triggers on
 * their shards, which Citus creates only with citus.enable_unsafe_triggers
 * (they act on their shard and its colocated side tables alone).
 */
static void
citus_settings(void)
{
	if (GetConfigOption("citus.override_table_visibility", true, false) != NULL)
		SetConfigOption("citus.override_table_visibility", "off", PGC_SUSET, PGC_S_SESSION);
	if (GetConfigOption("citus.enable_unsafe_triggers", true, false) != NULL)
		SetConfigOption("citus.enable_unsafe_triggers", "on", PGC_SUSET, PGC_S_SESSION);
}

void
ingest_worker_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	IngestWorkerArgs args;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/*
	 * Claim the database before joining it: a statement that needs the
	 * database to itself (utility_hook.c) then finds and stops this worker
	 * even while it still waits to connect.  Another worker may already
	 * serve the database.
	 */
	if (!args.manual && !IngestRegistryClaimDatabase(dboid))
		proc_exit(0);

	BackgroundWorkerInitializeConnectionByOid(dboid, args.roleid, 0);
	pgstat_report_appname(args.manual ? "ingest maintenance run" : "ingest worker");
	apply_lock_timeout();
	/* Nothing a user can create is looked up by name in our statements. */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);

	/*
	 * Each step reads the policy as its row lock finds it (still_due): a
	 * database or role default of REPEATABLE READ would make a step that
	 * waited for a configure() fail with 40001 instead.
	 */
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_SESSION);
	citus_settings();

	if (args.manual)
	{
		if (extension_present())
			IngestMaintainDatabase(args.relid, args.run_id, false);
		proc_exit(0);
	}

	database_loop(args.roleid);
}

/*
 * Run one step of a worker's pass (a step runs its own transactions).  Its
 * error does not end the worker: the transaction is aborted, the user and
 * security context and the lock timeout the step may have changed are put
 * back, and the error
 * is returned, copied into the caller's memory context, for the caller to
 * log or record; NULL when the step succeeded.
 */
ErrorData *
IngestWorkerStep(void (*step) (void *), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ErrorData  *volatile edata = NULL;
	Oid			save_user;
	int			save_sec;

	GetUserIdAndSecContext(&save_user, &save_sec);
	PG_TRY();
	{
		step(arg);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		SetUserIdAndSecContext(save_user, save_sec);
		/* a step's own lock_timeout (an index build's) set in its transaction */
		apply_lock_timeout();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return edata;
}

static void
database_loop(Oid roleid)
{
	TimestampTz last_run = 0;
	TimestampTz next_run = 0;
	TimestampTz last_fold = 0;
	TimestampTz next_fold = 0;
	bool		said_version = false;
	char	   *version;

	/* a new role needs a new connection: the launcher makes one */
	if (!connected_as_configured(roleid))
		proc_exit(0);

	for (;;)
	{
		TimestampTz now;
		long		timeout;

		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			apply_lock_timeout();
			if (!connected_as_configured(roleid))
				proc_exit(0);
			/* shorter intervals count from the last run and fold */
			next_run = Min(next_run, TimestampTzPlusMilliseconds(last_run,
																 ingest_maintenance_interval * 1000L));
			next_fold = Min(next_fold, TimestampTzPlusMilliseconds(last_fold,
																   ingest_rollup_fold_interval * 1000L));
		}

		if (!ingest_enabled)
			proc_exit(0);
		version = extension_version(TopMemoryContext);
		if (version == NULL)
			proc_exit(0);

		/*
		 * The SQL objects of another version (an update not run yet, after
		 * the library was installed, or an older library installed) are not
		 * ours to call: wait for the versions to agree, saying so once,
		 * rather than fail at every pass.
		 */
		if (!IngestIsLibraryVersion(version))
		{
			if (!said_version)
			{
				/* (the database's name is read in a transaction) */
				StartTransactionCommand();
				ereport(LOG,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("ingest worker for database \"%s\" waits for the extension at its library's version",
								get_database_name(MyDatabaseId)),
						 errdetail("The extension is at version %s, its library at version %s.",
								   version, INGEST_VERSION),
						 errhint("Run ALTER EXTENSION ingest UPDATE, or install the library of the extension's version.")));
				CommitTransactionCommand();
			}
			said_version = true;
			pfree(version);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 ingest_maintenance_interval * 1000L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			continue;
		}
		said_version = false;
		pfree(version);

		now = GetCurrentTimestamp();
		if (now >= next_run)
		{
			IngestMaintainDatabase(InvalidOid, 0, true);
			IngestTrimByAge();
			now = last_run = GetCurrentTimestamp();
			next_run = TimestampTzPlusMilliseconds(now,
												   ingest_maintenance_interval * 1000L);
		}
		if (now >= next_fold)
		{
			IngestFlushLoadStats();
			IngestFoldRollups();
			now = last_fold = GetCurrentTimestamp();
			next_fold = TimestampTzPlusMilliseconds(now,
													ingest_rollup_fold_interval * 1000L);
		}

		timeout = TimestampDifferenceMilliseconds(now, Min(next_run, next_fold));
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(timeout, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
