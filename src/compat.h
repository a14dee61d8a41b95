/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The server API of the newest supported major (PostgreSQL 18) on the
 *	  older ones (15 to 17).
 *
 * The C sources call the current API; each shim below gives an older
 * major the same call, with the PostgreSQL version that changed it.
 * Include after postgres.h and the server header the shim is about.
 *
 *-------------------------------------------------------------------------
 */
#ifndef INGEST_COMPAT_H
#define INGEST_COMPAT_H

#include "access/attmap.h"
#include "access/genam.h"
#include "catalog/pg_database.h"
#include "executor/executor.h"
#include "utils/acl.h"

#if PG_VERSION_NUM < 160000

/*
 * 16 added missing_ok (15 errors on a missing column, as missing_ok =
 * false does).
 */
#define build_attrmap_by_name_if_req(indesc, outdesc, missing_ok) \
	build_attrmap_by_name_if_req((indesc), (outdesc))

/*
 * 16 added onlySummarizing, which matters only when update is true: the
 * loader inserts only, and passes false.
 */
#define ExecInsertIndexTuples(rri, slot, estate, update, noDupErr, \
							  specConflict, arbiterIndexes, onlySummarizing) \
	ExecInsertIndexTuples((rri), (slot), (estate), (update), (noDupErr), \
						  (specConflict), (arbiterIndexes))

/*
 * 16 replaced the per-catalog ownership checks (pg_database_ownercheck,
 * ...) with object_ownercheck; ingest checks databases only.
 */
static inline bool
object_ownercheck(Oid classid, Oid objectid, Oid roleid)
{
	if (classid != DatabaseRelationId)
		elog(ERROR, "object_ownercheck: unsupported catalog %u", classid);
	return pg_database_ownercheck(objectid, roleid);
}

#endif							/* PG_VERSION_NUM < 160000 */

#if PG_VERSION_NUM < 180000

/*
 * 18 added tupleid, the tuple to leave out of the check (an update's old
 * version); a probe before inserting has none and passes NULL.
 */
#define ExecCheckIndexConstraints(rri, slot, estate, conflictTid, tupleid, \
								  arbiterIndexes) \
	ExecCheckIndexConstraints((rri), (slot), (estate), (conflictTid), \
							  (arbiterIndexes))

/*
 * 18 added instrument, where a scan counts its work for EXPLAIN; ingest's
 * probes pass NULL.
 */
#define index_beginscan(heap, index, snapshot, instrument, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), (norderbys))

#endif							/* PG_VERSION_NUM < 180000 */

/* PostgreSQL 18 dropped PortalRun's run_once argument. */
#if PG_VERSION_NUM < 180000
#define IngestPortalRun(portal, count, toplevel, dest, altdest, qc) \
	PortalRun((portal), (count), (toplevel), true, (dest), (altdest), (qc))
#else
#define IngestPortalRun(portal, count, toplevel, dest, altdest, qc) \
	PortalRun((portal), (count), (toplevel), (dest), (altdest), (qc))
#endif

#endif							/* INGEST_COMPAT_H */
