/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  Managed tables that Citus distributes: refused, in one place, until
 *	  ingest keeps its side state on the table's shards.
 *
 * On Citus a distributed table's rows live in shards on the worker nodes,
 * and the coordinator's table is an empty shell.  ingest's key ledger and
 * rollups are tables of the node that manages the table: a load on the
 * coordinator would write into the shell (rows no query sees, deduplicated
 * against a ledger of its own), and a shard's copy of ingest's triggers on a
 * worker finds no managed table and would store every duplicate.  So:
 *
 *	  IngestRefuseCitus		 the loader, COPY through the hook and
 *							 manage_table refuse a table Citus distributes
 *							 (checked under the table's lock, against the
 *							 latest catalog: Citus distributes a table under a
 *							 lock that conflicts with it);
 *	  IngestRefuseCitusTrigger  ingest's triggers firing on a relation that
 *							 no managed table of this node owns refuse the
 *							 write on a Citus worker node and on a shard
 *							 anywhere, failing closed where Citus's metadata
 *							 is not on the node;
 *	  IngestRefuseCitusWorker	 ingest.load on a worker node says where to load.
 *
 * Nothing here acts where the citus extension is not installed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "access/genam.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "loader.h"

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
 * IngestRefuseCitus: 0A000 when Citus lists the managed table "rel" (locked
 * by the caller).  "action" says what is refused ("load managed table").
 */
void
IngestRefuseCitus(Relation rel, const char *action)
{
	Oid			relid = RelationGetRelid(rel);
	MemoryContext cxt = CurrentMemoryContext;
	char	   *column;
	char	   *name = pstrdup(RelationGetRelationName(rel));

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
				 errhint("ingest does not yet support tables that Citus holds: unmanage it with ingest.unmanage_table().")));
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot %s \"%s\": it is distributed by Citus", action, name),
			 errdetail("ingest does not yet keep its key ledger and rollups on the table's shards, so writes to it would not be deduplicated or counted."),
			 errhint("Unmanage it with ingest.unmanage_table().")));
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
 * that is a write that Citus sent to a shard of a managed table: refused.
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
	refuse = !citus_coordinator() || citus_known_shard(relid);
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

	IngestRefuseCitus(rel, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}
