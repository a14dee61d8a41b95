/*-------------------------------------------------------------------------
 *
 * tableddl.c
 *	  DDL by hand on a managed table: partitions attached, detached, created
 *	  or dropped; its owner, its columns and its row triggers.
 *
 * ATTACH PARTITION brings in rows no trigger saw: their keys are claimed
 * (23505, failing the ATTACH, when one is stored already) and their rollup
 * deltas written.  DETACH PARTITION and DROP TABLE of a partition take rows
 * out: their keys are released and their hours go stale, so the rollups
 * follow the events that stay.  On a pg_partman table, whose partitions
 * leave by pg_partman's retention, their rollup hours stay as they are, as
 * with ingest's own retention.  A new partition gets the statement triggers
 * of changes.c and the table's replica identity (PostgreSQL gives a new
 * partition DEFAULT, and ALTER TABLE ... REPLICA IDENTITY on the table does
 * not recurse: without this, a published DELETE on it fails), and the
 * table's own REPLICA IDENTITY, set by hand, reaches its partitions.  The
 * side tables follow the table's owner.  DETACH ... CONCURRENTLY commits
 * halfway, so the ledger could not follow it exactly: it is refused, except
 * for the worker's own retention (IngestInternalDDL()), which forgets the
 * keys itself.  A partition can also go without a DROP TABLE naming it
 * (DROP SCHEMA ... CASCADE, DROP OWNED BY its owner, DROP EXTENSION of an
 * extension it was added to): the object access hook sees it dropped, its
 * rows still readable, and its rows leave the same way.
 *
 * The event table's shape holds for its whole life, not only at adoption:
 * its billing-event columns keep their names and types (ALTER COLUMN TYPE,
 * DROP COLUMN and RENAME COLUMN of one of them are refused), so that the
 * ledger, the rollups and the code reading them never meet another type.
 *
 * BEFORE INSERT row triggers fire in name order, and ingest_dedup claims
 * the row's key: a user's trigger named to fire after it could change that
 * key or drop the row, leaving the ledger with a key no event has.  Such a
 * trigger (made or renamed so) is refused; one that fires before is free.
 *
 * Maintenance knows a partition's declared indexes by the names made from
 * the partition's: a partition renamed by hand takes them along.
 *
 * On Citus the coordinator's table has these rules, not its shards.  A
 * partition of a distributed table leaves only by retention (the keys of its
 * rows are released shard by shard there).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_depend.h"
#include "catalog/dependency.h"
#include "catalog/index.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/fmgroids.h"
#include "utils/partcache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "ingest.h"
#include "loader.h"

/*
 * While the worker runs its own partition DDL: the depth of utility
 * statements (utility_hook.c) that statement runs at.  Only it is let
 * through: a statement nested in it (one that code of the owner's, as an
 * index expression or an event trigger, runs) is checked as any other.
 */
int			ingest_internal_ddl_depth = 0;

bool
IngestInternalDDL(void)
{
	return ingest_internal_ddl_depth != 0 && ingest_utility_depth == ingest_internal_ddl_depth;
}

/* The utility statement being run, for the object access hook. */
static Node *running_stmt = NULL;

/* Partitions whose rows the hook took out in the running statement. */
static List *partitions_left = NIL;

static object_access_hook_type prev_object_access_hook = NULL;

typedef enum PartAction
{
	PART_JOINS,					/* attached: claim its keys, its hours stale */
	PART_CREATED,				/* a new, empty partition: triggers, its hours stale */
	PART_OWNER,					/* the table's owner changed: its side tables' too */
	PART_REASSIGNED,			/* REASSIGN OWNED: any table's owner may have */
	PART_IDENTITY,				/* the table's replica identity changed */
	PART_RENAMED,				/* a partition renamed: its declared indexes too */
	PART_FINALIZED				/* a retirement's detach ended by hand */
} PartAction;

/* The columns ingest reads, by name: their types are checked at adoption. */
static const char *const required_columns[] = {
	"organization_id", "transaction_id", "external_customer_id", "code",
	"timestamp", "properties", "value", "decimal_value", "created_at"
};

static void
refuse_column_change(Oid root, const char *column, const char *what)
{
	int			i;

	if (column == NULL)
		return;
	for (i = 0; i < (int) lengthof(required_columns); i++)
		if (strcmp(column, required_columns[i]) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot %s column \"%s\" of managed table \"%s\"",
							what, column, get_rel_name(root)),
					 errdetail("ingest keys, deduplicates and rolls up events on this column as it is."),
					 errhint("Use ingest.unmanage_table() first.")));
}

typedef struct PartWork
{
	PartAction	action;
	Oid			root;
	RangeVar   *partition;
	Oid			relid;			/* PART_RENAMED, PART_FINALIZED: the partition;
								 * PART_REASSIGNED: the new owner */
	List	   *indexes;		/* its declared indexes' OIDs */
	List	   *names;			/* and their declarations' names */
} PartWork;

/* The managed, ready root of a partitioned table, or InvalidOid. */
static Oid
managed_root(Oid relid, IngestTable *t)
{
	Oid			root;

	if (!OidIsValid(relid))
		return InvalidOid;
	root = IngestRootOf(relid);
	/* a Citus shard's DDL is its coordinator's, which ingest saw there */
	if (!IngestLookupTable(root, t) || !t->ready || t->citus_shard)
		return InvalidOid;
	return root;
}

/*
 * The rule: a BEFORE INSERT row trigger fires after ingest_dedup when its
 * name sorts after it (triggers fire in name order, byte by byte).
 */
static bool
fires_after_dedup(int16 tgtype, const char *trigname)
{
	return TRIGGER_FOR_ROW(tgtype) && TRIGGER_FOR_BEFORE(tgtype) &&
		TRIGGER_FOR_INSERT(tgtype) && strcmp(trigname, INGEST_DEDUP_TRIGGER) > 0;
}

PG_FUNCTION_INFO_V1(ingest_fires_after_dedup);

/* ingest_internal.fires_after_dedup(tgtype, tgname), for manage_table. */
Datum
ingest_fires_after_dedup(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(fires_after_dedup(PG_GETARG_INT16(0), NameStr(*PG_GETARG_NAME(1))));
}

static void
refuse_trigger_after_dedup(Oid root, int16 tgtype, const char *trigname)
{
	if (!fires_after_dedup(tgtype, trigname))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("BEFORE INSERT row trigger \"%s\" on managed table \"%s\" would fire after ingest claims the row's key",
					trigname, get_rel_name(root)),
			 errdetail("Row triggers fire in name order; one after \"%s\" could change the key or skip the row.",
					   INGEST_DEDUP_TRIGGER),
			 errhint("Give the trigger a name that sorts before \"%s\".", INGEST_DEDUP_TRIGGER)));
}

/*
 * The type of trigger "trigname" on relid (0 when there is none), and
 * whether it is one of ingest's own.
 */
static int16
trigger_kind(Oid relid, const char *trigname, bool *ours)
{
	Oid			trigoid = get_trigger_oid(relid, trigname, true);
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int16		tgtype = 0;

	*ours = false;
	if (!OidIsValid(trigoid))
		return 0;
	/* pg_trigger has no syscache */
	rel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_trigger_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(trigoid));
	scan = systable_beginscan(rel, TriggerOidIndexId, true, NULL, 1, &key);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_trigger tg = (Form_pg_trigger) GETSTRUCT(tup);

		tgtype = tg->tgtype;
		*ours = IngestIsOwnTriggerFunction(tg->tgfoid, true);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return tgtype;
}

/*
 * Renaming or replacing one of ingest's own triggers would stop the ledger
 * and rollups following the table's rows (a renamed ingest_dedup also
 * leaves the table taken for one mid-restore): refused.  DROP TRIGGER and
 * DISABLE TRIGGER are not: pg_restore --clean drops them before the table,
 * and a data-only restore disables them (README).
 */
static void
refuse_own_trigger(Oid root, const char *trigname, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot %s trigger \"%s\" of managed table \"%s\"", what, trigname,
					get_rel_name(root)),
			 errdetail("ingest keeps the key ledger and rollups of the table's rows through it."),
			 errhint("Use ingest.unmanage_table() first.")));
}

/* ALTER TRIGGER ... RENAME TO on a managed table or one of its partitions. */
static void
rename_trigger_before(RenameStmt *rs)
{
	IngestTable t;
	Oid			relid = RangeVarGetRelid(rs->relation, NoLock, true);
	Oid			root = managed_root(relid, &t);
	int16		tgtype;
	bool		ours;

	if (!OidIsValid(root) || IngestInternalDDL())
		return;
	tgtype = trigger_kind(relid, rs->subname, &ours);
	if (ours)
		refuse_own_trigger(root, rs->subname, "rename");
	refuse_trigger_after_dedup(root, tgtype, rs->newname);
}

/* A CREATE [OR REPLACE] TRIGGER on a managed table or one of its partitions. */
static void
create_trigger_before(CreateTrigStmt *ct)
{
	IngestTable t;
	Oid			relid;
	Oid			root;
	bool		ours;

	if (IngestInternalDDL())
		return;
	relid = RangeVarGetRelid(ct->relation, NoLock, true);
	root = managed_root(relid, &t);
	if (!OidIsValid(root))
		return;
	if (ct->replace)
	{
		(void) trigger_kind(relid, ct->trigname, &ours);
		if (ours)
			refuse_own_trigger(root, ct->trigname, "replace");
	}
	refuse_trigger_after_dedup(root, (ct->row ? TRIGGER_TYPE_ROW : 0) | ct->timing | ct->events,
							   ct->trigname);
}

/*
 * Run an ingest_internal function of one relation as the extension owner:
 * DDL on ingest's own triggers and side tables, which runs no user code.
 */
static void
run_internal_args(const char *sql, int nargs, Oid *types, Datum *args)
{
	Oid			owner;
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	owner = IngestExtensionOwner();
	AS_OWNER(owner, rc = SPI_execute_with_args(sql, nargs, types, args, NULL, false, 1));
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not run \"%s\": %s", sql, SPI_result_code_string(rc));
	SPI_finish();
}

static void
run_internal(const char *sql, Oid rel)
{
	run_internal_args(sql, 1, (Oid[]) {REGCLASSOID}, (Datum[]) {ObjectIdGetDatum(rel)});
}

static void
track_partition(Oid part)
{
	run_internal("SELECT ingest_internal.track_relation($1)", part);
}

/*
 * A partition made or attached by hand takes its table's replica identity.
 * Its ACCESS EXCLUSIVE lock is the DDL's already (CREATE TABLE made it;
 * ATTACH holds it on the table it attaches).
 */
static void
inherit_replica_identity(Oid part)
{
	run_internal("SELECT ingest_internal.inherit_replica_identity($1)", part);
}

/*
 * A timestamptz bound of a range partition as an SQL expression, or NULL:
 * whole seconds since the Unix epoch and microseconds, so that neither
 * DateStyle nor TimeZone can change what it reads back as.
 */
static char *
range_bound_sql(List *datums)
{
	TimestampTz ts;
	int64		us;
	int64		secs;

	if (!IngestRangeBound(datums, &ts) || TIMESTAMP_NOT_FINITE(ts))
		return NULL;
	us = ts + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	secs = us / USECS_PER_SEC - (us % USECS_PER_SEC < 0 ? 1 : 0);
	return psprintf("(pg_catalog.to_timestamp(" INT64_FORMAT "::pg_catalog.float8)"
					" OPERATOR(pg_catalog.+) (" INT64_FORMAT " OPERATOR(pg_catalog.*) interval '1 microsecond'))",
					secs, us - secs * USECS_PER_SEC);
}

/*
 * The rows of partition "part" of managed table t, as a FROM item.  They
 * are read through the table, whose owner ingest acts as: that role may
 * have no right to a partition another role owns, or to its schema.  The
 * partition's range, when it is one of the table's own on "timestamp",
 * prunes the scan to it.
 */
static char *
partition_rows(IngestTable *t, Oid part)
{
	StringInfoData buf;
	Relation	root = relation_open(t->relid, NoLock);
	PartitionKey key = RelationGetPartitionKey(root);
	HeapTuple	tup;

	initStringInfo(&buf);
	appendStringInfo(&buf, "(SELECT p.* FROM %s p WHERE p.tableoid IN "
					 "(SELECT x.relid FROM pg_catalog.pg_partition_tree(%u::pg_catalog.oid::pg_catalog.regclass) x)",
					 IngestQualifiedName(t->relid), part);
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(part));
	if (HeapTupleIsValid(tup) && key != NULL && key->partnatts == 1 &&
		key->strategy == PARTITION_STRATEGY_RANGE &&
		key->partattrs[0] != 0 &&
		strcmp(get_attname(t->relid, key->partattrs[0], false), "timestamp") == 0 &&
		get_partition_parent(part, true) == t->relid)
	{
		bool		isnull;
		Datum		bound = SysCacheGetAttr(RELOID, tup, Anum_pg_class_relpartbound, &isnull);

		if (!isnull)
		{
			PartitionBoundSpec *spec = castNode(PartitionBoundSpec,
												stringToNode(TextDatumGetCString(bound)));
			char	   *lo = spec->is_default ? NULL : range_bound_sql(spec->lowerdatums);
			char	   *hi = spec->is_default ? NULL : range_bound_sql(spec->upperdatums);

			if (lo)
				appendStringInfo(&buf, " AND p.\"timestamp\" >= %s", lo);
			if (hi)
				appendStringInfo(&buf, " AND p.\"timestamp\" < %s", hi);
		}
	}
	if (HeapTupleIsValid(tup))
		ReleaseSysCache(tup);
	relation_close(root, NoLock);
	appendStringInfoString(&buf, ")");
	return buf.data;
}

/*
 * The table a partition is being detached from (retention's detach, held
 * pending), or InvalidOid: PostgreSQL shows it no ancestors then.
 */
static Oid
pending_parent(Oid part)
{
	Relation	rel = table_open(InheritsRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			parent = InvalidOid;

	ScanKeyInit(&key, Anum_pg_inherits_inhrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(part));
	scan = systable_beginscan(rel, InheritsRelidSeqnoIndexId, true, NULL, 1, &key);
	if (HeapTupleIsValid(tup = systable_getnext(scan)) &&
		((Form_pg_inherits) GETSTRUCT(tup))->inhdetachpending)
		parent = ((Form_pg_inherits) GETSTRUCT(tup))->inhparent;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return parent;
}

/* The managed root of a partition, also one detach pending. */
static Oid
managed_root_of_partition(Oid part, IngestTable *t)
{
	Oid			pending = pending_parent(part);

	return managed_root(OidIsValid(pending) ? pending : part, t);
}

/*
 * Taking out the oldest partition retires its day: its rollup hours stay
 * as they are from then on, so they must first agree with its rows.  So
 * the table's stale hours are folded before it goes, as retention folds
 * before a detach (a fold needs READ COMMITTED), or the DDL is refused:
 * marks of its hours would lie outside the retained hours, and be passed
 * over for good.  Every mark, not only its day's: when one statement takes
 * out the two oldest days, the first one taken out is the oldest, and the
 * second one's marks must be folded then.  A later partition's hours stay
 * retained: its marks are folded as any are.
 */
static void
settle_oldest_day(IngestTable *t, Oid part)
{
	if (!IngestOldestDayMarked(t, part))
		return;
	if (!IsolationUsesXactSnapshot())
		run_internal("SELECT ingest_internal.fold($1, false)", t->relid);
	if (IngestOldestDayMarked(t, part))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the rollups of managed table \"%s\" have changes not folded", get_rel_name(t->relid)),
				 errdetail("Taking out its oldest partition retires its day, whose rollup hours then stay as they are."),
				 errhint("Run ingest.fold_rollups() in a READ COMMITTED transaction, then retry.")));
}

/*
 * A partition's rows leave the table: keys released, hours stale.  The
 * DDL's locks are taken first (the parent's, then the partition's, as the
 * DDL takes them), so no writer adds a row after it is read; rows are read
 * with the latest snapshot.  A day whose retirement began (detach pending),
 * which no query through the table reads, ends it as retention would.
 */
static void
partition_leaves(IngestTable *t, Oid part)
{
	IngestOwnerScope scope;
	char	   *name;

	if (t->distributed)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot take a partition out of managed table \"%s\": it is distributed by Citus",
						get_rel_name(t->relid)),
				 errdetail("ingest does not yet release the keys and rollups of a partition's rows on the shards."),
				 errhint("Let retention retire the partition (ingest.configure).")));
	LockRelationOid(t->relid, AccessExclusiveLock);
	LockRelationOid(part, AccessExclusiveLock);
	if (OidIsValid(pending_parent(part)))
	{
		run_internal_args("SELECT ingest_internal.forget_keys($1, $2)",
						  2, (Oid[]) {OIDOID, OIDOID},
						  (Datum[]) {ObjectIdGetDatum(t->relid), ObjectIdGetDatum(part)});
		return;
	}
	settle_oldest_day(t, part);
	name = partition_rows(t, part);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	IngestOwnerPush(t->owner, true, &scope);
	IngestOwnerAllRows(&scope);
	t->latest_snapshot = true;
	IngestForgetKeys(t, name);
	if (!t->partman)
		IngestMarkStale(t, name, false);
	IngestOwnerPop(&scope);
	SPI_finish();
	/* where it lay in a hole of retired days, its hours follow it too */
	if (!t->partman)
		run_internal_args("SELECT ingest_internal.unretire_range($1, $2)",
						  2, (Oid[]) {REGCLASSOID, OIDOID},
						  (Datum[]) {ObjectIdGetDatum(t->relid), ObjectIdGetDatum(part)});
}

static void partition_range_stale(IngestTable *t, Oid part);

/*
 * A partition's rows join the table (the ATTACH holds its locks): keys
 * claimed, and their hours marked stale, to be recomputed from the raw
 * events, not fed as deltas: a day detached (or retired) before keeps its
 * rollup hours, and deltas would count its events again on top of them.
 * The hours of its whole range go stale too (partition_range_stale): the
 * day's retired hours that its rows do not span.  pg_partman's own
 * attaches feed deltas, as its detaches leave the hours unmarked.
 */
static void
partition_joins(IngestTable *t, Oid part)
{
	IngestOwnerScope scope;
	char	   *name = IngestQualifiedName(part);

	track_partition(part);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	IngestOwnerPush(t->owner, true, &scope);
	IngestOwnerAllRows(&scope);
	t->latest_snapshot = true;
	IngestClaimKeysStrict(t, name);
	if (t->partman)
		IngestFeedDeltas(t, name);
	else
		IngestMarkStale(t, name, false);
	IngestOwnerPop(&scope);
	SPI_finish();
	partition_range_stale(t, part);
}

/*
 * A partition joins the table (made or attached): a day retired before,
 * made again, keeps its rollup hours, and its events would count on top of
 * them (ingest_internal.stale_new_range).  pg_partman's tables keep their
 * hours: its detaches leave them unmarked; so do Citus's, whose retention
 * waits for the nodes' folds.
 */
static void
partition_range_stale(IngestTable *t, Oid part)
{
	if (!t->partman && !t->distributed && !t->citus_shard)
		run_internal_args("SELECT ingest_internal.stale_new_range($1, $2)",
						  2, (Oid[]) {REGCLASSOID, OIDOID},
						  (Datum[]) {ObjectIdGetDatum(t->relid), ObjectIdGetDatum(part)});
}

/* A partition made by hand (CREATE TABLE ... PARTITION OF). */
static void
partition_created(IngestTable *t, Oid part)
{
	track_partition(part);
	partition_range_stale(t, part);
}

/*
 * May the current user run DDL on relid: a member of its owner's role (a
 * superuser), or with schema_owner_too of its schema's owner, as DROP
 * allows?  PostgreSQL checks this before it locks: the hook's work on a
 * partition's rows waits for it, so that a statement to be refused takes no
 * lock on another role's table and reads none of its rows.
 */
static Oid	namespace_owner(Oid relid);

static bool
may_alter(Oid relid, bool schema_owner_too)
{
	Oid			user = GetUserId();

	return has_privs_of_role(user, IngestRelationOwner(relid)) ||
		(schema_owner_too && has_privs_of_role(user, namespace_owner(relid)));
}

static List *
alter_table_before(AlterTableStmt *stmt)
{
	List	   *work = NIL;
	ListCell   *lc;
	IngestTable t;
	Oid			root;

	if (stmt->objtype != OBJECT_TABLE)
		return NIL;
	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);
		PartitionCmd *pc;
		Oid			relid;

		if (cmd->subtype != AT_AttachPartition && cmd->subtype != AT_DetachPartition &&
			cmd->subtype != AT_DetachPartitionFinalize &&
			cmd->subtype != AT_ChangeOwner && cmd->subtype != AT_AlterColumnType &&
			cmd->subtype != AT_DropColumn && cmd->subtype != AT_ReplicaIdentity &&
			cmd->subtype != AT_SetUnLogged)
			continue;
		pc = (PartitionCmd *) cmd->def;
		relid = RangeVarGetRelid(stmt->relation, NoLock, true);
		root = managed_root(relid, &t);
		if (!OidIsValid(root) || IngestInternalDDL())
			continue;
		if (cmd->subtype == AT_ReplicaIdentity)
		{
			PartWork   *w;

			/* on the table itself, without ONLY: a partition may differ */
			if (relid != root || !stmt->relation->inh)
				continue;
			w = palloc(sizeof(PartWork));
			w->action = PART_IDENTITY;
			w->root = root;
			w->partition = NULL;
			work = lappend(work, w);
			continue;
		}
		if (cmd->subtype == AT_SetUnLogged)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot make managed table \"%s\" or a partition of it unlogged",
							get_rel_name(root)),
					 errdetail("A crash would empty an unlogged partition while the key ledger and rollups keep its events.")));
		if (cmd->subtype == AT_AlterColumnType)
		{
			refuse_column_change(root, cmd->name, "change the type of");
			continue;
		}
		if (cmd->subtype == AT_DetachPartitionFinalize)
		{
			/* only retention's detach can be pending: ended as retention ends it */
			PartWork   *w = palloc0(sizeof(PartWork));

			w->action = PART_FINALIZED;
			w->root = root;
			w->relid = RangeVarGetRelid(pc->name, NoLock, false);
			work = lappend(work, w);
			continue;
		}
		if (cmd->subtype == AT_DropColumn)
		{
			refuse_column_change(root, cmd->name, "drop");
			continue;
		}
		if (cmd->subtype == AT_ChangeOwner)
		{
			PartWork   *w = palloc(sizeof(PartWork));

			w->action = PART_OWNER;
			w->root = root;
			w->partition = NULL;
			work = lappend(work, w);
		}
		else if (cmd->subtype == AT_AttachPartition)
		{
			PartWork   *w = palloc(sizeof(PartWork));

			w->action = PART_JOINS;
			w->root = root;
			w->partition = pc->name;
			work = lappend(work, w);
		}
		else if (pc->concurrent)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot detach a partition of managed table \"%s\" concurrently",
							get_rel_name(root)),
					 errdetail("DETACH PARTITION CONCURRENTLY commits halfway; the key ledger and rollups could not follow it exactly."),
					 errhint("Use DETACH PARTITION without CONCURRENTLY, or let retention retire the partition.")));
		else
		{
			/*
			 * The rows are still readable, through the partition, after.
			 * A relation that is no partition of the table is PostgreSQL's
			 * to refuse.
			 */
			Oid			part = RangeVarGetRelid(pc->name, NoLock, true);

			if (OidIsValid(part) && IngestRootOf(part) == root && may_alter(relid, false))
				partition_leaves(&t, part);
		}
	}
	return work;
}

static void
drop_before(DropStmt *stmt)
{
	ListCell   *lc;
	IngestTable t;

	if (stmt->removeType != OBJECT_TABLE || IngestInternalDDL())
		return;
	foreach(lc, stmt->objects)
	{
		RangeVar   *rv = makeRangeVarFromNameList((List *) lfirst(lc));
		Oid			relid = RangeVarGetRelid(rv, NoLock, true);

		if (!OidIsValid(relid) || !get_rel_relispartition(relid))
			continue;
		if (OidIsValid(managed_root_of_partition(relid, &t)) && may_alter(relid, true))
			partition_leaves(&t, relid);
	}
}

/* The owner of a relation's schema. */
static Oid
namespace_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(NAMESPACEOID,
									  ObjectIdGetDatum(get_rel_namespace(relid)));
	Oid			owner = InvalidOid;

	if (HeapTupleIsValid(tup))
	{
		owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
		ReleaseSysCache(tup);
	}
	return owner;
}

/*
 * Does the running statement drop managed table "root" too (its state then
 * goes with it, and its partitions need no work)?  DROP SCHEMA drops what is
 * in the schemas named; DROP OWNED what the roles own, and, with CASCADE,
 * what is in their schemas.
 */
static bool
root_dropped_too(Oid root)
{
	ListCell   *lc;

	if (running_stmt == NULL)
		return false;
	if (IsA(running_stmt, DropStmt) &&
		((DropStmt *) running_stmt)->removeType == OBJECT_SCHEMA)
	{
		foreach(lc, ((DropStmt *) running_stmt)->objects)
			if (get_namespace_oid(strVal(lfirst(lc)), true) == get_rel_namespace(root))
				return true;
	}
	else if (IsA(running_stmt, DropOwnedStmt))
	{
		foreach(lc, ((DropOwnedStmt *) running_stmt)->roles)
		{
			Oid			role = get_rolespec_oid(lfirst(lc), true);

			if (OidIsValid(role) &&
				(role == IngestRelationOwner(root) || role == namespace_owner(root)))
				return true;
		}
	}
	return false;
}

/* The table a TOAST table belongs to (its internal dependency). */
static Oid
toast_owner(Oid toast)
{
	Relation	dep = table_open(DependRelationId, AccessShareLock);
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			owner = InvalidOid;

	ScanKeyInit(&key[0], Anum_pg_depend_classid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(RelationRelationId));
	ScanKeyInit(&key[1], Anum_pg_depend_objid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(toast));
	scan = systable_beginscan(dep, DependDependerIndexId, true, NULL, 2, key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_depend d = (Form_pg_depend) GETSTRUCT(tup);

		if (d->deptype == DEPENDENCY_INTERNAL && d->refclassid == RelationRelationId)
		{
			owner = d->refobjid;
			break;
		}
	}
	systable_endscan(scan);
	table_close(dep, AccessShareLock);
	return owner;
}

/*
 * A relation is being dropped: if it is a partition of a managed table that
 * stays, and no DROP TABLE naming it did the work before (drop_before), its
 * rows leave now, at the drop of its TOAST table, which goes first (or of
 * the partition, if it has none).  Its indexes and triggers are gone
 * already, its rows not.
 */
static void
ingest_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					 int subId, void *arg)
{
	IngestTable t;
	Oid			part = objectId;
	MemoryContext old;

	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access != OAT_DROP || classId != RelationRelationId ||
		IngestInternalDDL() || IsBinaryUpgrade)
		return;
	/* a column dropped by a cascade (DROP COLLATION, DROP TYPE ... CASCADE) */
	if (subId != 0)
	{
		if (subId > 0 && OidIsValid(get_extension_oid("ingest", true)) &&
			OidIsValid(managed_root(objectId, &t)) && !root_dropped_too(t.relid))
			refuse_column_change(t.relid, get_attname(objectId, subId, true), "drop");
		return;
	}
	if (running_stmt != NULL && IsA(running_stmt, DropStmt) &&
		((DropStmt *) running_stmt)->removeType == OBJECT_TABLE)
		return;
	/*
	 * A table's TOAST table goes before it, and the TOAST table's index
	 * before that: its rows must be read then, while their values out of
	 * line can still be found.  Not an index REINDEX CONCURRENTLY drops.
	 */
	if (get_rel_relkind(objectId) == RELKIND_INDEX)
	{
		Oid			heap = IndexGetRelation(objectId, true);

		/* nor one dropped by name (allow_system_table_mods) */
		if (!OidIsValid(heap) || get_rel_relkind(heap) != RELKIND_TOASTVALUE ||
			(arg != NULL && (((ObjectAccessDrop *) arg)->dropflags & PERFORM_DELETION_INTERNAL)) ||
			(running_stmt != NULL && IsA(running_stmt, DropStmt) &&
			 ((DropStmt *) running_stmt)->removeType == OBJECT_INDEX))
			return;
		part = toast_owner(heap);
	}
	else if (get_rel_relkind(objectId) == RELKIND_TOASTVALUE)
		part = toast_owner(objectId);
	if (!OidIsValid(part) || !get_rel_relispartition(part) ||
		list_member_oid(partitions_left, part))
		return;
	if (!OidIsValid(get_extension_oid("ingest", true)))
		return;
	if (OidIsValid(managed_root_of_partition(part, &t)) && !root_dropped_too(t.relid))
	{
		partition_leaves(&t, part);
		old = MemoryContextSwitchTo(TopMemoryContext);
		partitions_left = lappend_oid(partitions_left, part);
		MemoryContextSwitchTo(old);
	}
}

void
IngestInstallDropHook(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = ingest_object_access;
}

/* The utility statement about to run; returns the one it interrupts. */
void *
IngestStatementEnter(Node *stmt)
{
	Node	   *outer = running_stmt;

	/*
	 * A partition's TOAST table and the partition go in one deletion, of one
	 * statement: what an earlier statement (maybe in a subtransaction rolled
	 * back since) took out says nothing about this one.
	 */
	list_free(partitions_left);
	partitions_left = NIL;
	running_stmt = stmt;
	return outer;
}

void
IngestStatementLeave(void *outer)
{
	running_stmt = (Node *) outer;
}

/*
 * The nodes find the side tables of a distributed table's shards by the
 * table's qualified name: it keeps it (RENAME, SET SCHEMA, a rename of its
 * schema are refused).
 */
static void
refuse_citus_rename(Oid relid)
{
	IngestTable t;

	if (OidIsValid(relid) && OidIsValid(managed_root(relid, &t)) &&
		t.distributed && t.relid == relid)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot rename managed table \"%s\" or move it to another schema: it is distributed by Citus",
						get_rel_name(relid)),
				 errdetail("Each node finds the side tables of its shards by the table's name.")));
}

static void
refuse_citus_schema_rename(const char *schema)
{
	Oid			nsp = get_namespace_oid(schema, true);
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	List	   *tables = NIL;
	ListCell   *lc;

	if (!OidIsValid(nsp))
		return;
	/* the schema's partitioned tables that are no partition: managed ones? */
	rel = table_open(RelationRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_class c = (Form_pg_class) GETSTRUCT(tup);

		if (c->relnamespace == nsp && c->relkind == RELKIND_PARTITIONED_TABLE && !c->relispartition)
			tables = lappend_oid(tables, c->oid);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	foreach(lc, tables)
		refuse_citus_rename(lfirst_oid(lc));
}

/*
 * A partition renamed by hand: maintenance knows its declared indexes by
 * the names made from the partition's (ingest.partition_index_name), so
 * they are renamed with it.  Found here, before the rename, by the old
 * name, under the rename's lock; renamed after it.  A distributed table's
 * partitions are left alone.
 */
static void *
partition_renamed_before(Oid relid)
{
	MemoryContext outer = CurrentMemoryContext;
	IngestTable t;
	PartWork   *w;
	Datum		arg = ObjectIdGetDatum(relid);
	int			rc;

	if (!OidIsValid(relid) || get_rel_relkind(relid) != RELKIND_RELATION ||
		!get_rel_relispartition(relid) || !OidIsValid(managed_root(relid, &t)) ||
		t.distributed || !may_alter(relid, false))
		return NULL;
	/* the rename's own lock, first: an index built meanwhile is found too */
	LockRelationOid(relid, AccessExclusiveLock);
	w = palloc0(sizeof(PartWork));
	w->action = PART_RENAMED;
	w->root = t.relid;
	w->relid = relid;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* the catalogs as the lock left them, not as the statement's snapshot */
	PushActiveSnapshot(GetLatestSnapshot());
	AS_OWNER(IngestExtensionOwner(),
			 rc = SPI_execute_with_args("SELECT idx, name FROM ingest_internal.declared_indexes($1)",
										1, (Oid[]) {REGCLASSOID}, &arg, NULL, true, 0));
	PopActiveSnapshot();
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not find the declared indexes of \"%s\"", get_rel_name(relid));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Oid			idx = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *name = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
		MemoryContext spi = MemoryContextSwitchTo(outer);

		w->indexes = lappend_oid(w->indexes, idx);
		w->names = lappend(w->names, pstrdup(name));
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	return w->indexes != NIL ? list_make1(w) : NULL;
}

static void
partition_renamed_after(PartWork *w)
{
	ListCell   *li,
			   *ln;

	forboth(li, w->indexes, ln, w->names)
		run_internal_args("SELECT ingest_internal.rename_declared_index($1, $2, $3)", 3,
						  (Oid[]) {REGCLASSOID, OIDOID, TEXTOID},
						  (Datum[]) {ObjectIdGetDatum(w->relid), ObjectIdGetDatum(lfirst_oid(li)),
									 CStringGetTextDatum(lfirst(ln))});
}

/*
 * Before a utility statement: the work that must see the partition as it
 * is (DETACH, DROP), and what to do after it (ATTACH, CREATE ... PARTITION
 * OF).  Returns the latter for IngestPartitionDDLAfter, or NULL.
 */
void *
IngestPartitionDDLBefore(Node *stmt)
{
	IngestTable t;

	if (!(IsA(stmt, AlterTableStmt) || IsA(stmt, DropStmt) || IsA(stmt, CreateStmt) ||
		  IsA(stmt, CreateForeignTableStmt) || IsA(stmt, RenameStmt) || IsA(stmt, CreateTrigStmt) ||
		  IsA(stmt, AlterObjectSchemaStmt) || IsA(stmt, ReassignOwnedStmt)) ||
		IsBinaryUpgrade)
		return NULL;
	if (!OidIsValid(get_extension_oid("ingest", true)))
		return NULL;

	/* it changes owners without ALTER TABLE ... OWNER TO */
	if (IsA(stmt, ReassignOwnedStmt))
	{
		PartWork   *w = palloc0(sizeof(PartWork));

		w->action = PART_REASSIGNED;
		w->relid = get_rolespec_oid(((ReassignOwnedStmt *) stmt)->newrole, false);
		return list_make1(w);
	}

	if (IsA(stmt, AlterObjectSchemaStmt))
	{
		AlterObjectSchemaStmt *as = (AlterObjectSchemaStmt *) stmt;

		if (as->relation != NULL)
			refuse_citus_rename(RangeVarGetRelid(as->relation, NoLock, true));
		return NULL;
	}

	if (IsA(stmt, CreateTrigStmt))
	{
		create_trigger_before((CreateTrigStmt *) stmt);
		return NULL;
	}
	if (IsA(stmt, RenameStmt))
	{
		RenameStmt *rs = (RenameStmt *) stmt;

		if (rs->renameType == OBJECT_TRIGGER && rs->relation != NULL)
		{
			rename_trigger_before(rs);
			return NULL;
		}

		/* ALTER TYPE <table's row type> RENAME ATTRIBUTE renames a column */
		if ((rs->renameType == OBJECT_COLUMN || rs->renameType == OBJECT_ATTRIBUTE) &&
			rs->relation != NULL &&
			OidIsValid(managed_root(RangeVarGetRelid(rs->relation, NoLock, true), &t)))
			refuse_column_change(IngestRootOf(RangeVarGetRelid(rs->relation, NoLock, true)),
								 rs->subname, "rename");
		if (rs->renameType == OBJECT_SCHEMA && rs->subname != NULL)
			refuse_citus_schema_rename(rs->subname);
		/* ALTER INDEX/VIEW/SEQUENCE ... RENAME rename a table too */
		if ((rs->renameType == OBJECT_TABLE || rs->renameType == OBJECT_INDEX ||
			 rs->renameType == OBJECT_VIEW || rs->renameType == OBJECT_MATVIEW ||
			 rs->renameType == OBJECT_SEQUENCE || rs->renameType == OBJECT_FOREIGN_TABLE) &&
			rs->relation != NULL)
		{
			Oid			relid = RangeVarGetRelid(rs->relation, NoLock, true);

			refuse_citus_rename(relid);
			return partition_renamed_before(relid);
		}
		return NULL;
	}

	if (IsA(stmt, AlterTableStmt))
		return alter_table_before((AlterTableStmt *) stmt);
	if (IsA(stmt, DropStmt))
	{
		drop_before((DropStmt *) stmt);
		return NULL;
	}
	else
	{
		/* CREATE [FOREIGN] TABLE (a CreateForeignTableStmt starts as one) */
		CreateStmt *cs = (CreateStmt *) stmt;
		PartWork   *w;
		Oid			root;

		if (cs->partbound == NULL || list_length(cs->inhRelations) != 1)
			return NULL;
		/* IF NOT EXISTS of a relation that exists: PostgreSQL does nothing */
		if (cs->if_not_exists &&
			OidIsValid(get_relname_relid(cs->relation->relname,
										 RangeVarGetCreationNamespace(cs->relation))))
			return NULL;
		root = managed_root(RangeVarGetRelid(linitial_node(RangeVar, cs->inhRelations),
											 NoLock, true), &t);
		if (!OidIsValid(root))
			return NULL;
		w = palloc(sizeof(PartWork));
		w->action = PART_CREATED;
		w->root = root;
		w->partition = cs->relation;
		return list_make1(w);
	}
}

void
IngestPartitionDDLAfter(void *work)
{
	ListCell   *lc;

	foreach(lc, (List *) work)
	{
		PartWork   *w = lfirst(lc);
		IngestTable t;

		if (w->action == PART_REASSIGNED)
		{
			run_internal_args("SELECT ingest_internal.follow_owners($1)", 1, (Oid[]) {OIDOID},
							  (Datum[]) {ObjectIdGetDatum(w->relid)});
			continue;
		}
		if (!IngestLookupTable(w->root, &t))
			continue;
		if (w->action == PART_OWNER)
			run_internal("SELECT ingest_internal.follow_owner($1)", w->root);
		else if (w->action == PART_IDENTITY)
			run_internal("SELECT ingest_internal.propagate_replica_identity($1)", w->root);
		else if (w->action == PART_RENAMED)
			partition_renamed_after(w);
		else if (w->action == PART_FINALIZED)
			run_internal_args("SELECT ingest_internal.forget_keys($1, $2)", 2,
							  (Oid[]) {OIDOID, OIDOID},
							  (Datum[]) {ObjectIdGetDatum(w->root), ObjectIdGetDatum(w->relid)});
		else
		{
			Oid			part = RangeVarGetRelid(w->partition, NoLock, false);

			/*
			 * The name is looked up again: a relation another role made
			 * under it since, earlier in search_path, is not the one the
			 * statement attached or made, and is not read as the owner.
			 */
			if (IngestRootOf(part) != w->root)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("relation \"%s\" is not a partition of managed table \"%s\"",
								w->partition->relname, get_rel_name(w->root)),
						 errdetail("Another relation took the name of the partition while the statement ran.")));
			if (w->action == PART_JOINS)
				partition_joins(&t, part);
			else
				partition_created(&t, part);
			inherit_replica_identity(part);
		}
	}
}
