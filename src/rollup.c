/*-------------------------------------------------------------------------
 *
 * rollup.c
 *	  The loader's feed of hourly rollup deltas, and the worker's folder.
 *
 * After each batch, the rows the loader wrote are aggregated per
 * (organization, hour, code, customer) into ingest_internal.rollup_deltas
 * in the load's transaction, so the deltas commit or roll back with the
 * events; duplicates and rejects never reach them.  The worker folds
 * committed deltas into the rollup every ingest.rollup_fold_interval
 * (ingest_internal.fold(), SQL).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "funcapi.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "ingest.h"
#include "loader.h"

/* Columns the rollup reads, in the order of the feed statement's arrays. */
static const char *const feed_columns[] = {
	"organization_id", "code", "external_customer_id", "timestamp", "value",
	"decimal_value", "transaction_id", "properties"
};
static const Oid feed_types[] = {
	UUIDOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, FLOAT8OID, NUMERICOID, TEXTOID, JSONBOID
};
#define NUM_FEED_COLUMNS lengthof(feed_columns)

struct IngestRollup
{
	Oid			relid;
	Oid			owner;
	AttrNumber	attnums[NUM_FEED_COLUMNS];
	SPIPlanPtr	plan;
};

IngestRollup *
IngestRollupBegin(Relation rel, Oid owner)
{
	IngestRollup *f = palloc0(sizeof(IngestRollup));
	Oid			argtypes[NUM_FEED_COLUMNS + 1];
	int			i;

	f->relid = RelationGetRelid(rel);
	f->owner = owner;
	argtypes[0] = OIDOID;
	for (i = 0; i < (int) NUM_FEED_COLUMNS; i++)
	{
		f->attnums[i] = get_attnum(f->relid, feed_columns[i]);
		argtypes[i + 1] = get_array_type(feed_types[i]);
	}

	AS_EXTENSION_OWNER(owner, f->plan = SPI_prepare(
		"INSERT INTO ingest_internal.rollup_deltas "
		"SELECT $1, rc.name, u.o, pg_catalog.date_trunc('hour', u.t, 'UTC'), u.c, u.x, "
		"       CASE WHEN rc.dimensions OPERATOR(pg_catalog.=) '{}'::text[] THEN '{}'::jsonb "
		"            ELSE ingest_internal.dims_of(u.p, rc.dimensions) END, "
		"       pg_catalog.count(*), pg_catalog.sum(u.v::pg_catalog.numeric), pg_catalog.sum(u.d), "
		"       pg_catalog.min(u.v), pg_catalog.max(u.v), "
		"       (pg_catalog.array_agg(u.v ORDER BY u.t DESC, u.tx COLLATE \"C\" DESC))[1], "
		"       pg_catalog.max(u.t), "
		"       (pg_catalog.array_agg(u.tx COLLATE \"C\" ORDER BY u.t DESC, u.tx COLLATE \"C\" DESC))[1] "
		"  FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), "
		"                  pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), "
		"                  pg_catalog.unnest($8), pg_catalog.unnest($9)) AS u(o, c, x, t, v, d, tx, p) "
		"  JOIN ingest.rollup_config rc ON rc.event_table OPERATOR(pg_catalog.=) $1 "
		" GROUP BY 2, 3, 4, 5, 6, 7",
		NUM_FEED_COLUMNS + 1, argtypes));
	if (f->plan == NULL)
		elog(ERROR, "could not prepare the rollup feed: %s",
			 SPI_result_code_string(SPI_result));
	return f;
}

/* Append the deltas of the rows a batch wrote (state ROW_LOADED). */
void
IngestRollupFeed(IngestRollup *f, LoadRow **rows, int nrows)
{
	Datum		args[NUM_FEED_COLUMNS + 1];
	Datum	   *elems;
	bool	   *nulls;
	int			n = 0;
	int			i;
	int			c;
	int			rc;

	for (i = 0; i < nrows; i++)
		if (rows[i]->state == ROW_LOADED)
			n++;
	if (n == 0)
		return;

	args[0] = ObjectIdGetDatum(f->relid);
	elems = palloc(sizeof(Datum) * n);
	nulls = palloc(sizeof(bool) * n);
	for (c = 0; c < (int) NUM_FEED_COLUMNS; c++)
	{
		int			a = f->attnums[c] - 1;
		int16		typlen;
		bool		typbyval;
		char		typalign;
		int			dims[1] = {n};
		int			lbs[1] = {1};
		int			k = 0;

		for (i = 0; i < nrows; i++)
		{
			if (rows[i]->state != ROW_LOADED)
				continue;
			elems[k] = rows[i]->values[a];
			nulls[k] = rows[i]->nulls[a];
			k++;
		}
		get_typlenbyvalalign(feed_types[c], &typlen, &typbyval, &typalign);
		args[c + 1] = PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs,
														 feed_types[c], typlen,
														 typbyval, typalign));
	}

	AS_EXTENSION_OWNER(f->owner, rc = SPI_execute_plan(f->plan, args, NULL, false, 0));
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not append rollup deltas: %s", SPI_result_code_string(rc));
}

void
IngestRollupEnd(IngestRollup *f)
{
	SPI_freeplan(f->plan);
	pfree(f);
}

/*
 * Fold the committed deltas of every table of this database, in a
 * transaction of its own.  A failure is logged and retried next time.
 */
void
IngestFoldRollups(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	pgstat_report_activity(STATE_RUNNING, "folding rollups");
	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_execute("SELECT ingest.fold_rollups()", false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not fold rollups");
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("could not fold rollups: %s", edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
}

PG_FUNCTION_INFO_V1(ingest_usage);

/*
 * ingest.usage(...): the caller needs SELECT on the event table; the rows
 * come from ingest_internal.usage_rows(), run as the extension owner, whose
 * tables users have no grants on.
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

	for (k = 0; k < 9; k++)
	{
		nulls[k] = PG_ARGISNULL(k) ? 'n' : ' ';
		args[k] = PG_ARGISNULL(k) ? (Datum) 0 : PG_GETARG_DATUM(k);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	owner = IngestExtensionOwner();
	AS_EXTENSION_OWNER(owner, rc = SPI_execute_with_args(
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
