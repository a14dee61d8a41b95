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
 * function, an open cursor) are passed over.  COPY runs no executor command
 * of its own: when no command writes the relation, the row comes from COPY
 * (or an INSERT the hooks did not see) and is treated as inserted.
 *
 * A command that fails never reaches ExecutorEnd: the frames of an aborted
 * (sub)transaction are dropped by the transaction callbacks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/executor.h"
#include "utils/rel.h"
#include "utils/memutils.h"

#include "loader.h"

typedef struct CmdFrame
{
	QueryDesc  *query;
	CmdType		operation;
	int			nest_level;		/* transaction nesting level it started in */
} CmdFrame;

static CmdFrame *frames = NULL;
static int	nframes = 0;
static int	maxframes = 0;

static bool installed = false;
static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;

static void
push_frame(QueryDesc *query)
{
	if (nframes == maxframes)
	{
		maxframes = Max(16, maxframes * 2);
		frames = frames == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(CmdFrame) * maxframes)
			: repalloc(frames, sizeof(CmdFrame) * maxframes);
	}
	frames[nframes].query = query;
	frames[nframes].operation = query->operation;
	frames[nframes].nest_level = GetCurrentTransactionNestLevel();
	nframes++;
}

static void
pop_frame(QueryDesc *query)
{
	int			i;

	/* usually the top one; a cursor may close under a running command */
	for (i = nframes - 1; i >= 0; i--)
	{
		if (frames[i].query == query)
		{
			memmove(&frames[i], &frames[i + 1], sizeof(CmdFrame) * (nframes - i - 1));
			nframes--;
			return;
		}
	}
}

static void
cmdstack_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
	if (!(eflags & EXEC_FLAG_EXPLAIN_ONLY))
		push_frame(queryDesc);
}

static void
cmdstack_ExecutorEnd(QueryDesc *queryDesc)
{
	pop_frame(queryDesc);
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

static bool
writes_relation(EState *estate, Oid relid)
{
	ListCell   *lc;

	foreach(lc, estate->es_opened_result_relations)
		if (RelationGetRelid(((ResultRelInfo *) lfirst(lc))->ri_RelationDesc) == relid)
			return true;
	foreach(lc, estate->es_tuple_routing_result_relations)
		if (RelationGetRelid(((ResultRelInfo *) lfirst(lc))->ri_RelationDesc) == relid)
			return true;
	return false;
}

/*
 * The innermost executor command running that writes relation relid (its
 * QueryDesc in *query), or CMD_UNKNOWN when none does.
 */
CmdType
IngestCommandWriting(Oid relid, QueryDesc **query)
{
	int			i;

	for (i = nframes - 1; i >= 0; i--)
	{
		QueryDesc  *qd = frames[i].query;

		if (qd->estate != NULL && writes_relation(qd->estate, relid))
		{
			if (query)
				*query = qd;
			return frames[i].operation;
		}
	}
	return CMD_UNKNOWN;
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
