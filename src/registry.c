/*-------------------------------------------------------------------------
 *
 * registry.c
 *	  Shared-memory registry of the launcher and the per-database workers.
 *
 * A database worker claims a slot for its database when it starts and gives
 * it back on exit, so at most one worker serves a database and DROP DATABASE
 * can find the worker it must stop.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"

#include "ingest.h"

typedef struct IngestSlot
{
	Oid			dboid;
	pid_t		pid;
} IngestSlot;

typedef struct IngestRegistry
{
	LWLock	   *lock;
	Latch	   *launcher_latch;
	bool		rescan;			/* the launcher is to scan now */
	int			nslots;
	IngestSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} IngestRegistry;

static IngestRegistry *registry = NULL;

static Size
registry_size(void)
{
	return add_size(offsetof(IngestRegistry, slots),
					mul_size(max_worker_processes, sizeof(IngestSlot)));
}

void
IngestRegistryShmemRequest(void)
{
	RequestAddinShmemSpace(registry_size());
	RequestNamedLWLockTranche("ingest", 1);
}

void
IngestRegistryShmemInit(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	registry = ShmemInitStruct("ingest registry", registry_size(), &found);
	if (!found)
	{
		memset(registry, 0, registry_size());
		registry->lock = &(GetNamedLWLockTranche("ingest"))->lock;
		registry->nslots = max_worker_processes;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Whether this backend has the registry (the library was preloaded). */
bool
IngestRegistryLoaded(void)
{
	return registry != NULL;
}

static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	registry->launcher_latch = NULL;
	LWLockRelease(registry->lock);
}

void
IngestRegistrySetLauncher(void)
{
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	registry->launcher_latch = MyLatch;
	LWLockRelease(registry->lock);
	on_shmem_exit(launcher_detach, (Datum) 0);
}

/*
 * Wake the launcher: with rescan, it lists the databases now, instead of at
 * its next interval (a database's worker was stopped for a statement that
 * needed the database to itself); without, it only looks again at the
 * workers it waits for.
 */
void
IngestWakeLauncher(bool rescan)
{
	if (registry == NULL)
		return;
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	if (rescan)
		registry->rescan = true;
	if (registry->launcher_latch)
		SetLatch(registry->launcher_latch);
	LWLockRelease(registry->lock);
}

/* For the launcher, after its latch is reset: was a scan asked for? */
bool
IngestRegistryTakeRescan(void)
{
	bool		rescan;

	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	rescan = registry->rescan;
	registry->rescan = false;
	LWLockRelease(registry->lock);
	return rescan;
}

static void
slot_release(int code, Datum arg)
{
	int			i = DatumGetInt32(arg);

	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	if (registry->slots[i].pid == MyProcPid)
	{
		registry->slots[i].dboid = InvalidOid;
		registry->slots[i].pid = 0;
	}
	LWLockRelease(registry->lock);
	IngestWakeLauncher(false);
}

/*
 * Claim the slot of a database for this process.  False when another worker
 * already serves it (or no slot is free, which cannot happen while slots
 * outnumber background workers).
 */
bool
IngestRegistryClaimDatabase(Oid dboid)
{
	int			i;
	int			free_slot = -1;

	if (registry == NULL)
		return false;

	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	for (i = 0; i < registry->nslots; i++)
	{
		if (registry->slots[i].pid != 0 && registry->slots[i].dboid == dboid)
		{
			LWLockRelease(registry->lock);
			return false;
		}
		if (registry->slots[i].pid == 0 && free_slot < 0)
			free_slot = i;
	}
	if (free_slot >= 0)
	{
		registry->slots[free_slot].dboid = dboid;
		registry->slots[free_slot].pid = MyProcPid;
	}
	LWLockRelease(registry->lock);

	if (free_slot < 0)
		return false;
	on_shmem_exit(slot_release, Int32GetDatum(free_slot));
	return true;
}

/* PID of the worker serving a database, or 0. */
pid_t
IngestRegistryWorkerPid(Oid dboid)
{
	pid_t		pid = 0;
	int			i;

	if (registry == NULL)
		return 0;

	LWLockAcquire(registry->lock, LW_SHARED);
	for (i = 0; i < registry->nslots; i++)
	{
		if (registry->slots[i].pid != 0 && registry->slots[i].dboid == dboid)
		{
			pid = registry->slots[i].pid;
			break;
		}
	}
	LWLockRelease(registry->lock);
	return pid;
}
