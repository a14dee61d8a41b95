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
 * worker finds no managed table and would store every duplicate.  So every
 * way of writing such a table is refused with 0A000: the loader and COPY
 * through the hook on the coordinator, ingest.load on a worker, and the
 * triggers on the shards (INSERT, COPY, UPDATE, DELETE that Citus sends
 * there).  Unmanaging or dropping the table still works.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "loader.h"

/*
 * The Citus table a relation belongs to: itself, or the table one of whose
 * shards it is (a shard is named <table>_<shard id>).  InvalidOid if none,
 * or where Citus is not installed.  Needs SPI connected.
 */
static Oid
citus_table_of(Oid relid, bool *is_shard)
{
	const char *name = get_rel_name(relid);
	const char *p;
	Datum		args[2];
	int			rc;
	bool		isnull;
	Oid			table = InvalidOid;

	*is_shard = false;
	rc = SPI_execute_with_args(
		"SELECT p.logicalrelid FROM pg_catalog.pg_dist_partition p "
		" WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1",
		1, (Oid[]) {OIDOID}, (Datum[]) {ObjectIdGetDatum(relid)}, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_dist_partition: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
		return relid;

	/* a shard: its name ends in _<shard id>, and Citus knows it */
	if (name == NULL)
		return InvalidOid;
	p = name + strlen(name);
	while (p > name && isdigit((unsigned char) p[-1]))
		p--;
	if (p == name + strlen(name) || p == name || p[-1] != '_' || strlen(p) > 18)
		return InvalidOid;
	args[0] = Int64GetDatum(strtoll(p, NULL, 10));
	args[1] = ObjectIdGetDatum(relid);
	rc = SPI_execute_with_args(
		"SELECT s.logicalrelid FROM pg_catalog.pg_dist_shard s "
		" WHERE s.shardid OPERATOR(pg_catalog.=) $1 "
		"   AND pg_catalog.relation_is_a_known_shard($2)",
		2, (Oid[]) {INT8OID, REGCLASSOID}, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_dist_shard: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		table = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
		*is_shard = true;
	}
	return table;
}

/*
 * Refuse (0A000) to "action" a relation that is, or is a shard of, a Citus
 * table.  "action" says what was refused ("load managed table").  Returns
 * quietly where Citus is not installed in this database.
 */
void
IngestRefuseCitus(Oid relid, const char *action)
{
	Oid			table;
	bool		is_shard;
	char	   *column = NULL;
	bool		coordinator = true;
	char	   *coordinator_at = NULL;
	char	   *name;

	if (!OidIsValid(get_extension_oid("citus", true)))
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	table = citus_table_of(relid, &is_shard);
	if (!OidIsValid(table))
	{
		SPI_finish();
		return;
	}
	/* a partition's distribution is its table's */
	table = IngestRootOf(table);
	if (SPI_execute_with_args(
			"SELECT pg_catalog.column_to_column_name(p.logicalrelid, p.partkey), "
			"       pg_catalog.citus_is_coordinator(), "
			"       (SELECT pg_catalog.format('%s:%s', n.nodename, n.nodeport) "
			"          FROM pg_catalog.pg_dist_node n "
			"         WHERE n.groupid OPERATOR(pg_catalog.=) 0 LIMIT 1) "
			"  FROM pg_catalog.pg_dist_partition p "
			" WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1",
			1, (Oid[]) {OIDOID}, (Datum[]) {ObjectIdGetDatum(table)},
			NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;
		char	   *at;

		column = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		coordinator = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 2, &isnull)) || isnull;
		at = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
		/* out of SPI's memory, which SPI_finish releases */
		column = column ? pstrdup(column) : NULL;
		coordinator_at = at ? pstrdup(at) : NULL;
	}
	name = get_rel_name(table) ? pstrdup(get_rel_name(table)) : "?";
	SPI_finish();

	/* a shard is written by what Citus sends it: the table's own error */
	if (!coordinator && !is_shard)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s \"%s\" on a Citus worker node", action, name),
				 errdetail("Managed tables are loaded and managed on the Citus coordinator%s%s%s.",
						   coordinator_at ? " (" : "", coordinator_at ? coordinator_at : "",
						   coordinator_at ? ")" : ""),
				 errhint("Connect to the coordinator.")));
	if (column == NULL || strcmp(column, "organization_id") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s \"%s\": Citus %s", action, name,
						column ? psprintf("distributes it by \"%s\"", column)
						: "holds it as a reference or local table"),
				 errdetail("ingest deduplicates on (organization_id, transaction_id): only a table distributed by organization_id keeps each key on one shard."),
				 errhint("Unmanage it with ingest.unmanage_table(), or undistribute it with undistribute_table().")));
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot %s \"%s\": it is distributed by Citus", action, name),
			 errdetail("ingest does not yet keep its key ledger and rollups on the table's shards, so writes to it would not be deduplicated or counted."),
			 errhint("Unmanage it with ingest.unmanage_table(), or undistribute it with undistribute_table().")));
}

PG_FUNCTION_INFO_V1(ingest_refuse_citus);

/* ingest_internal.refuse_citus(tbl, action) */
Datum
ingest_refuse_citus(PG_FUNCTION_ARGS)
{
	IngestRefuseCitus(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_VOID();
}
