/*-------------------------------------------------------------------------
 *
 * datarestore.c
 *	  Data-only restores into managed tables that have their triggers: the
 *	  relations whose triggers this session disabled, and COPY or INSERT
 *	  into side tables refused otherwise; and a client's TRUNCATE of a
 *	  side table, which is how pg_restore -j shows itself, refused.
 *
 * A full restore copies the side tables and the events before its
 * post-data section makes ingest's triggers: nothing is deduplicated again
 * or fed twice.  A data-only restore (pg_restore --data-only, or a
 * plain-format dump of the data) into tables that have them would restore
 * the ledger and then skip every event under it as a duplicate, or feed
 * the rollups the events of hours restored already: wrong, and silent.
 * pg_restore --disable-triggers runs ALTER TABLE ... DISABLE TRIGGER ALL
 * on each table before it copies into it, in the session that copies, and
 * that is what this file remembers, transactionally (a disable rolled back
 * is forgotten, an enable rolled back is undone), until ENABLE TRIGGER:
 *
 *	  IngestSideCopyCheck,	 a COPY, or an INSERT a client sent (a dump made
 *	  IngestSideInsertCheck	 with --inserts), into a side table of a managed
 *							 table whose triggers are in place, or of none
 *							 yet while a table has them (pg_restore -j), is
 *							 refused (55000) unless the session disabled
 *							 the side table's triggers (it has none: the
 *							 statement changes nothing else), in a
 *							 transaction block;
 *	  IngestSideTruncateCheck a TRUNCATE a client sent of a side table is
 *							 refused (55000), whatever the session did: see
 *							 there;
 *	  IngestTriggersOffHere	 the table or partitions of a managed table whose
 *							 triggers the session disabled (and whose dedup
 *							 trigger is still off): a COPY through the
 *							 table (--load-via-partition-root) then runs as
 *							 plain COPY (copyhook.c), and the table's statement
 *							 trigger leaves those partitions' rows uncounted,
 *							 as their own would (changes.c).
 *
 * Another session's DISABLE TRIGGER changes none of this: there, as
 * documented, what the disabled triggers would have followed goes
 * unfollowed, and the loader and COPY through the hook keep the rule.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_trigger.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/execdesc.h"
#include "miscadmin.h"
#include "parser/parsetree.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "loader.h"

/*
 * A relation whose triggers this session disabled, transactionally: made
 * and enabled are the subtransactions that disabled and enabled them again
 * (InvalidSubTransactionId: committed, or not enabled), as ON COMMIT
 * actions are kept (tablecmds.c).
 */
typedef struct TriggersOff
{
	Oid			relid;
	SubTransactionId made;
	SubTransactionId enabled;
} TriggersOff;

static List *triggers_off = NIL;	/* of TriggersOff, in TopMemoryContext */

static TriggersOff *
find_off(Oid relid)
{
	ListCell   *lc;

	foreach(lc, triggers_off)
	{
		TriggersOff *o = lfirst(lc);

		if (o->relid == relid)
			return o;
	}
	return NULL;
}

/* Whether this session disabled relid's triggers (and did not enable them). */
static bool
disabled_here(Oid relid)
{
	TriggersOff *o = find_off(relid);

	return o != NULL && o->enabled == InvalidSubTransactionId;
}

/*
 * At the end of (sub)transaction "sub": committed into "parent"
 * (InvalidSubTransactionId at the top), or aborted.
 */
static void
end_of(SubTransactionId sub, SubTransactionId parent, bool commit)
{
	ListCell   *lc;

	foreach(lc, triggers_off)
	{
		TriggersOff *o = lfirst(lc);
		bool		gone;

		if (commit)
		{
			/* enabled again, and committed: forgotten */
			gone = (o->enabled == sub && parent == InvalidSubTransactionId);
			if (o->made == sub)
				o->made = parent;
			if (o->enabled == sub)
				o->enabled = parent;
		}
		else
		{
			if (o->enabled == sub)
				o->enabled = InvalidSubTransactionId;
			gone = (o->made == sub);
		}
		if (gone)
		{
			triggers_off = foreach_delete_current(triggers_off, lc);
			pfree(o);
		}
	}
}

static void
xact_end(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PREPARE)
		end_of(TopSubTransactionId, InvalidSubTransactionId, true);
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		end_of(TopSubTransactionId, InvalidSubTransactionId, false);
}

static void
subxact_end(SubXactEvent event, SubTransactionId mySubid,
			SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_COMMIT_SUB)
		end_of(mySubid, parentSubid, true);
	else if (event == SUBXACT_EVENT_ABORT_SUB)
		end_of(mySubid, parentSubid, false);
}

/*
 * Note ALTER TABLE ... DISABLE or ENABLE TRIGGER ALL (or USER), once it has
 * run, whatever the relation: a side table may be disabled before the
 * configuration naming it is restored (pg_restore -j).
 */
void
IngestTriggersAltered(AlterTableStmt *stmt)
{
	static bool callbacks = false;
	ListCell   *lc;
	Oid			relid = InvalidOid;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);
		TriggersOff *o;

		if (cmd->subtype != AT_DisableTrigAll && cmd->subtype != AT_DisableTrigUser &&
			cmd->subtype != AT_EnableTrigAll && cmd->subtype != AT_EnableTrigUser)
			continue;
		if (!OidIsValid(relid))
			relid = RangeVarGetRelid(stmt->relation, NoLock, true);
		if (!OidIsValid(relid))
			return;
		if (!callbacks)
		{
			RegisterXactCallback(xact_end, NULL);
			RegisterSubXactCallback(subxact_end, NULL);
			callbacks = true;
		}
		o = find_off(relid);
		if (cmd->subtype == AT_EnableTrigAll || cmd->subtype == AT_EnableTrigUser)
		{
			if (o != NULL && o->enabled == InvalidSubTransactionId)
				o->enabled = GetCurrentSubTransactionId();
		}
		else if (o != NULL)
			o->enabled = InvalidSubTransactionId;
		else
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			o = palloc(sizeof(TriggersOff));
			o->relid = relid;
			o->made = GetCurrentSubTransactionId();
			o->enabled = InvalidSubTransactionId;
			triggers_off = lappend(triggers_off, o);
			MemoryContextSwitchTo(old);
		}
	}
}

/*
 * Is ingest's dedup trigger on relid disabled now?  (Another session may
 * have enabled it again since this one disabled it.)
 */
static bool
dedup_trigger_off(Oid relid)
{
	Relation	trig = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;
	bool		off = false;

	ScanKeyInit(&key[0], Anum_pg_trigger_tgrelid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	ScanKeyInit(&key[1], Anum_pg_trigger_tgname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum(INGEST_DEDUP_TRIGGER));
	scan = systable_beginscan(trig, TriggerRelidNameIndexId, true, NULL, 2, key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		off = ((Form_pg_trigger) GETSTRUCT(tup))->tgenabled == TRIGGER_DISABLED;
	systable_endscan(scan);
	table_close(trig, AccessShareLock);
	return off;
}

/*
 * Of managed table relid and its partitions, those whose triggers this
 * session disabled, and whose dedup trigger is off still.  NIL, at no
 * cost, in a session that disabled none.
 */
List *
IngestTriggersOffHere(Oid relid)
{
	List	   *off = NIL;
	ListCell   *lc;

	foreach(lc, triggers_off)
	{
		TriggersOff *o = lfirst(lc);
		Oid			r = o->relid;

		if (o->enabled == InvalidSubTransactionId &&
			(r == relid || (get_rel_relispartition(r) && IngestRootOf(r) == relid)) &&
			dedup_trigger_off(r))
			off = lappend_oid(off, r);
	}
	return off;
}

/*
 * Is relid a plain table in schema ingest_side?  Only those can be side
 * state (the extension owns that name): a write into any other table
 * reads nothing of ingest's.
 */
static bool
in_side_schema(Oid relid)
{
	Oid			nsp;

	if (get_rel_relkind(relid) != RELKIND_RELATION)
		return false;
	nsp = get_rel_namespace(relid);
	return nsp == get_namespace_oid("ingest_side", true) && OidIsValid(nsp);
}

/*
 * Refuse a write into side table relid while triggers are in place that
 * would follow the events restored after it: its managed table is ready,
 * or no configuration names it yet while a table has ingest's triggers
 * without one (a data-only restore with several jobs, which copies
 * ingest.table_config when it comes to it, not first).  Taken only in a
 * transaction block of a session that disabled the side table's triggers
 * (pg_restore --disable-triggers --single-transaction): the worker sees
 * none of the restore until it is all in.  (A block is not the whole
 * restore: --transaction-size commits every so many tables, and a
 * function's subtransaction counts as one.  The README says so.)  Whom
 * the statement itself refuses (no INSERT privilege), it refuses first:
 * this error names the managed table.  Citus's own sessions copy the side
 * state of a shard it moves before the shard is adopted.
 */
static void
side_write_check(Oid relid, bool copy)
{
	const char *verb = copy ? "copy" : "insert";
	Oid			tbl;
	IngestTable t;

	if (!in_side_schema(relid) ||
		(pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK &&
		 pg_attribute_aclcheck_all(relid, GetUserId(), ACL_INSERT, ACLMASK_ANY) != ACLCHECK_OK) ||
		!OidIsValid(get_extension_oid("ingest", true)))
		return;
	tbl = IngestSideTableOf(relid);
	if (OidIsValid(tbl) ?
		(!IngestLookupTable(tbl, &t) || !t.ready || t.citus_shard || t.distributed) :
		(IngestCitusSession() || !IngestTriggersAheadOfConfiguration()))
		return;
	if (disabled_here(relid))
	{
		if (IsTransactionBlock())
			return;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s into \"%s\" outside a transaction block: it is side state of a managed table",
						verb, get_rel_name(relid)),
				 errdetail("The worker would see the restore half done, and fold or recompute rollups from events not all restored."),
				 errhint("Restore the data in one transaction: pg_restore --single-transaction, or psql --single-transaction for a plain-format dump.")));
	}
	if (!OidIsValid(tbl))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s into \"%s\": it is side state that no managed table names yet, under ingest's triggers",
						verb, get_rel_name(relid)),
				 errdetail("Once ingest.table_config is restored, the events restored after it would be skipped as duplicates of its keys, or counted twice in its rollups."),
				 errhint("For a data-only restore, use pg_restore --disable-triggers --single-transaction as a superuser.")));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("cannot %s into \"%s\": it is side state of managed table \"%s.%s\", whose triggers are in place",
					verb, get_rel_name(relid), get_namespace_name(get_rel_namespace(tbl)), get_rel_name(tbl)),
			 errdetail("The events restored after it would be skipped as duplicates of its keys, or counted twice in its rollups."),
			 errhint("For a data-only restore, use pg_restore --disable-triggers --single-transaction as a superuser.")));
}

/* A COPY FROM the loader does not take: into a side table? */
void
IngestSideCopyCheck(CopyStmt *stmt)
{
	Oid			relid;

	if (!stmt->is_from || stmt->relation == NULL)
		return;
	relid = RangeVarGetRelid(stmt->relation, NoLock, true);
	if (OidIsValid(relid))
		side_write_check(relid, true);
}

/*
 * An INSERT statement as a client sent it (a dump made with --inserts
 * restores its data so): into a side table?  Ingest's own writes into side
 * tables run in its functions and triggers, never as the client's
 * statement, nor does an INSERT in a client's function.  Only the
 * statement's own targets count (not those of its WITH queries).  Called
 * as each executor command starts: what every other command pays is a
 * test or two.
 */
void
IngestSideInsertCheck(QueryDesc *qd)
{
	PlannedStmt *ps = qd->plannedstmt;
	ModifyTable *mt = (ModifyTable *) ps->planTree;
	ListCell   *lc;

	if (ps->commandType != CMD_INSERT || mt == NULL || !IsA(mt, ModifyTable) ||
		mt->operation != CMD_INSERT || debug_query_string == NULL || qd->sourceText == NULL ||
		(qd->sourceText != debug_query_string && strcmp(qd->sourceText, debug_query_string) != 0))
		return;
	foreach(lc, mt->resultRelations)
		side_write_check(rt_fetch(lfirst_int(lc), ps->rtable)->relid, false);
}

/*
 * A TRUNCATE a client sent (not one in a function, nor Citus's of a
 * shard): of a side table?  Refused (55000), whatever the session
 * disabled: ingest keeps side state in step with the events.  And
 * pg_restore -j, which truncates each table it made before it copies
 * into it, is refused so, at its first side table, whatever order its
 * jobs run in: no dependency in a dump makes a partitioned table's
 * triggers wait for its partitions' data, so another job can make them
 * while events are still being copied, which the dedup trigger would
 * then take for duplicates of the restored keys.  The configuration
 * that names the side table may not be restored yet: the schema is
 * enough.
 */
void
IngestSideTruncateCheck(TruncateStmt *stmt)
{
	ListCell   *lc;

	if (IngestCitusSession() || !OidIsValid(get_extension_oid("ingest", true)))
		return;
	foreach(lc, stmt->relations)
	{
		Oid			relid = RangeVarGetRelid(lfirst_node(RangeVar, lc), NoLock, true);

		/* whom TRUNCATE refuses, it refuses first */
		if (!OidIsValid(relid) || !in_side_schema(relid) ||
			pg_class_aclcheck(relid, GetUserId(), ACL_TRUNCATE) != ACLCHECK_OK)
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot truncate \"%s\": it is side state of a managed table",
						get_rel_name(relid)),
				 errdetail("Its ledger and rollups must hold what the events do."),
				 errhint("pg_restore --jobs truncates each table before it copies into it: restore ingest's tables with a single job.")));
	}
}
