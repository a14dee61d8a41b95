/*-------------------------------------------------------------------------
 *
 * managed.c
 *	  Which tables ingest manages, where their side state is, and running
 *	  SQL over them as their owner.
 *
 * A table is managed when ingest.table_config has a row for it; it is
 * ready when its dedup row trigger is in place too.  A pg_restore brings
 * the configuration and the side tables' rows in its data section and the
 * triggers last, in its post-data section: until then the table is managed
 * but not ready, and the worker, the fold and the COPY hook leave it alone,
 * so that nothing restored is written twice.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "access/relation.h"
#include "utils/rel.h"
#include "commands/trigger.h"
#include "catalog/pg_inherits.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "ingest.h"
#include "loader.h"

/* The owner of a relation. */
Oid
IngestRelationOwner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/* The role the extension's internal tables belong to (needs SPI). */
Oid
IngestExtensionOwner(void)
{
	Oid			extoid = get_extension_oid("ingest", false);
	Oid			owner = InvalidOid;
	int			rc;
	Datum		arg = ObjectIdGetDatum(extoid);
	bool		isnull;

	rc = SPI_execute_with_args("SELECT extowner FROM pg_catalog.pg_extension "
							   " WHERE oid OPERATOR(pg_catalog.=) $1",
							   1, (Oid[]) {OIDOID}, &arg, NULL, true, 1);
	if (rc == SPI_OK_SELECT && SPI_processed == 1)
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
	if (!OidIsValid(owner))
		elog(ERROR, "could not find the owner of extension \"ingest\"");
	return owner;
}


/* A relation's schema-qualified, quoted name, for SQL text. */
char *
IngestQualifiedName(Oid relid)
{
	char	   *rel = get_rel_name(relid);

	if (rel == NULL)
		elog(ERROR, "cache lookup failed for relation %u", relid);
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), rel);
}

/* The partitioned table at the top of a partition's tree, or relid itself. */
Oid
IngestRootOf(Oid relid)
{
	List	   *ancestors;
	Oid			root = relid;

	if (get_rel_relispartition(relid))
	{
		ancestors = get_partition_ancestors(relid);
		if (ancestors != NIL)
			root = llast_oid(ancestors);
		list_free(ancestors);
	}
	return root;
}

/*
 * Is a function one of ingest's trigger functions (dedup_row, or any of
 * them when "any": track_changes and replica_guard too)?  Its C symbol
 * tells, resolved in ingest's own library: only a superuser can create a C
 * function, and a name can be anyone's.  A function whose symbol has none
 * of their names is not resolved, so no other library is loaded for it.
 */
bool
IngestIsOwnTriggerFunction(Oid fn, bool any)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;
	bool		ours = false;

	if (!HeapTupleIsValid(tup))
		return false;
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prolang == ClanguageId)
	{
		bool		srcnull;
		bool		binnull;
		Datum		src = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosrc, &srcnull);
		Datum		bin = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_probin, &binnull);
		char	   *symbol = srcnull ? NULL : TextDatumGetCString(src);

		if (symbol && !binnull &&
			(strcmp(symbol, "ingest_dedup_row") == 0 ||
			 (any && (strcmp(symbol, "ingest_track_changes") == 0 ||
					  strcmp(symbol, "ingest_replica_guard") == 0))))
		{
			void	   *addr = (void *) load_external_function(TextDatumGetCString(bin),
															   symbol, false, NULL);

			ours = addr == (void *) ingest_dedup_row ||
				(any && (addr == (void *) ingest_track_changes ||
						 addr == (void *) ingest_replica_guard));
		}
	}
	ReleaseSysCache(tup);
	return ours;
}

/*
 * Does writing this relation need PostgreSQL's executor: a foreign key to
 * check, a deferrable unique or exclusion constraint to check at the end of
 * the statement or transaction (an internal trigger), or a trigger of the
 * user's to fire?  The loader writes heap tables directly, so it leaves
 * such tables to COPY.
 */
bool
IngestRelationNeedsExecutor(Relation rel)
{
	int			i;

	if (RelationGetFKeyList(rel) != NIL)
		return true;
	for (i = 0; rel->trigdesc && i < rel->trigdesc->numtriggers; i++)
	{
		Trigger    *tg = &rel->trigdesc->triggers[i];

		/* a deferrable constraint's check at the end of the statement */
		if (tg->tgisinternal && tg->tgfoid == F_UNIQUE_KEY_RECHECK)
			return true;
		if (!tg->tgisinternal && tg->tgenabled != TRIGGER_DISABLED &&
			!IngestIsOwnTriggerFunction(tg->tgfoid, true))
			return true;
	}
	return false;
}

/*
 * The same for a managed table the loader is about to take: before it is
 * locked (rel NULL), over the table and its partitions, so that a load
 * refused or left to COPY keeps no lock; once it is (rel), over the table
 * itself, as each partition is checked under its own lock when the loader
 * opens it (partwriter.c).  A partition dropped since the partitions were
 * listed has nothing to check.
 */
bool
IngestNeedsExecutor(Oid relid, Relation rel)
{
	List	   *rels;
	ListCell   *lc;
	bool		needs = false;

	if (rel != NULL)
		return IngestRelationNeedsExecutor(rel);
	rels = find_all_inheritors(relid, NoLock, NULL);
	foreach(lc, rels)
	{
		Relation	part = try_relation_open(lfirst_oid(lc), AccessShareLock);

		if (part == NULL)
			continue;
		needs = IngestRelationNeedsExecutor(part);
		relation_close(part, AccessShareLock);
		if (needs)
			break;
	}
	list_free(rels);
	return needs;
}

static bool lookup_table(Oid relid, IngestTable *t, bool read_only);

/* An oid or regclass column of the SPI result's row "row" */
static Oid
regclass_at_row(uint64 row, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);

	return *isnull ? InvalidOid : DatumGetObjectId(d);
}

static Oid
regclass_at(int col, bool *isnull)
{
	return regclass_at_row(0, col, isnull);
}

/*
 * The version of the extension in this database, NULL if absent.  Until
 * ALTER EXTENSION ingest UPDATE, the library leaves the tables of an older
 * version alone (their side state has another shape).
 */
static char *
extension_version(void)
{
	int			rc = SPI_execute("SELECT extversion FROM pg_catalog.pg_extension "
								 " WHERE extname OPERATOR(pg_catalog.=) 'ingest'",
								 true, 1);

	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		return NULL;
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * The same in the catalog snapshot, whatever the isolation level: at
 * least what committed before the last lock this backend took (a lock
 * wait ends by accepting the invalidations of what committed meanwhile,
 * and a change to pg_extension sends one).
 */
char *
IngestExtensionVersionLatest(void)
{
	Relation	ext = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *v = NULL;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("ingest"));
	scan = systable_beginscan(ext, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(ext), &isnull);

		if (!isnull)
			v = TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(ext, AccessShareLock);
	return v;
}

/* The one test of a version of the extension (v) against this library's. */
bool
IngestIsLibraryVersion(const char *v)
{
	return v != NULL && strcmp(v, INGEST_VERSION) == 0;
}

static bool
extension_is_current(void)
{
	return IngestIsLibraryVersion(extension_version());
}

/*
 * Connect to SPI for a lookup of ingest's configuration: true if the
 * extension is at this library's version, else false, not connected.
 */
static bool
connect_current(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (extension_is_current())
		return true;
	SPI_finish();
	return false;
}

/* Refuse to write through the SQL objects of another version (v). */
static void
refuse_other_version(const char *v)
{
	if (v != NULL && !IngestIsLibraryVersion(v))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"ingest\" is at version %s, its library at version %s",
						v, INGEST_VERSION),
				 errhint("Run ALTER EXTENSION ingest UPDATE, or install the library of the extension's version.")));
}

void
IngestRequireCurrentVersion(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	refuse_other_version(extension_version());
	SPI_finish();
}

/*
 * A configuration whose side tables are gone was read in a snapshot older
 * than the change that dropped them (an unmanage, under REPEATABLE READ
 * or while a statement waited for a lock).  A writer gets 40001, as a
 * retry sees the table as it is now, rather than "not ready", a write to
 * a dropped table, or (after a manage again, whose triggers fire) rows
 * passed through unclaimed; a reader (stale_is_error false) finds the
 * table not ready.
 */
static void
check_side_tables(Oid relid, IngestTable *t, bool stale_is_error)
{
	Oid			side[4] = {t->ledger, t->rollup_hours, t->rollup_deltas, t->rollup_stale};

	for (int i = 0; i < lengthof(side); i++)
	{
		if (!OidIsValid(side[i]) || SearchSysCacheExists1(RELOID, ObjectIdGetDatum(side[i])))
			continue;
		if (!stale_is_error)
		{
			t->ready = false;
			return;
		}
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to a concurrent change of table \"%s\"",
						get_rel_name(relid)),
				 errdetail("Its side tables were dropped after this transaction's snapshot was taken.")));
	}
}

/*
 * lookup_table in this statement's snapshot, else in a new one, as the
 * catalogs are read: the triggers that fire are the catalog's, and a
 * REPEATABLE READ transaction may write a table made or adopted since its
 * snapshot.  Its rows must be claimed and counted like any other's (the
 * dedup trigger took it for a table not managed), and its side state,
 * written since, is read as of now too (latest_snapshot): a DELETE must
 * find the keys the adoption claimed.
 */
static bool
lookup_table_now(Oid relid, IngestTable *t, bool read_only, bool stale_is_error)
{
	if (lookup_table(relid, t, read_only))
	{
		check_side_tables(relid, t, stale_is_error);
		return true;
	}
	PushActiveSnapshot(GetLatestSnapshot());
	t->latest_snapshot = lookup_table(relid, t, true);
	PopActiveSnapshot();
	return t->latest_snapshot;
}

/*
 * Look up a managed table (a partitioned table, not one of its
 * partitions).  False when ingest does not manage it.  On a Citus node, a
 * shard of a table distributed by ingest.distribute_table() that the node's
 * worker has not adopted yet (fold.c) is adopted as a managed table of the
 * node when it is looked up in a transaction that may write (citus.c).
 */
static bool
lookup_managed(Oid relid, IngestTable *t, bool stale_is_error)
{
	bool		found;

	memset(t, 0, sizeof(IngestTable));
	if (!connect_current())
		return false;
	found = lookup_table_now(relid, t, true, stale_is_error);
	/* read again past the row just written: not in a read-only snapshot */
	if (!found && IngestCitusAdoptShard(relid))
		found = lookup_table(relid, t, false);
	SPI_finish();
	return found;
}

/* lookup_managed for those who write the table or its side state */
bool
IngestLookupTable(Oid relid, IngestTable *t)
{
	return lookup_managed(relid, t, true);
}

/*
 * The managed table whose side table relid is (ingest.table_config names
 * them), or InvalidOid.
 */
Oid
IngestSideTableOf(Oid relid)
{
	Datum		arg = ObjectIdGetDatum(relid);
	Oid			tbl = InvalidOid;
	bool		isnull;
	int			rc;

	if (!connect_current())
		return InvalidOid;
	rc = SPI_execute_with_args(
		"SELECT c.event_table FROM ingest.table_config c "
		" WHERE $1 OPERATOR(pg_catalog.=) ANY (ARRAY[c.ledger, c.rollup_hours, c.rollup_deltas, "
		"                                            c.rollup_stale, c.rollup_days]::pg_catalog.oid[])",
		1, (Oid[]) {OIDOID}, &arg, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the side tables of ingest.table_config: %s",
			 SPI_result_code_string(rc));
	if (SPI_processed == 1)
		tbl = regclass_at(1, &isnull);
	SPI_finish();
	return tbl;
}

/*
 * The one test of "ingest's dedup trigger is on relid": a trigger named
 * INGEST_DEDUP_TRIGGER (Citus names its copy on a shard <name>_<shardid>)
 * whose function is ours (a name can be anyone's).  Read in the catalog
 * snapshot, as the executor finds the triggers it fires.
 */
static bool
has_dedup_trigger(Oid relid, bool citus_shard)
{
	Relation	trig = table_open(TriggerRelationId, AccessShareLock);
	size_t		len = strlen(INGEST_DEDUP_TRIGGER);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	ScanKeyInit(&key, Anum_pg_trigger_tgrelid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(trig, TriggerRelidNameIndexId, true, NULL, 1, &key);
	while (!found && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_trigger tg = (Form_pg_trigger) GETSTRUCT(tup);
		const char *name = NameStr(tg->tgname);
		bool		named = strcmp(name, INGEST_DEDUP_TRIGGER) == 0;

		if (!named && citus_shard && strncmp(name, INGEST_DEDUP_TRIGGER, len) == 0 &&
			name[len] == '_' && name[len + 1] != '\0')
			named = strspn(name + len + 1, "0123456789") == strlen(name + len + 1);
		found = named && IngestIsOwnTriggerFunction(tg->tgfoid, false);
	}
	systable_endscan(scan);
	table_close(trig, AccessShareLock);
	return found;
}

/*
 * Whether ingest's dedup trigger is on a table that no configuration
 * names: a schema-only restore made the triggers, and the configuration
 * is still to come (a data-only restore is under way).  Partitions carry
 * clones of it, and Citus's shards copies of their own names: neither
 * counts.
 */
bool
IngestTriggersAheadOfConfiguration(void)
{
	Datum		arg = CStringGetTextDatum(INGEST_DEDUP_TRIGGER);
	bool		ahead = false;
	uint64		i;
	int			rc;

	if (!connect_current())
		return false;
	/* the tables with a trigger of the name: has_dedup_trigger decides */
	rc = SPI_execute_with_args(
		"SELECT t.tgrelid FROM pg_catalog.pg_trigger t "
		"  JOIN pg_catalog.pg_class r ON r.oid OPERATOR(pg_catalog.=) t.tgrelid "
		" WHERE t.tgname OPERATOR(pg_catalog.=) $1 AND NOT r.relispartition "
		"   AND NOT EXISTS (SELECT FROM ingest.table_config c "
		"                    WHERE c.event_table OPERATOR(pg_catalog.=) t.tgrelid)",
		1, (Oid[]) {TEXTOID}, &arg, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read ingest's triggers: %s", SPI_result_code_string(rc));
	for (i = 0; i < SPI_processed && !ahead; i++)
	{
		bool		isnull;

		ahead = has_dedup_trigger(regclass_at_row(i, 1, &isnull), false);
	}
	SPI_finish();
	return ahead;
}

/*
 * The one definition of "on Citus": a managed table's side state is on
 * Citus shards when Citus holds its ledger.  (A shard's ledger is a shard,
 * which Citus does not list.)
 */
static bool
side_state_distributed(bool citus_shard, Oid ledger)
{
	return !citus_shard && OidIsValid(ledger) && IngestCitusTable(ledger);
}

/* IngestLookupTable's reading of ingest.table_config (SPI connected). */
static bool
lookup_table(Oid relid, IngestTable *t, bool read_only)
{
	Datum		arg = ObjectIdGetDatum(relid);
	bool		isnull;
	int			rc;
	char	   *on_error;
	char	   *managed_by;

	/*
	 * A configuration row whose table is gone (dropped with event triggers
	 * off, so that nothing cleaned up) manages nothing.
	 */
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		return false;

	rc = SPI_execute_with_args(
		"SELECT c.on_error, c.managed_by, "
		"       c.ledger, c.rollup_hours, c.rollup_deltas, c.rollup_stale "
		"  FROM ingest.table_config c "
		" WHERE c.event_table OPERATOR(pg_catalog.=) $1",
		1, (Oid[]) {OIDOID}, &arg, NULL, read_only, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the configuration of table %u: %s", relid,
			 SPI_result_code_string(rc));
	if (SPI_processed != 1)
		return false;

	on_error = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	managed_by = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	t->relid = relid;
	t->owner = IngestRelationOwner(relid);
	t->abort_on_error = on_error && strcmp(on_error, "abort") == 0;
	t->partman = managed_by && strcmp(managed_by, "pg_partman") == 0;
	t->citus_shard = managed_by && strcmp(managed_by, "citus_shard") == 0;
	t->ledger = regclass_at(3, &isnull);
	t->rollup_hours = regclass_at(4, &isnull);
	t->rollup_deltas = regclass_at(5, &isnull);
	t->rollup_stale = regclass_at(6, &isnull);
	t->ready = OidIsValid(t->ledger) && has_dedup_trigger(relid, t->citus_shard);
	t->distributed = side_state_distributed(t->citus_shard, t->ledger);
	return true;
}

/* 55000 naming the table, unless ingest manages it and it is ready. */
static void
require_ready(Oid relid, bool found, const IngestTable *t)
{
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not managed by ingest",
						get_rel_name(relid) ? get_rel_name(relid) : "?"),
				 errhint("Use ingest.create_event_table() or ingest.manage_table() first.")));
	if (!t->ready)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not ready: its ingest triggers are missing",
						get_rel_name(relid)),
				 errdetail("A restore of the table may still be running.")));
}

/*
 * 55000 unless the extension is at this library's version and the table,
 * as IngestLookupTable found it (found, t), is managed and ready.
 */
void
IngestRequireTable(Oid relid, bool found, const IngestTable *t)
{
	IngestRequireCurrentVersion();
	require_ready(relid, found, t);
}

/*
 * Lock a managed table for a load (RowExclusiveLock, as COPY FROM takes)
 * and read its configuration again under the lock.  Callers look a table
 * up before locking it, so that a load never locks a table ingest does not
 * manage; by the time the lock is granted, an unmanage, a DROP TABLE or a
 * new trigger may have committed.  The second look reads in a new snapshot,
 * as the next statement would.  A transaction snapshot (REPEATABLE READ)
 * may still show side tables that are gone: that fails with 40001 rather
 * than write to them.  Without missing_ok, a table dropped fails with
 * 42P01 and one no longer managed and ready with 55000; with it, the
 * result is NULL (the lock is kept: COPY, which the caller then runs,
 * takes the same).
 */
Relation
IngestOpenForLoad(Oid relid, IngestTable *t, bool missing_ok)
{
	Relation	rel = try_relation_open(relid, RowExclusiveLock);
	char	   *version;
	bool		current;
	bool		found;

	if (rel == NULL && missing_ok)
		return NULL;
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	memset(t, 0, sizeof(IngestTable));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/*
	 * An ALTER EXTENSION UPDATE may have committed meanwhile, too: COPY's
	 * triggers would not see it either, so missing_ok does not cover it.
	 */
	version = IngestExtensionVersionLatest();
	current = IngestIsLibraryVersion(version);
	refuse_other_version(version);
	found = current && lookup_table_now(relid, t, false, true);
	SPI_finish();
	if (missing_ok && !(found && t->ready))
	{
		relation_close(rel, NoLock);
		return NULL;
	}
	require_ready(relid, found, t);
	return rel;
}

PG_FUNCTION_INFO_V1(ingest_lock_table);

/*
 * ingest_internal.lock_table(tbl oid, wait boolean, mode text): a lock on a
 * table by OID (a name could be another table's by the time it is locked,
 * and Citus rewrites LOCK TABLE), held to the end of the transaction: mode
 * 'access share', 'row share' or 'share update exclusive' (what ATTACH
 * PARTITION takes) on the table alone, or 'share row exclusive', 'exclusive' or 'access
 * exclusive' on the table and then its partitions, as LOCK TABLE takes it.
 * Without wait, false when the lock is not free now.  False also when the
 * table went while the lock was waited for.
 */
Datum
ingest_lock_table(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *mode = text_to_cstring(PG_GETARG_TEXT_PP(2));
	LOCKMODE	lockmode;

	if (strcmp(mode, "access share") == 0)
		lockmode = AccessShareLock;
	else if (strcmp(mode, "row share") == 0)
		lockmode = RowShareLock;
	else if (strcmp(mode, "share update exclusive") == 0)
		lockmode = ShareUpdateExclusiveLock;
	else if (strcmp(mode, "share row exclusive") == 0)
		lockmode = ShareRowExclusiveLock;
	else if (strcmp(mode, "exclusive") == 0)
		lockmode = ExclusiveLock;
	else if (strcmp(mode, "access exclusive") == 0)
		lockmode = AccessExclusiveLock;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unrecognized lock mode \"%s\"", mode)));
	/* the partitions would be waited for all the same */
	if (!PG_GETARG_BOOL(1) && lockmode > ShareUpdateExclusiveLock)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lock mode \"%s\" requires wait", mode)));
	if (PG_GETARG_BOOL(1))
		LockRelationOid(relid, lockmode);
	else if (!ConditionalLockRelationOid(relid, lockmode))
		PG_RETURN_BOOL(false);
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
	{
		UnlockRelationOid(relid, lockmode);
		PG_RETURN_BOOL(false);
	}
	if (lockmode > ShareUpdateExclusiveLock)
		list_free(find_all_inheritors(relid, lockmode, NULL));
	PG_RETURN_BOOL(true);
}

PG_FUNCTION_INFO_V1(ingest_on_citus);

/*
 * ingest_internal.on_citus(tbl): whether a managed table's side state is on
 * Citus shards (IngestTable.distributed: the one definition), for the SQL
 * side.  It adopts no shard.
 */
Datum
ingest_on_citus(PG_FUNCTION_ARGS)
{
	Datum		arg = PG_GETARG_DATUM(0);
	bool		distributed = false;
	bool		isnull;
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* its config alone: the table may be being dropped (forget_table) */
	rc = SPI_execute_with_args(
		"SELECT COALESCE(c.managed_by OPERATOR(pg_catalog.=) 'citus_shard', false), c.ledger "
		"  FROM ingest.table_config c WHERE c.event_table OPERATOR(pg_catalog.=) $1",
		1, (Oid[]) {OIDOID}, &arg, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the configuration of table %u: %s",
			 DatumGetObjectId(arg), SPI_result_code_string(rc));
	if (SPI_processed == 1)
		distributed = side_state_distributed(DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
																		SPI_tuptable->tupdesc,
																		1, &isnull)),
											 regclass_at(2, &isnull));
	SPI_finish();
	PG_RETURN_BOOL(distributed);
}

PG_FUNCTION_INFO_V1(ingest_table_ready);

/*
 * ingest_internal.ready(tbl): managed, and its triggers in place.  The
 * worker asks it of every table in one statement: one unmanaged since is
 * not ready, not an error of the whole run.
 */
Datum
ingest_table_ready(PG_FUNCTION_ARGS)
{
	IngestTable t;

	PG_RETURN_BOOL(lookup_managed(PG_GETARG_OID(0), &t, false) && t.ready);
}

PG_FUNCTION_INFO_V1(ingest_require_owner);

/* ingest_internal.require_owner(tbl): 42501 unless the caller owns tbl. */
Datum
ingest_require_owner(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	if (!has_privs_of_role(IngestCaller(), owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of table %s", get_rel_name(relid))));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(ingest_require_reader);

/*
 * ingest_internal.require_reader(tbl): 42501 unless the caller may SELECT
 * tbl, 0A000 when row-level security filters tbl for the caller (what
 * ingest reads from its side tables aggregates every row).
 */
Datum
ingest_require_reader(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *name = get_rel_name(relid);

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (pg_class_aclcheck(relid, IngestCaller(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", name)));
	if (check_enable_rls(relid, IngestCaller(), true) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("ingest cannot apply the row-level security of table \"%s\"", name),
				 errdetail("Rollups aggregate every event; row-level security filters them for this role.")));
	PG_RETURN_VOID();
}
