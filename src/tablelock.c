/*-------------------------------------------------------------------------
 *
 * tablelock.c
 *	  The per-table locks of maintenance runs and rollup folds.
 *
 * A maintenance run holds its table's lock for the run (a session lock:
 * a run is many transactions), so that the worker and a manual run never
 * maintain one table at once; a fold holds its table's fold lock to the
 * end of its transaction.  Neither is an advisory lock, which any session
 * could take with pg_advisory_lock() and hold to stop another role's
 * maintenance or folds, and whose session locks pg_advisory_unlock_all()
 * (run, say, by an index expression the worker evaluates) would release:
 * they are object locks on the table under a class of ingest's own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"

#include "ingest.h"

/*
 * The lock of (extension class, relid, INGEST_LOCK_SPACE + kind): a sub-id
 * PostgreSQL never locks an extension object with (it uses 0).
 */
#define INGEST_LOCK_SPACE 0x4900

static void
table_lock_tag(LOCKTAG *tag, Oid relid, IngestTableLock kind)
{
	SET_LOCKTAG_OBJECT(*tag, MyDatabaseId, ExtensionRelationId, relid,
					   INGEST_LOCK_SPACE + (uint16) kind);
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

/* Does this process hold a table's lock of this kind? */
bool
IngestTableLockHeld(Oid relid, IngestTableLock kind)
{
	LOCKTAG		tag;

	table_lock_tag(&tag, relid, kind);
#if PG_VERSION_NUM >= 170000
	return LockHeldByMe(&tag, ExclusiveLock, false);
#else
	return LockHeldByMe(&tag, ExclusiveLock);
#endif
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
