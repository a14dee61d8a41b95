/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  Managed tables on Citus: which writes ingest takes on which node, and
 *	  which it refuses.
 *
 * On Citus a distributed table's rows live in shards on the nodes, and the
 * coordinator's table is an empty shell.  ingest.distribute_table()
 * (sql/ingest/70_citus.sql) distributes a managed table by organization_id
 * with its side tables colocated, and each node adopts the shards it holds
 * as managed tables of its own (managed_by 'citus_shard'), so the loader,
 * the triggers and the fold run on a shard as on any managed table:
 *
 *	  IngestCitusAdoptShard	 a shard of such a table, placed on this node, is
 *							 made a managed table when it is looked up before
 *							 the node's worker adopted it (managed.c; the
 *							 worker: fold.c);
 *	  IngestCitusSession	 one of Citus's own connections;
 *	  IngestCitusShardWritable  COPY into a shard is loaded only for Citus's
 *							 own sessions (Citus refuses users' direct writes);
 *	  IngestCitusTable		 whether Citus holds a table (its side state, its
 *							 retention by plain DETACH: maintenance.c).
 *
 * A table that Citus distributed otherwise keeps its side state on the
 * coordinator, where its shards' writes never reach it:
 *
 *	  IngestRefuseCitus		 ingest.load of a shard, and the loader, COPY
 *							 through the hook and manage_table of a table
 *							 Citus holds otherwise, refuse it (checked under
 *							 the table's lock: Citus distributes a table
 *							 under a lock that conflicts with it);
 *	  IngestRefuseCitusTrigger  ingest's triggers firing on a relation that
 *							 no managed table of this node owns refuse the
 *							 write on a Citus worker node and on a shard
 *							 anywhere, failing closed where Citus's metadata
 *							 is not on the node, but let by the rows Citus
 *							 copies with their side state into a shard moving
 *							 in;
 *	  IngestRefuseCitusWorker	 ingest.load on a worker node says where to load.
 *
 * Nothing here acts where the citus extension is not installed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "access/genam.h"
#include "access/parallel.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "loader.h"

static char *citus_value(const char *sql, Oid argtype, Datum arg, MemoryContext into);
static bool citus_known_shard(Oid relid);

static bool
citus_installed(void)
{
	return OidIsValid(get_extension_oid("citus", true));
}

/*
 * Whether Citus's catalog, read with the latest catalog snapshot, lists
 * relid as a Citus table (distributed, reference or local).
 */
static bool
citus_lists_table(Oid relid)
{
	Oid			catalog = get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE);
	Relation	dist;
	SysScanDesc scan;
	ScanKeyData key;
	bool		found;

	if (!OidIsValid(catalog))
		return false;
	dist = table_open(catalog, AccessShareLock);
	/* logicalrelid, the first column */
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(dist, InvalidOid, false, NULL, 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(dist, AccessShareLock);
	return found;
}

/* Whether relid is a table Citus holds (distributed, reference or local). */
bool
IngestCitusTable(Oid relid)
{
	return citus_installed() && citus_lists_table(relid);
}

/*
 * The shard id in a relation's name, when it is named as Citus names a
 * shard, <table>_<shardid>; 0 otherwise.  (Whether it is one is Citus's
 * metadata to say.)
 */
static int64
shard_id_of(Oid relid)
{
	char	   *name = get_rel_name(relid);
	size_t		len;
	size_t		digits = 0;

	if (name == NULL)
		return 0;
	len = strlen(name);
	while (digits < len && isdigit((unsigned char) name[len - 1 - digits]))
		digits++;
	if (digits == 0 || digits > 18 || digits == len || name[len - 1 - digits] != '_')
		return 0;
	return pg_strtoint64(name + len - digits);
}

/*
 * Whether "relid" belongs to a shard that Citus is copying into this node
 * (a shard move or split) and that has no placement here yet (SPI
 * connected): its rows come with their keys and rollups, copied as they are.
 */
static bool
shard_arriving(Oid relid)
{
	Oid			root = IngestRootOf(relid);
	int64		shardid = shard_id_of(root);
	char	   *placed;

	if (shardid == 0 || !citus_known_shard(root))
		return false;
	/* ingest's internal function, whoever writes */
	AS_OWNER(IngestExtensionOwner(),
			 placed = citus_value("SELECT ingest_internal.citus_placed_here($1)",
								  INT8OID, Int64GetDatum(shardid), CurrentMemoryContext));
	return placed != NULL && strcmp(placed, "f") == 0;
}

/*
 * IngestCitusAdoptShard (SPI connected): on a Citus node, make "relid" a
 * managed table of this node when it is a shard, placed here, of a table
 * that ingest.distribute_table() distributed (ingest_internal.adopt_shard).
 * Only where the transaction may write; false for anything else.
 */
bool
IngestCitusAdoptShard(Oid relid)
{
	int64		shardid;
	Datum		args[2];
	bool		adopted = false;
	int			rc;

	if (!citus_installed() || RecoveryInProgress() || XactReadOnly || IsInParallelMode() ||
		get_rel_relkind(relid) != RELKIND_PARTITIONED_TABLE)
		return false;
	shardid = shard_id_of(relid);
	if (shardid == 0)
		return false;

	args[0] = ObjectIdGetDatum(relid);
	args[1] = Int64GetDatum(shardid);
	AS_OWNER(IngestExtensionOwner(),
			 rc = SPI_execute_with_args("SELECT ingest_internal.adopt_shard($1, $2)",
										2, (Oid[]) {REGCLASSOID, INT8OID}, args, NULL, false, 1));
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not adopt shard %u: %s", relid, SPI_result_code_string(rc));
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		adopted = !isnull && DatumGetBool(d);
	}
	return adopted;
}

/* Run a one-row, one-column query of Citus's (SPI connected); NULL if none. */
static char *
citus_value(const char *sql, Oid argtype, Datum arg, MemoryContext into)
{
	char	   *v;

	if (SPI_execute_with_args(sql, argtype ? 1 : 0, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read Citus's metadata: %s", sql);
	if (SPI_processed != 1)
		return NULL;
	v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return v ? MemoryContextStrdup(into, v) : NULL;
}

/*
 * IngestRefuseCitus: 0A000 when the managed table "rel" (locked by the
 * caller) is one that the loader cannot write: a table Citus holds without
 * ingest.distribute_table() (the side state is not on its shards), or, for
 * ingest.load, a shard of one (ingest.load of the distributed table sends
 * its rows to the shards: citusload.c).  "t" is NULL from manage_table.
 * "action" says what is refused ("load managed table").
 */
void
IngestRefuseCitus(Relation rel, IngestTable *t, const char *action)
{
	Oid			relid = RelationGetRelid(rel);
	MemoryContext cxt = CurrentMemoryContext;
	char	   *column;
	char	   *name = pstrdup(RelationGetRelationName(rel));

	if (t != NULL && t->citus_shard)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s \"%s\": it is a Citus shard", action, name),
				 errhint("Load the distributed table on the Citus coordinator.")));
	if (t != NULL && t->distributed)
		return;
	if (!citus_installed() || !citus_lists_table(relid))
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	column = citus_value("SELECT pg_catalog.column_to_column_name(p.logicalrelid, p.partkey) "
						 "  FROM pg_catalog.pg_dist_partition p "
						 " WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1",
						 OIDOID, ObjectIdGetDatum(relid), cxt);
	SPI_finish();

	if (column == NULL || strcmp(column, "organization_id") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s \"%s\": Citus %s", action, name,
						column ? psprintf("distributes it by \"%s\"", column)
						: "holds it without a distribution column (a reference, single-shard or local table)"),
				 errdetail("ingest deduplicates on (organization_id, transaction_id): only a table distributed by organization_id keeps each key on one shard."),
				 errhint("Unmanage it with ingest.unmanage_table(); distribute a managed table with ingest.distribute_table().")));
	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s \"%s\": it is distributed by Citus", action, name),
				 errdetail("ingest keeps a table's key ledger and rollups on its shards only when ingest.distribute_table() distributes it."),
				 errhint("Undistribute it with undistribute_table(), manage it, then distribute it with ingest.distribute_table().")));
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot %s \"%s\": Citus distributes it without its key ledger and rollups", action, name),
			 errdetail("It was distributed with create_distributed_table(), which leaves ingest's side state on the coordinator, so writes to it would not be deduplicated or counted."),
			 errhint("Unmanage it with ingest.unmanage_table(); distribute a managed table with ingest.distribute_table().")));
}

/*
 * Whether this session is one of Citus's own connections (a name alone,
 * without Citus, is not).
 */
bool
IngestCitusSession(void)
{
	return application_name && strncmp(application_name, "citus_internal", 14) == 0 &&
		citus_installed();
}

/*
 * Whether this session may write a shard directly: Citus's own connections
 * do, and users with citus.enable_manual_changes_to_shards.  Otherwise
 * the COPY hook leaves a shard to Citus, which refuses.
 */
bool
IngestCitusShardWritable(void)
{
	const char *manual = GetConfigOption("citus.enable_manual_changes_to_shards", true, false);

	/* a placeholder setting alone, without Citus, is no shard */
	return IngestCitusSession() || (manual && strcmp(manual, "on") == 0 && citus_installed());
}

/* Whether relid is a shard Citus knows of (SPI connected). */
static bool
citus_known_shard(Oid relid)
{
	char	   *v = citus_value("SELECT pg_catalog.relation_is_a_known_shard($1)",
								REGCLASSOID, ObjectIdGetDatum(relid), CurrentMemoryContext);

	return v != NULL && strcmp(v, "t") == 0;
}

/* Whether this node is a Citus coordinator with workers (SPI connected). */
static bool
citus_coordinator(void)
{
	char	   *v = citus_value("SELECT pg_catalog.citus_is_coordinator()", InvalidOid, (Datum) 0,
								CurrentMemoryContext);

	return v != NULL && strcmp(v, "t") == 0;
}

/*
 * IngestRefuseCitusTrigger: ingest's trigger fired on "relid", which no
 * managed table of this node owns.  On a Citus worker node, or on a shard,
 * that is a write that Citus sent to a shard of a table it distributed
 * without ingest.distribute_table(): refused.  Rows that Citus copies into
 * a shard it is moving here come with their keys and rollups: let by.
 * On a worker whose Citus metadata is missing, what the relation is cannot
 * be told: refused too (fail closed).  Elsewhere (a partition detached by
 * hand keeps its triggers) nothing.
 */
void
IngestRefuseCitusTrigger(Oid relid)
{
	bool		refuse;
	char	   *name;

	if (!citus_installed())
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	refuse = (!citus_coordinator() || citus_known_shard(relid)) && !shard_arriving(relid);
	SPI_finish();
	if (!refuse)
		return;
	name = get_rel_name(relid);
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot write \"%s\" through ingest's triggers on a Citus shard or worker node",
					name ? name : "?"),
			 errdetail("ingest does not yet support tables distributed by Citus: its key ledger and rollups are not on the shards, so the write would not be deduplicated or counted."),
			 errhint("On the coordinator, unmanage the table with ingest.unmanage_table(), or drop ingest's triggers from a table ingest no longer manages (with citus.enable_unsafe_triggers on).")));
}

/*
 * IngestRefuseCitusWorker: ingest.load of a table this node does not manage,
 * on a Citus worker node: say where managed tables are loaded.
 */
void
IngestRefuseCitusWorker(Oid relid, const char *action)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		worker;
	char	   *coordinator = NULL;
	char	   *name;

	if (!citus_installed() || !citus_lists_table(relid))
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	worker = !citus_coordinator();
	if (worker)
		coordinator = citus_value("SELECT pg_catalog.format('%s:%s', n.nodename, n.nodeport) "
								  "  FROM pg_catalog.pg_dist_node n "
								  " WHERE n.groupid OPERATOR(pg_catalog.=) 0 AND n.isactive "
								  "   AND n.noderole OPERATOR(pg_catalog.=) 'primary' LIMIT 1",
								  InvalidOid, (Datum) 0, cxt);
	SPI_finish();
	if (!worker)
		return;
	name = get_rel_name(relid);
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot %s \"%s\" on a Citus worker node", action, name ? name : "?"),
			 errdetail("Managed tables are loaded and managed on the Citus coordinator%s%s%s.",
					   coordinator ? " (" : "", coordinator ? coordinator : "",
					   coordinator ? ")" : ""),
			 errhint("Connect to the coordinator.")));
}

PG_FUNCTION_INFO_V1(ingest_refuse_citus);

/* ingest_internal.refuse_citus(tbl, action), for manage_table */
Datum
ingest_refuse_citus(PG_FUNCTION_ARGS)
{
	Relation	rel = table_open(PG_GETARG_OID(0), AccessShareLock);

	IngestRefuseCitus(rel, NULL, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(ingest_citus_holds);

/* ingest_internal.citus_holds(rel): IngestCitusTable, for the SQL side */
Datum
ingest_citus_holds(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(IngestCitusTable(PG_GETARG_OID(0)));
}

PG_FUNCTION_INFO_V1(ingest_citus_shard_id);

/*
 * ingest_internal.citus_shard_id(rel): the shard id that a relation's name
 * carries, NULL if none (whether it is a shard is pg_dist_shard's to say)
 */
Datum
ingest_citus_shard_id(PG_FUNCTION_ARGS)
{
	int64		shardid = shard_id_of(PG_GETARG_OID(0));

	if (shardid == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(shardid);
}
