/*-------------------------------------------------------------------------
 *
 * ingest.c
 *	  Module entry point: settings, hooks, shared memory and the launcher.
 *
 * Settings are reloadable and defined in every backend that loads us.  The
 * launcher, its shared-memory registry and the DROP DATABASE hook exist only
 * when the library is in shared_preload_libraries.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "tcop/utility.h"
#include "utils/guc.h"

#include "ingest.h"
#include "loader.h"

PG_MODULE_MAGIC;

bool		ingest_enabled = true;
int			ingest_maintenance_interval = 60;
char	   *ingest_maintenance_role = NULL;
int			ingest_lock_timeout = 1000;
int			ingest_max_drops_per_run = 7;
int			ingest_log_retention = 7 * 24 * 3600;
int			ingest_rejects_retention = 30 * 24 * 3600;
int			ingest_max_event_bytes = 1024 * 1024;
bool		ingest_copy_hook = true;
int			ingest_close_delay = 3600;
int			ingest_index_lock_timeout = 10 * 60 * 1000;
int			ingest_rollup_fold_interval = 5;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void ingest_shmem_request(void);
static void ingest_shmem_startup(void);
static void define_settings(void);

void		_PG_init(void);

void
_PG_init(void)
{
	define_settings();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ingest_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ingest_shmem_startup;

	/*
	 * A library loaded before ingest that hooks utility statements is
	 * called by ingest's hook, after it: COPYs that ingest loads never reach
	 * it (pg_stat_statements would not count them).
	 */
	if (ProcessUtility_hook != NULL)
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("ingest is loaded after another library that hooks utility statements"),
				 errdetail("COPY into managed tables, which ingest loads itself, does not reach that library; pg_stat_statements would not count it."),
				 errhint("List ingest first in \"shared_preload_libraries\".")));
	IngestInstallUtilityHook();
	IngestInstallDropHook();
	IngestInstallCallerHook();
	IngestInstallExecutorHooks();
	/*
	 * pg_upgrade's new server (binary-upgrade mode) must get exactly the
	 * old cluster's objects: no worker may make or retire a partition.
	 */
	if (!IsBinaryUpgrade)
		IngestRegisterLauncher();
}

static void
define_settings(void)
{
	DefineCustomBoolVariable("ingest.enabled",
							 "Enables the partition maintenance background worker.",
							 NULL,
							 &ingest_enabled,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("ingest.maintenance_interval",
							"Sets the time between partition maintenance runs.",
							NULL,
							&ingest_maintenance_interval,
							60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("ingest.maintenance_role",
							   "Sets the role the background worker connects as.",
							   "Empty means the bootstrap superuser.",
							   &ingest_maintenance_role,
							   "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("ingest.lock_timeout",
							"Sets the lock timeout of every maintenance statement.",
							"A statement that cannot get its lock in time gives up and is retried later.",
							&ingest_lock_timeout,
							1000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ingest.max_drops_per_run",
							"Sets the maximum number of partitions retired per table in one run.",
							NULL,
							&ingest_max_drops_per_run,
							7, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ingest.log_retention",
							"Sets how long rows of ingest.maintenance_log are kept.",
							NULL,
							&ingest_log_retention,
							7 * 24 * 3600, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ingest.rejects_retention",
							"Sets how long rows of ingest.rejects are kept.",
							NULL,
							&ingest_rejects_retention,
							30 * 24 * 3600, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ingest.max_event_bytes",
							"Sets the size above which the loader sets an input row aside.",
							NULL,
							&ingest_max_event_bytes,
							1024 * 1024, 1024, 512 * 1024 * 1024,
							PGC_USERSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("ingest.copy_hook",
							 "Sends COPY FROM STDIN into managed tables through the loader.",
							 "Needs shared_preload_libraries.",
							 &ingest_copy_hook,
							 true,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("ingest.close_delay",
							"Sets how long after its day ends a partition is closed.",
							"Closing builds the closed-phase indexes, summarizes BRIN ranges, analyzes and freezes.",
							&ingest_close_delay,
							3600, 0, 7 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ingest.index_lock_timeout",
							"Sets the lock timeout of concurrent index builds.",
							"A concurrent build blocks no insert while it waits for older transactions.",
							&ingest_index_lock_timeout,
							10 * 60 * 1000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ingest.rollup_fold_interval",
							"Sets the time between folds of rollup deltas by the worker.",
							NULL,
							&ingest_rollup_fold_interval,
							5, 1, 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("ingest.track_loads",
							 "Collects load statistics (ingest.load_stats).",
							 NULL,
							 &ingest_track_loads,
							 true,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("ingest");
}

static void
ingest_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	IngestRegistryShmemRequest();
	IngestLoadStatsShmemRequest();
}

static void
ingest_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	IngestRegistryShmemInit();
	IngestLoadStatsShmemInit();
}
