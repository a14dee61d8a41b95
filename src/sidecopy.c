/*-------------------------------------------------------------------------
 *
 * sidecopy.c
 *	  COPY into a managed table's side tables: refused while its triggers
 *	  would follow the events copied after them.
 *
 * Only a restore copies into side tables.  A full restore does so before
 * the post-data section makes ingest's triggers, and the events restored
 * are then neither deduplicated again nor fed twice.  A data-only restore
 * into tables that have their triggers (pg_restore --data-only, or a
 * plain-format dump of the data) would restore the ledger and then skip
 * every event under it as a duplicate, or feed the rollups the events of
 * hours restored already: wrong, and silent.  Such a COPY is refused
 * unless this session has disabled the side table's triggers, which is
 * what pg_restore --disable-triggers does before each table it copies
 * into (and the events' partitions then take their rows untouched).  Side
 * tables have no triggers: ALTER TABLE ... DISABLE TRIGGER ALL on one
 * changes nothing but what this file remembers, until ENABLE TRIGGER.
 * Only the owner of a side table (the extension's) can run it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "loader.h"

/*
 * Side tables whose triggers this session disabled.  A transaction that
 * fails forgets them all (what it disabled is undone; what it did not is
 * disabled again by a restore before each table).
 */
static List *disabled = NIL;

static void
forget_at_abort(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		list_free(disabled);
		disabled = NIL;
	}
}

/*
 * The managed table a plain table is side state of, or InvalidOid.  Only
 * tables in schema ingest_side are looked up (the extension owns that
 * name): a COPY into any other table reads nothing of ingest's.
 */
static Oid
side_table_owner(Oid relid)
{
	char	   *nsp;

	if (!OidIsValid(relid) || get_rel_relkind(relid) != RELKIND_RELATION)
		return InvalidOid;
	nsp = get_namespace_name(get_rel_namespace(relid));
	if (nsp == NULL || strcmp(nsp, "ingest_side") != 0 ||
		!OidIsValid(get_extension_oid("ingest", true)))
		return InvalidOid;
	return IngestSideTableOf(relid);
}

/*
 * Refuse a COPY FROM into a side table of a managed table whose triggers
 * are in place (see above).  Called for every COPY FROM the loader does
 * not take.
 */
void
IngestSideCopyCheck(CopyStmt *stmt)
{
	Oid			relid;
	Oid			tbl;
	IngestTable t;

	if (!stmt->is_from || stmt->relation == NULL)
		return;
	relid = RangeVarGetRelid(stmt->relation, NoLock, true);
	/* whom COPY refuses, it refuses first: this error names the table */
	if (!OidIsValid(relid) ||
		pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK)
		return;
	tbl = side_table_owner(relid);
	if (!OidIsValid(tbl) || list_member_oid(disabled, relid))
		return;
	/* Citus copies a shard's side state with it when it moves the shard */
	if (!IngestLookupTable(tbl, &t) || !t.ready || t.citus_shard || t.distributed)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("cannot copy into \"%s\": it is side state of managed table \"%s\", whose triggers are in place",
					get_rel_name(relid), IngestQualifiedName(tbl)),
			 errdetail("The events copied after it would be skipped as duplicates of its keys, or counted twice in its rollups."),
			 errhint("Restore data only as a superuser with pg_restore --disable-triggers --single-transaction.")));
}

/*
 * Note ALTER TABLE ... DISABLE or ENABLE TRIGGER ALL (or USER) on a side
 * table, once it has run.
 */
void
IngestSideTriggersAltered(AlterTableStmt *stmt)
{
	ListCell   *lc;
	Oid			relid = InvalidOid;
	bool		looked = false;
	static bool callback_registered = false;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);
		bool		disable;
		MemoryContext old;

		if (cmd->subtype == AT_DisableTrigAll || cmd->subtype == AT_DisableTrigUser)
			disable = true;
		else if (cmd->subtype == AT_EnableTrigAll || cmd->subtype == AT_EnableTrigUser)
			disable = false;
		else
			continue;
		if (!looked)
		{
			relid = RangeVarGetRelid(stmt->relation, NoLock, true);
			if (!OidIsValid(side_table_owner(relid)))
				relid = InvalidOid;
			looked = true;
		}
		if (!OidIsValid(relid))
			return;
		if (!callback_registered)
		{
			RegisterXactCallback(forget_at_abort, NULL);
			callback_registered = true;
		}
		old = MemoryContextSwitchTo(TopMemoryContext);
		disabled = disable ? list_append_unique_oid(disabled, relid)
			: list_delete_oid(disabled, relid);
		MemoryContextSwitchTo(old);
	}
}
