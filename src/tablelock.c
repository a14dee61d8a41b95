/*-------------------------------------------------------------------------
 *
 * tablelock.c
 *	  The per-table locks of maintenance runs and rollup folds.
 *
 * A maintenance run holds its table's lock for the run (a session lock:
 * a run is many transactions), so that the worker and a manual run never
 * maintain one table at once; a fold holds its table's fold lock to the
 * end of its transaction.  Both are advisory locks in a space of their own:
 * SQL's advisory lock functions name field4 1 or 2, so no session can take
 * these and hold them to stop another role's maintenance or folds.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"

#include "ingest.h"

/* field4 of our advisory lock tags: out of reach of pg_advisory_lock(). */
#define INGEST_LOCK_SPACE 0x494E

static void
table_lock_tag(LOCKTAG *tag, Oid relid, IngestTableLock kind)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, relid, (uint32) kind, INGEST_LOCK_SPACE);
}

/*
 * Take a table's lock of this kind, for the session or the transaction;
 * without wait, false when another holds it.
 */
bool
IngestTableLockAcquire(Oid relid, IngestTableLock kind, bool session, bool wait)
{
	LOCKTAG		tag;

	table_lock_tag(&tag, relid, kind);
	return LockAcquire(&tag, ExclusiveLock, session, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

void
IngestTableLockRelease(Oid relid, IngestTableLock kind, bool session)
{
	LOCKTAG		tag;

	table_lock_tag(&tag, relid, kind);
	(void) LockRelease(&tag, ExclusiveLock, session);
}

PG_FUNCTION_INFO_V1(ingest_lock_fold);

/*
 * ingest_internal.lock_fold(tbl oid, wait boolean): the table's fold lock,
 * to the end of the transaction; without wait, false when it is held.
 */
Datum
ingest_lock_fold(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(IngestTableLockAcquire(PG_GETARG_OID(0), INGEST_LOCK_FOLD, false,
										  PG_GETARG_BOOL(1)));
}
