/*-------------------------------------------------------------------------
 *
 * cmdstack.c
 *	  Which executor command this backend is running, innermost first.
 *
 * A row that an UPDATE (or MERGE) moves to another partition is deleted and
 * inserted again, and the insert fires the BEFORE INSERT row triggers of
 * its new partition like any INSERT: nothing in the trigger's arguments
 * tells the two apart.  The dedup trigger must not claim a moved row's key
 * (the row holds it already), so the executor hooks keep a stack of the
 * commands running, and the trigger asks which of them writes its relation:
 * the innermost command whose result relations (targets, or partitions it
 * routes rows to) include it.  Commands that only read (a lazily evaluated
 * function, an open cursor) are passed over.  Within a command, the answer
 * is the operation of the ModifyTable node that writes the relation, not
 * the command's own: a data-modifying WITH query may INSERT under a top
 * UPDATE, or UPDATE under a SELECT.  A command in which nodes of different
 * operations write one managed table is refused (0A000): its rows could
 * not be told apart.  A plain COPY FROM (one the loader does not take) runs no
 * executor command: the utility hook pushes a frame for it, and a row with
 * no command writing its relation at all is treated as inserted.
 *
 * A command that fails never reaches ExecutorEnd: the frames of an aborted
 * (sub)transaction are dropped by the transaction callbacks, and a frame
 * goes when its command's memory does (a cursor whose fetch failed in a
 * subtransaction is dropped, not ended).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/partition.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/memutils.h"

#include "loader.h"

typedef struct CmdFrame
{
	QueryDesc  *query;			/* an executor command, or NULL: */
	Oid			copy_rel;		/* a COPY FROM into this relation */
	List	   *copy_parts;		/* the COPY's partitions found to be its, */
	List	   *other_rels;		/* and relations found not to be */
	int			nest_level;		/* transaction nesting level it started in */
} CmdFrame;

static CmdFrame *frames = NULL;
static int	nframes = 0;
static int	maxframes = 0;

static bool installed = false;
static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;

static void
push_frame(QueryDesc *query, Oid copy_rel)
{
	if (nframes == maxframes)
	{
		maxframes = Max(16, maxframes * 2);
		frames = frames == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(CmdFrame) * maxframes)
			: repalloc(frames, sizeof(CmdFrame) * maxframes);
	}
	frames[nframes].query = query;
	frames[nframes].copy_rel = copy_rel;
	frames[nframes].copy_parts = NIL;
	frames[nframes].other_rels = NIL;
	frames[nframes].nest_level = GetCurrentTransactionNestLevel();
	nframes++;
}

static void
pop_frame(QueryDesc *query, Oid copy_rel)
{
	int			i;

	/* usually the top one; a cursor may close under a running command */
	for (i = nframes - 1; i >= 0; i--)
	{
		if (frames[i].query == query && frames[i].copy_rel == copy_rel)
		{
			list_free(frames[i].copy_parts);
			list_free(frames[i].other_rels);
			memmove(&frames[i], &frames[i + 1], sizeof(CmdFrame) * (nframes - i - 1));
			nframes--;
			return;
		}
	}
}

/* A command's memory is going: so is its frame, if ExecutorEnd left it. */
static void
command_memory_gone(void *arg)
{
	pop_frame((QueryDesc *) arg, InvalidOid);
}

static void
cmdstack_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	/* (a client's INSERT into side state is checked first: datarestore.c) */
	if (!(eflags & EXEC_FLAG_EXPLAIN_ONLY))
		IngestSideInsertCheck(queryDesc);
	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
	if (!(eflags & EXEC_FLAG_EXPLAIN_ONLY))
	{
		MemoryContextCallback *cb = MemoryContextAlloc(queryDesc->estate->es_query_cxt,
													   sizeof(MemoryContextCallback));

		cb->func = command_memory_gone;
		cb->arg = queryDesc;
		MemoryContextRegisterResetCallback(queryDesc->estate->es_query_cxt, cb);
		push_frame(queryDesc, InvalidOid);
	}
}

static void
cmdstack_ExecutorEnd(QueryDesc *queryDesc)
{
	pop_frame(queryDesc, InvalidOid);
	if (prev_ExecutorEnd)
		prev_ExecutorEnd(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

static void
cmdstack_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PREPARE)
		nframes = 0;
}

static void
cmdstack_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	int			level;

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	level = GetCurrentTransactionNestLevel();
	while (nframes > 0 && frames[nframes - 1].nest_level >= level)
		nframes--;
}

/* Does ModifyTable node mt write relid: a target, or a partition it routes to? */
static bool
node_writes(EState *estate, ModifyTableState *mt, Oid relid)
{
	ListCell   *lc;
	int			i;

	/* the table named (its statement triggers fire there), and its targets */
	if (RelationGetRelid(mt->rootResultRelInfo->ri_RelationDesc) == relid)
		return true;
	for (i = 0; i < mt->mt_nrels; i++)
		if (RelationGetRelid(mt->resultRelInfo[i].ri_RelationDesc) == relid)
			return true;
	foreach(lc, estate->es_tuple_routing_result_relations)
	{
		ResultRelInfo *rri = (ResultRelInfo *) lfirst(lc);

		if (rri->ri_RootResultRelInfo == mt->rootResultRelInfo &&
			RelationGetRelid(rri->ri_RelationDesc) == relid)
			return true;
	}
	return false;
}

/* One node of a command, for refuse_mixed_writers: its operation into *op. */
static void
one_kind(ModifyTableState *mt, Oid root, CmdType *op)
{
	if (IngestRootOf(RelationGetRelid(mt->rootResultRelInfo->ri_RelationDesc)) != root)
		return;
	if (*op != CMD_UNKNOWN && *op != mt->operation)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a statement may not write managed table \"%s\" by more than one kind of command",
						get_rel_name(root)),
				 errdetail("ingest tells a row that UPDATE or MERGE moves from an inserted one by the command writing its partition."),
				 errhint("Run the data-modifying WITH queries as statements of their own.")));
	*op = mt->operation;
}

/*
 * A command whose nodes write one managed table by different operations
 * (a data-modifying WITH) is refused, whichever partitions each writes: a
 * key that one frees or changes at the end of the statement would make
 * another's insert of it look like a duplicate, and a moved row could not
 * be told from an inserted one.
 */
static void
refuse_mixed_writers(ModifyTableState *top, List *aux, Oid relid)
{
	Oid			root = IngestRootOf(relid);
	CmdType		op = CMD_UNKNOWN;
	ListCell   *lc;

	if (top != NULL)
		one_kind(top, root, &op);
	foreach(lc, aux)
		one_kind(lfirst_node(ModifyTableState, lc), root, &op);
}

/*
 * The nodes of a command that write relid: its top node and those of its
 * data-modifying WITH queries (es_auxmodifytables), in *writers; returns
 * their operation, or CMD_UNKNOWN for none.
 */
static CmdType
command_nodes_writing(QueryDesc *qd, Oid relid, List **writers)
{
	EState	   *estate = qd->estate;
	List	   *aux = estate->es_auxmodifytables;
	ModifyTableState *top = NULL;
	ModifyTableState *found = NULL;
	ListCell   *lc;

	/* asked per row: no list is built */
	if (qd->planstate != NULL && IsA(qd->planstate, ModifyTableState))
	{
		top = (ModifyTableState *) qd->planstate;
		if (node_writes(estate, top, relid))
		{
			found = top;
			if (writers)
				*writers = lappend(*writers, top);
		}
	}
	foreach(lc, aux)
	{
		ModifyTableState *mt = lfirst_node(ModifyTableState, lc);

		if (!node_writes(estate, mt, relid))
			continue;
		found = mt;
		if (writers)
			*writers = lappend(*writers, mt);
	}
	/* (a plain statement has one node: the catalog is read for WITH only) */
	if (found != NULL && list_length(aux) + (top != NULL) > 1)
		refuse_mixed_writers(top, aux, relid);
	return found ? found->operation : CMD_UNKNOWN;
}

/*
 * Is a COPY FROM writing relid (its relation or one of its partitions)?
 * Asked for every row: the answers are kept for the COPY (a few days'
 * partitions), in the transaction's memory, which outlives the frame.
 */
static bool
copy_writes(CmdFrame *f, Oid relid)
{
	MemoryContext old;
	bool		writes;

	if (f->copy_rel == relid || list_member_oid(f->copy_parts, relid))
		return true;
	if (list_member_oid(f->other_rels, relid))
		return false;
	writes = get_rel_relispartition(relid) &&
		list_member_oid(get_partition_ancestors(relid), f->copy_rel);
	old = MemoryContextSwitchTo(TopTransactionContext);
	if (writes)
		f->copy_parts = lappend_oid(f->copy_parts, relid);
	else
		f->other_rels = lappend_oid(f->other_rels, relid);
	MemoryContextSwitchTo(old);
	return writes;
}

/*
 * The operation of the innermost command running that writes relation
 * relid, or CMD_UNKNOWN when none does; with writers, the ModifyTableState
 * nodes of that command that write it (none for a COPY) are appended
 * there, each to be checked.
 */
CmdType
IngestCommandWriting(Oid relid, List **writers)
{
	int			i;

	for (i = nframes - 1; i >= 0; i--)
	{
		QueryDesc  *qd = frames[i].query;
		CmdType		op;

		if (qd == NULL)
		{
			if (copy_writes(&frames[i], relid))
				return CMD_INSERT;
			continue;
		}
		if (qd->estate != NULL &&
			(op = command_nodes_writing(qd, relid, writers)) != CMD_UNKNOWN)
			return op;
	}
	return CMD_UNKNOWN;
}

/* A plain COPY FROM into relid runs: its rows are inserted (utility_hook.c). */
void
IngestCopyFromEnter(Oid relid)
{
	push_frame(NULL, relid);
}

void
IngestCopyFromLeave(Oid relid)
{
	pop_frame(NULL, relid);
}

void
IngestInstallExecutorHooks(void)
{
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = cmdstack_ExecutorStart;
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = cmdstack_ExecutorEnd;
	RegisterXactCallback(cmdstack_xact_callback, NULL);
	RegisterSubXactCallback(cmdstack_subxact_callback, NULL);
	installed = true;
}

/* Are the hooks in place in this backend (the library was preloaded)? */
bool
IngestExecutorHooksInstalled(void)
{
	return installed;
}
