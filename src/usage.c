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
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/rls.h"

#include "loader.h"

PG_FUNCTION_INFO_V1(ingest_usage);

/*
 * ingest.usage(...): the caller needs SELECT on the event table; the rows
 * come from ingest_internal.usage_rows(), run as the extension owner, whose
 * side tables users have no grants on; it reads raw events through
 * ingest_internal.owner_query(), as the table's owner.  usage_rows is
 * called directly (the extension owner owns it: no EXECUTE check to make)
 * with this call's ReturnSetInfo, so that the result it builds is ours as
 * it stands: an answer per day can be tens of thousands of rows, and
 * copying them cost more than computing them.
 */
Datum
ingest_usage(PG_FUNCTION_ARGS)
{
	Oid			types[9] = {REGCLASSOID, UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	LOCAL_FCINFO(rows, 9);
	FmgrInfo	flinfo;
	Oid			owner;
	int			k;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
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

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	owner = IngestExtensionOwner();
	SPI_finish();
	/* (found as the extension owner: the caller has no USAGE on the schema) */
	AS_OWNER(owner,
			 fmgr_info(LookupFuncName(list_make2(makeString("ingest_internal"),
												 makeString("usage_rows")),
									  9, types, false),
					   &flinfo));
	InitFunctionCallInfoData(*rows, &flinfo, 9, PG_GET_COLLATION(), NULL, (Node *) rsinfo);
	for (k = 0; k < 9; k++)
	{
		rows->args[k].value = PG_GETARG_DATUM(k);
		rows->args[k].isnull = PG_ARGISNULL(k);
	}
	AS_OWNER(owner, (void) FunctionCallInvoke(rows));
	return (Datum) 0;
}
