/*-------------------------------------------------------------------------
 *
 * ingest.h
 *	  Shared declarations of the ingest extension.
 *
 * Modules:
 *	  ingest.c		 _PG_init: GUCs, hooks, shared memory, the launcher
 *	  registry.c	 shared-memory registry of the launcher and database workers
 *	  launcher.c	 starts one worker per database
 *	  worker.c		 per-database worker loop; workers for manual runs
 *	  maintenance.c  carries out the partition maintenance plan of a database
 *	  fold.c		 the worker's fold of the hourly rollups
 *	  loadstats.c	 load statistics: counted per transaction, published at
 *					 commit, stored by the worker
 *	  usage.c		 ingest.usage(): usage from the rollups
 *	  toplevel.c	 runs a utility statement as a top-level command
 *	  partbounds.c	 the range bounds of a partition, as values
 *	  utility_hook.c stops a database's worker before DROP DATABASE, a copy
 *					 from it, a rename or a move; routes
 *					 COPY and partition DDL of managed tables
 *	  the loader and the side state of managed tables: see loader.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef INGEST_H
#define INGEST_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "postmaster/bgworker.h"

/* GUCs (ingest.c) */
extern bool ingest_enabled;
extern int	ingest_maintenance_interval;	/* seconds */
extern char *ingest_maintenance_role;
extern int	ingest_lock_timeout;	/* milliseconds */
extern int	ingest_max_drops_per_run;
extern int	ingest_log_retention;	/* seconds */
extern int	ingest_rejects_retention;	/* seconds */
extern int	ingest_max_event_bytes;
extern bool ingest_copy_hook;
extern int	ingest_close_delay;	/* seconds */
extern int	ingest_index_lock_timeout;	/* milliseconds */
extern int	ingest_rollup_fold_interval;	/* seconds */

/* registry.c */
extern void IngestRegistryShmemRequest(void);
extern void IngestRegistryShmemInit(void);
extern bool IngestRegistryLoaded(void);
extern void IngestRegistrySetLauncher(void);
extern void IngestWakeLauncher(bool rescan);
extern bool IngestRegistryTakeRescan(void);
extern bool IngestRegistryClaimDatabase(Oid dboid);
extern pid_t IngestRegistryWorkerPid(Oid dboid);

/* tablelock.c */
typedef enum IngestTableLock
{
	INGEST_LOCK_MAINTENANCE = 1,	/* a maintenance run, for the session */
	INGEST_LOCK_FOLD = 2		/* a fold of the rollups, for the transaction */
} IngestTableLock;

extern bool IngestTableLockAcquire(Oid relid, IngestTableLock kind, bool session, bool wait);
extern void IngestTableLockRelease(Oid relid, IngestTableLock kind, bool session);
extern bool IngestTableLockHeld(Oid relid, IngestTableLock kind);

/* loadstats.c */
extern void IngestLoadStatsShmemRequest(void);
extern void IngestLoadStatsShmemInit(void);
extern void IngestFlushLoadStats(void);

/* launcher.c */
extern void IngestRegisterLauncher(void);
extern PGDLLEXPORT void ingest_launcher_main(Datum main_arg);

/* worker.c */
extern PGDLLEXPORT void ingest_worker_main(Datum main_arg);
extern BackgroundWorkerHandle *IngestStartDatabaseWorker(Oid dboid, Oid roleid);
extern void IngestRunManual(Oid relid, int64 run_id, Oid roleid);
extern ErrorData *IngestWorkerStep(void (*step) (void *), void *arg);

/* maintenance.c */
extern void IngestMaintainDatabase(Oid relid, int64 run_id, bool background);
extern void IngestTrimByAge(void);

/* fold.c */
extern void IngestFoldRollups(void);

/* managed.c */
extern char *IngestExtensionVersionLatest(void);
extern bool IngestIsLibraryVersion(const char *v);

/* toplevel.c */
extern void IngestExecuteTopLevel(const char *sql);

/* utility_hook.c */
extern void IngestInstallUtilityHook(void);

/* partbounds.c */
extern bool IngestRangeBound(List *datums, TimestampTz *value);

#endif							/* INGEST_H */
