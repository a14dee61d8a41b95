/*-------------------------------------------------------------------------
 *
 * asowner.c
 *	  Running SQL over a managed table as the table's owner.
 *
 * Side state belongs to the table's owner, and so does every statement
 * ingest runs over a user table or its side tables: as the owner, under
 * SECURITY_RESTRICTED_OPERATION, with search_path pinned, as PostgreSQL's
 * own VACUUM, CREATE INDEX and RI triggers do.  The management functions
 * and the worker run as the extension's owner and come here for anything
 * that touches the table: DDL (owner_ddl; caller_ddl makes a new table as
 * the caller), the fold's statements
 * (owner_exec), and the raw-event reads of usage and verification
 * (owner_query).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "loader.h"

/*
 * Act as a table's owner.  With pin_path, also for statements parsed now:
 * search_path is pg_catalog, pg_temp until IngestOwnerPop.  Prepared plans
 * keep the search_path they were made with, so executing one needs no pin.
 */
void
IngestOwnerPush(Oid owner, bool pin_path, IngestOwnerScope *s)
{
	GetUserIdAndSecContext(&s->save_user, &s->save_sec);
	SetUserIdAndSecContext(owner, s->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	s->guc_level = -1;
	if (pin_path)
	{
		s->guc_level = NewGUCNestLevel();
		(void) set_config_option("search_path", "pg_catalog, pg_temp",
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
	}
}

/*
 * Within a scope pushed with pin_path: statements read every row of a
 * table or fail (42501), never what a row-level security policy that
 * applies to the owner (FORCE ROW LEVEL SECURITY) leaves of it.  Every
 * statement that keeps side state from a table's rows needs all of them.
 */
void
IngestOwnerAllRows(IngestOwnerScope *s)
{
	if (s->guc_level < 0)
		elog(ERROR, "IngestOwnerAllRows needs a scope pushed with pin_path");
	(void) set_config_option("row_security", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

void
IngestOwnerPop(IngestOwnerScope *s)
{
	if (s->guc_level >= 0)
		AtEOXact_GUC(false, s->guc_level);
	SetUserIdAndSecContext(s->save_user, s->save_sec);
}

/*
 * The rows of the statement SPI just ran, into a materialized result whose
 * column types they must have.
 */
static void
put_rows(ReturnSetInfo *into, int rc)
{
	TupleDesc	have = SPI_tuptable ? SPI_tuptable->tupdesc : NULL;
	TupleDesc	want = into->setDesc;
	uint64		i;
	int			k;

	if (rc != SPI_OK_SELECT || have == NULL || have->natts != want->natts)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("query does not return the %d columns its caller expects", want->natts)));
	for (k = 0; k < want->natts; k++)
		if (TupleDescAttr(have, k)->atttypid != TupleDescAttr(want, k)->atttypid)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("query returns type %s in column %d where its caller expects %s",
							format_type_be(TupleDescAttr(have, k)->atttypid), k + 1,
							format_type_be(TupleDescAttr(want, k)->atttypid))));
	for (i = 0; i < SPI_processed; i++)
	{
		CHECK_FOR_INTERRUPTS();
		tuplestore_puttuple(into->setResult, SPI_tuptable->vals[i]);
	}
}

/*
 * Run a statement ingest built as "role" (a relation's owner, or the caller
 * of a management function), as PostgreSQL runs VACUUM and index builds: under
 * SECURITY_RESTRICTED_OPERATION with search_path pinned; with
 * row_security_off, it reads every row or fails (42501) rather than see
 * what a policy leaves.  Returns the rows processed.
 *
 * With "into" (a materialized set-returning call), the statement reads in
 * the calling statement's snapshot, so that its rows agree with whatever
 * else that statement reads, and its rows go to into->setResult.
 */
static uint64
run_as(Oid role, const char *sql, int nargs, Oid *types, Datum *values,
	   const char *nulls, bool row_security_off, ReturnSetInfo *into)
{
	IngestOwnerScope scope;
	uint64		processed;
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	IngestOwnerPush(role, true, &scope);
	if (row_security_off)
		IngestOwnerAllRows(&scope);
	rc = SPI_execute_with_args(sql, nargs, types, values, nulls, into != NULL, 0);
	processed = SPI_processed;
	IngestOwnerPop(&scope);
	if (rc < 0)
		elog(ERROR, "could not run \"%s\": %s", sql, SPI_result_code_string(rc));
	if (into != NULL)
		put_rows(into, rc);
	SPI_finish();
	return processed;
}

/* run_as() the owner of relation relid. */
static uint64
run_as_owner(Oid relid, const char *sql, int nargs, Oid *types, Datum *values,
			 const char *nulls, bool row_security_off, ReturnSetInfo *into)
{
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	return run_as(IngestRelationOwner(relid), sql, nargs, types, values, nulls,
				  row_security_off, into);
}

/* Arguments first..n of a VARIADIC "any" call, for SPI. */
static int
variadic_args(FunctionCallInfo fcinfo, int first, Oid **types, Datum **values, char **nulls)
{
	int			nargs = PG_NARGS() - first;
	int			i;

	*types = palloc(sizeof(Oid) * Max(nargs, 1));
	*values = palloc(sizeof(Datum) * Max(nargs, 1));
	*nulls = palloc(sizeof(char) * Max(nargs, 1));
	for (i = 0; i < nargs; i++)
	{
		(*types)[i] = get_fn_expr_argtype(fcinfo->flinfo, first + i);
		if (!OidIsValid((*types)[i]))
			elog(ERROR, "could not determine the type of argument %d", first + i + 1);
		(*nulls)[i] = PG_ARGISNULL(first + i) ? 'n' : ' ';
		(*values)[i] = PG_ARGISNULL(first + i) ? (Datum) 0 : PG_GETARG_DATUM(first + i);
	}
	return nargs;
}

PG_FUNCTION_INFO_V1(ingest_owner_ddl);

/*
 * ingest_internal.owner_ddl(rel, ddl): a statement ingest built (names
 * quoted, values as literals) on a relation of a managed table, run as that
 * relation's owner.  The worker and the management functions make
 * partitions, triggers and indexes through it, so nothing they do to a
 * table has more privilege than its owner.
 */
Datum
ingest_owner_ddl(PG_FUNCTION_ARGS)
{
	(void) run_as_owner(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
						0, NULL, NULL, NULL, false, NULL);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(ingest_retire_ddl);

/*
 * ingest_internal.retire_ddl(rel, ddl): owner_ddl for retention's own plain
 * DETACH (on Citus) and FINALIZE, which tableddl.c lets through as it does
 * the worker's DETACH CONCURRENTLY: forget_keys follows them.
 */
Datum
ingest_retire_ddl(PG_FUNCTION_ARGS)
{
	int			save_depth = ingest_internal_ddl_depth;

	PG_TRY();
	{
		/* the statement run_as_owner runs, not one nested in it */
		ingest_internal_ddl_depth = ingest_utility_depth + 1;
		(void) run_as_owner(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
							0, NULL, NULL, NULL, false, NULL);
	}
	PG_FINALLY();
	{
		ingest_internal_ddl_depth = save_depth;
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(ingest_caller_ddl);

/*
 * ingest_internal.caller_ddl(ddl): a statement ingest built (names quoted),
 * run as the role that called into ingest (the session's role, not the
 * SECURITY DEFINER function's): create_event_table makes the table so, as
 * the caller would with CREATE TABLE, owner and privileges included.
 */
Datum
ingest_caller_ddl(PG_FUNCTION_ARGS)
{
	(void) run_as(IngestCaller(), text_to_cstring(PG_GETARG_TEXT_PP(0)),
				  0, NULL, NULL, NULL, false, NULL);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(ingest_owner_exec);

/*
 * ingest_internal.owner_exec(rel, sql [, VARIADIC args]): a statement
 * ingest built over a managed table and its side tables, with parameters
 * $1..$n if any, run as the table's owner with row_security off.  The fold runs its
 * statements over the events through it.  Returns the rows processed.
 */
Datum
ingest_owner_exec(PG_FUNCTION_ARGS)
{
	Oid		   *types;
	Datum	   *values;
	char	   *nulls;
	int			nargs = variadic_args(fcinfo, 2, &types, &values, &nulls);

	PG_RETURN_INT64((int64) run_as_owner(PG_GETARG_OID(0),
										 text_to_cstring(PG_GETARG_TEXT_PP(1)),
										 nargs, types, values, nulls, true, NULL));
}

PG_FUNCTION_INFO_V1(ingest_owner_query);

/*
 * ingest_internal.owner_query(rel, sql, VARIADIC args) RETURNS SETOF record:
 * a query ingest built over a managed table and its side tables, run as the
 * table's owner with row_security off, in the caller's snapshot; its rows,
 * as the column definition list of the call says.  Usage and verification
 * read raw events through it.
 */
Datum
ingest_owner_query(PG_FUNCTION_ARGS)
{
	Oid		   *types;
	Datum	   *values;
	char	   *nulls;
	int			nargs = variadic_args(fcinfo, 2, &types, &values, &nulls);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	(void) run_as_owner(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
						nargs, types, values, nulls, true,
						(ReturnSetInfo *) fcinfo->resultinfo);
	return (Datum) 0;
}
