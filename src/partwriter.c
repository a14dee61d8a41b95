/*-------------------------------------------------------------------------
 *
 * partwriter.c
 *	  Multi-insert of loaded rows into the day partitions.
 *
 * Rows are routed by their timestamp to a partition from the list of
 * attached partitions taken at the start of the load, under the table's
 * lock (a row whose day has none is the loader's to set aside), buffered
 * per partition and written with table_multi_insert, then indexed, as COPY
 * does.  Partitions are opened with ROW EXCLUSIVE, the lock INSERT takes,
 * and checked again under it for triggers and foreign keys.  Row triggers
 * are not fired: the loader does the work of ingest's own trigger itself.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/attmap.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "utils/partcache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "loader.h"

typedef struct PartTarget
{
	Oid			relid;
	TimestampTz lower;
	TimestampTz upper;
	Relation	rel;			/* NULL until the first row */
	ResultRelInfo *rri;
	AttrMap    *map;			/* root to partition layout; NULL if equal */
	BulkInsertState bistate;
	TupleTableSlot *slots[INGEST_BATCH_ROWS];
	int			nslots;			/* created */
	int			nbuffered;
} PartTarget;

struct IngestPartWriter
{
	Relation	root;
	EState	   *estate;
	CommandId	cid;
	int			nparts;
	PartTarget *parts;			/* by lower bound */
	MemoryContext cxt;
};

/*
 * Attached partitions with finite bounds, by lower bound.  Read from the
 * partition descriptor PostgreSQL routes INSERT and COPY with, under the
 * table's lock (which the caller holds): what committed while the lock was
 * waited for is in it, and partitions being detached concurrently are left
 * out where the executor leaves them out (not for a transaction snapshot
 * that predates the detach).  A range bound's partition is the one
 * whose upper bound it is; its lower bound is the datum before.
 */
IngestPartWriter *
IngestPartWriterBegin(Relation root, EState *estate)
{
	IngestPartWriter *w = palloc0(sizeof(IngestPartWriter));
	PartitionKey key = RelationGetPartitionKey(root);
	PartitionDesc pd = RelationGetPartitionDesc(root, !IsolationUsesXactSnapshot());
	PartitionBoundInfo b = pd->boundinfo;
	int			i;

	w->root = root;
	w->estate = estate;
	w->cid = GetCurrentCommandId(true);
	w->cxt = CurrentMemoryContext;
	w->parts = palloc0(sizeof(PartTarget) * Max(pd->nparts, 1));
	if (key->strategy != PARTITION_STRATEGY_RANGE || key->partnatts != 1 ||
		key->parttypid[0] != TIMESTAMPTZOID)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not partitioned by range on a timestamptz column",
						RelationGetRelationName(root))));
	for (i = 1; b != NULL && i < b->ndatums; i++)
	{
		PartTarget *p;

		if (b->indexes[i] < 0 ||
			b->kind[i - 1][0] != PARTITION_RANGE_DATUM_VALUE ||
			b->kind[i][0] != PARTITION_RANGE_DATUM_VALUE)
			continue;
		p = &w->parts[w->nparts++];
		p->relid = pd->oids[b->indexes[i]];
		p->lower = DatumGetTimestampTz(b->datums[i - 1][0]);
		p->upper = DatumGetTimestampTz(b->datums[i][0]);
	}
	return w;
}

/* The partition holding a timestamp, or -1. */
int
IngestPartWriterRoute(IngestPartWriter *w, Datum timestamp)
{
	TimestampTz ts = DatumGetTimestampTz(timestamp);
	int			lo = 0;
	int			hi = w->nparts - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		PartTarget *p = &w->parts[mid];

		if (ts < p->lower)
			hi = mid - 1;
		else if (ts >= p->upper)
			lo = mid + 1;
		else
			return mid;
	}
	return -1;
}

static void
open_target(IngestPartWriter *w, PartTarget *p)
{
	MemoryContext old = MemoryContextSwitchTo(w->cxt);

	p->rel = table_open(p->relid, RowExclusiveLock);
	/* multi-insert writes heap tables: not a foreign or partitioned one */
	if (p->rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot load into partition \"%s\" of table \"%s\"",
						RelationGetRelationName(p->rel), RelationGetRelationName(w->root)),
				 errdetail("The loader writes plain tables; this partition is a %s.",
						   p->rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE
						   ? "partitioned table" : "foreign table"),
				 errhint("Load with INSERT, or make the day's partition a plain table.")));
	/* given one since the caller looked (managed.c), under this lock */
	if (IngestRelationNeedsExecutor(p->rel))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot load into partition \"%s\" of table \"%s\"",
						RelationGetRelationName(p->rel), RelationGetRelationName(w->root)),
				 errdetail("The partition has foreign keys, deferrable constraints or triggers of the user's, which the loader cannot check or fire; they were added while the load waited for it."),
				 errhint("Run the load again as COPY: for such tables ingest leaves COPY to PostgreSQL, and its triggers deduplicate row by row.")));
	p->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(p->rri, p->rel, 0, NULL, 0);
	ExecOpenIndices(p->rri, false);
	p->map = build_attrmap_by_name_if_req(RelationGetDescr(w->root),
										  RelationGetDescr(p->rel), false);
	p->bistate = GetBulkInsertState();
	MemoryContextSwitchTo(old);
}

/*
 * Write slots to a relation as COPY does: one multi-insert, then each row's
 * index entries.  The rollup feed writes its deltas through this too.
 */
void
IngestMultiInsert(ResultRelInfo *rri, EState *estate, TupleTableSlot **slots,
				  int nslots, CommandId cid, struct BulkInsertStateData *bistate)
{
	int			i;

	table_multi_insert(rri->ri_RelationDesc, slots, nslots, cid, 0, bistate);
	for (i = 0; i < nslots; i++)
	{
		if (rri->ri_NumIndices > 0)
		{
			list_free(ExecInsertIndexTuples(rri, slots[i], estate, false, false,
										   NULL, NIL, false));
			ResetPerTupleExprContext(estate);
		}
		ExecClearTuple(slots[i]);
	}
}

static void
flush_target(IngestPartWriter *w, PartTarget *p)
{
	if (p->nbuffered == 0)
		return;
	IngestMultiInsert(p->rri, w->estate, p->slots, p->nbuffered, w->cid, p->bistate);
	p->nbuffered = 0;
}

/* Buffer a converted row for its partition (row->part). */
void
IngestPartWriterAdd(IngestPartWriter *w, LoadRow *row)
{
	PartTarget *p = &w->parts[row->part];
	TupleTableSlot *slot;
	int			natts;
	int			i;

	if (p->rel == NULL)
		open_target(w, p);
	if (p->nbuffered == INGEST_BATCH_ROWS)
		flush_target(w, p);
	if (p->nbuffered == p->nslots)
	{
		MemoryContext old = MemoryContextSwitchTo(w->cxt);

		p->slots[p->nslots++] = table_slot_create(p->rel, NULL);
		MemoryContextSwitchTo(old);
	}

	slot = p->slots[p->nbuffered++];
	ExecClearTuple(slot);
	natts = slot->tts_tupleDescriptor->natts;
	for (i = 0; i < natts; i++)
	{
		int			src = p->map ? p->map->attnums[i] - 1 : i;

		if (src < 0)
		{
			slot->tts_values[i] = (Datum) 0;
			slot->tts_isnull[i] = true;
		}
		else
		{
			slot->tts_values[i] = row->values[src];
			slot->tts_isnull[i] = row->nulls[src];
		}
	}
	ExecStoreVirtualTuple(slot);
	/* tableoid, which generation expressions and CHECKs may read, as COPY */
	slot->tts_tableOid = RelationGetRelid(p->rel);

	/* Stored generated columns are computed as COPY computes them. */
	if (p->rel->rd_att->constr && p->rel->rd_att->constr->has_generated_stored)
		ExecComputeStoredGenerated(p->rri, w->estate, slot, CMD_INSERT);

	/*
	 * The partition's own NOT NULL and CHECK constraints, as COPY checks
	 * them (the table's NOT NULL columns were checked row by row already).
	 */
	if (p->rel->rd_att->constr &&
		(p->rel->rd_att->constr->has_not_null || p->rel->rd_att->constr->num_check > 0))
		ExecConstraints(p->rri, slot, w->estate);
}

/*
 * Write every buffered row.  The loader calls this at the end of each batch:
 * the slots point into the batch's memory.
 */
void
IngestPartWriterFlush(IngestPartWriter *w)
{
	int			i;

	for (i = 0; i < w->nparts; i++)
		if (w->parts[i].rel)
			flush_target(w, &w->parts[i]);
}

void
IngestPartWriterEnd(IngestPartWriter *w)
{
	int			i;
	int			j;

	for (i = 0; i < w->nparts; i++)
	{
		PartTarget *p = &w->parts[i];

		if (p->rel == NULL)
			continue;
		flush_target(w, p);
		ExecCloseIndices(p->rri);
		FreeBulkInsertState(p->bistate);
		table_finish_bulk_insert(p->rel, 0);
		for (j = 0; j < p->nslots; j++)
			ExecDropSingleTupleTableSlot(p->slots[j]);
		table_close(p->rel, NoLock);
	}
}
