/*-------------------------------------------------------------------------
 *
 * usage.c
 *	  ingest.usage(): an organization's usage from the rollups.
 *
 * The rows come from ingest_internal.usage_rows() (SQL), which reads the
 * table's rollup side tables as readers must (folded rows and deltas where
 * an hour is not stale, raw events where it is, as the table's owner) in
 * one statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/rls.h"

#include "loader.h"

PG_FUNCTION_INFO_V1(ingest_usage);

/*
 * ingest.usage(...): the caller needs SELECT on the event table; the rows
 * come from ingest_internal.usage_rows(), run as the extension owner, whose
 * side tables users have no grants on; it reads raw events through
 * ingest_internal.owner_query(), as the table's owner.
 */
Datum
ingest_usage(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			types[9] = {OIDOID, UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[9];
	char		nulls[9];
	Oid			owner;
	uint64		i;
	int			rc;
	int			k;

	InitMaterializedSRF(fcinfo, 0);
	if (!PG_ARGISNULL(0) &&
		pg_class_aclcheck(PG_GETARG_OID(0), GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE,
					   get_rel_name(PG_GETARG_OID(0)) ? get_rel_name(PG_GETARG_OID(0)) : "?");

	/* rollups aggregate every row: a caller RLS filters cannot have them */
	if (!PG_ARGISNULL(0) && check_enable_rls(PG_GETARG_OID(0), InvalidOid, true) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("ingest.usage() cannot apply the row-level security of table \"%s\"",
						get_rel_name(PG_GETARG_OID(0))),
				 errdetail("Rollups aggregate every event; row-level security filters them for this role."),
				 errhint("Aggregate the events of the table itself, which applies its policies.")));

	for (k = 0; k < 9; k++)
	{
		nulls[k] = PG_ARGISNULL(k) ? 'n' : ' ';
		args[k] = PG_ARGISNULL(k) ? (Datum) 0 : PG_GETARG_DATUM(k);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	owner = IngestExtensionOwner();
	AS_OWNER(owner, rc = SPI_execute_with_args(
		"SELECT * FROM ingest_internal.usage_rows($1, $2, $3, $4, $5, $6, $7, $8, $9)",
		9, types, args, nulls, true, 0));
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not compute usage: %s", SPI_result_code_string(rc));
	for (i = 0; i < SPI_processed; i++)
	{
		Datum		row[11];
		bool		rownulls[11];
		int			j;

		for (j = 0; j < 11; j++)
			row[j] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, j + 1,
								   &rownulls[j]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, rownulls);
	}
	SPI_finish();
	return (Datum) 0;
}
