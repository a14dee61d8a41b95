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
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

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
	SPIPlanPtr	plan;			/* rollups with dimensions, aggregated in SQL */
	bool		has_dimensions;
	SPIPlanPtr	plain;			/* the default rollup, aggregated here */
};

/* Positions in feed_columns. */
enum
{
	F_ORG, F_CODE, F_CUST, F_TS, F_VALUE, F_DECIMAL, F_TX, F_PROPS
};

/* One delta row of the default rollup, aggregated in C. */
typedef struct DeltaAcc
{
	LoadRow    *first;			/* the key: organization, hour, code, customer */
	TimestampTz hour;
	int64		events;
	Datum		value_sum;
	bool		value_sum_null;
	Datum		decimal_sum;
	bool		decimal_sum_null;
	double		value_min;
	double		value_max;
	bool		minmax_null;
	LoadRow    *latest;
} DeltaAcc;

static IngestRollup *sort_feed;

static TimestampTz
utc_hour(Datum ts)
{
	TimestampTz t = DatumGetTimestampTz(ts);
	TimestampTz r = t % USECS_PER_HOUR;

	if (r < 0)
		r += USECS_PER_HOUR;
	return t - r;
}

static int
text_cmp_c(Datum a, Datum b)
{
	text	   *ta = DatumGetTextPP(a);
	text	   *tb = DatumGetTextPP(b);
	int			la = VARSIZE_ANY_EXHDR(ta);
	int			lb = VARSIZE_ANY_EXHDR(tb);
	int			c = memcmp(VARDATA_ANY(ta), VARDATA_ANY(tb), Min(la, lb));

	return c != 0 ? c : (la > lb) - (la < lb);
}

/* Rows by key: organization, UTC hour, code, customer. */
static int
key_cmp(const void *pa, const void *pb)
{
	LoadRow    *a = *(LoadRow *const *) pa;
	LoadRow    *b = *(LoadRow *const *) pb;
	AttrNumber *at = sort_feed->attnums;
	TimestampTz ha;
	TimestampTz hb;
	int			c;

	c = memcmp(DatumGetUUIDP(a->values[at[F_ORG] - 1])->data,
			   DatumGetUUIDP(b->values[at[F_ORG] - 1])->data, UUID_LEN);
	if (c != 0)
		return c;
	ha = utc_hour(a->values[at[F_TS] - 1]);
	hb = utc_hour(b->values[at[F_TS] - 1]);
	if (ha != hb)
		return ha < hb ? -1 : 1;
	c = text_cmp_c(a->values[at[F_CODE] - 1], b->values[at[F_CODE] - 1]);
	if (c != 0)
		return c;
	return text_cmp_c(a->values[at[F_CUST] - 1], b->values[at[F_CUST] - 1]);
}

/* Whether row b is later than row a by (timestamp, transaction_id). */
static bool
later(IngestRollup *f, LoadRow *a, LoadRow *b)
{
	TimestampTz ta = DatumGetTimestampTz(a->values[f->attnums[F_TS] - 1]);
	TimestampTz tb = DatumGetTimestampTz(b->values[f->attnums[F_TS] - 1]);

	if (ta != tb)
		return tb > ta;
	return text_cmp_c(b->values[f->attnums[F_TX] - 1], a->values[f->attnums[F_TX] - 1]) > 0;
}

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
		"       ingest_internal.dims_of(u.p, rc.dimensions), "
		"       pg_catalog.count(*), pg_catalog.sum(u.v::pg_catalog.numeric), pg_catalog.sum(u.d), "
		"       pg_catalog.min(u.v), pg_catalog.max(u.v), "
		"       (pg_catalog.array_agg(u.v ORDER BY u.t DESC, u.tx COLLATE \"C\" DESC))[1], "
		"       pg_catalog.max(u.t), "
		"       (pg_catalog.array_agg(u.tx COLLATE \"C\" ORDER BY u.t DESC, u.tx COLLATE \"C\" DESC))[1] "
		"  FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), "
		"                  pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), "
		"                  pg_catalog.unnest($8), pg_catalog.unnest($9)) AS u(o, c, x, t, v, d, tx, p) "
		"  JOIN ingest.rollup_config rc ON rc.event_table OPERATOR(pg_catalog.=) $1 "
		"   AND rc.dimensions OPERATOR(pg_catalog.<>) '{}'::pg_catalog.text[] "
		" GROUP BY 2, 3, 4, 5, 6, 7",
		NUM_FEED_COLUMNS + 1, argtypes));
	if (f->plan == NULL)
		elog(ERROR, "could not prepare the rollup feed: %s",
			 SPI_result_code_string(SPI_result));

	{
		Oid			plaintypes[13] = {OIDOID, UUIDARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, INT8ARRAYOID, NUMERICARRAYOID, NUMERICARRAYOID, FLOAT8ARRAYOID,
		FLOAT8ARRAYOID, FLOAT8ARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID};
		Datum		arg = ObjectIdGetDatum(f->relid);
		bool		isnull;
		int			rc;

		AS_EXTENSION_OWNER(owner, f->plain = SPI_prepare(
			"INSERT INTO ingest_internal.rollup_deltas "
			"SELECT $1, 'default', u.o, u.h, u.c, u.x, '{}'::jsonb, u.n, u.vs, u.ds, u.mi, u.ma, "
			"       u.lv, u.la, u.lt "
			"  FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), "
			"                  pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), "
			"                  pg_catalog.unnest($8), pg_catalog.unnest($9), pg_catalog.unnest($10), "
			"                  pg_catalog.unnest($11), pg_catalog.unnest($12), pg_catalog.unnest($13)) "
			"       AS u(o, h, c, x, n, vs, ds, mi, ma, lv, la, lt) "
			" WHERE EXISTS (SELECT 1 FROM ingest.rollup_config rc "
			"                WHERE rc.event_table OPERATOR(pg_catalog.=) $1 "
			"                  AND rc.name OPERATOR(pg_catalog.=) 'default')",
			13, plaintypes));
		if (f->plain == NULL)
			elog(ERROR, "could not prepare the rollup feed: %s",
				 SPI_result_code_string(SPI_result));
		AS_EXTENSION_OWNER(owner, rc = SPI_execute_with_args(
			"SELECT EXISTS (SELECT 1 FROM ingest.rollup_config rc "
			"                WHERE rc.event_table OPERATOR(pg_catalog.=) $1 "
			"                  AND rc.dimensions OPERATOR(pg_catalog.<>) '{}'::pg_catalog.text[])",
			1, (Oid[]) {OIDOID}, &arg, NULL, true, 1));
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not read the rollups of table %u", f->relid);
		f->has_dimensions = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
													   SPI_tuptable->tupdesc, 1, &isnull));
		SPI_freetuptable(SPI_tuptable);
	}
	return f;
}

/* The default rollup's deltas of a batch, aggregated here, in one INSERT. */
static void
feed_default(IngestRollup *f, LoadRow **rows, int n)
{
	AttrNumber *at = f->attnums;
	DeltaAcc   *acc = palloc0(sizeof(DeltaAcc) * n);
	int			nacc = 0;
	int			i;
	Datum		args[13];
	Datum	   *col;
	bool	   *nul;
	int			rc;

	sort_feed = f;
	qsort(rows, n, sizeof(LoadRow *), key_cmp);
	for (i = 0; i < n; i++)
	{
		LoadRow    *r = rows[i];
		DeltaAcc   *a;
		bool		vnull = r->nulls[at[F_VALUE] - 1];
		bool		dnull = r->nulls[at[F_DECIMAL] - 1];

		if (nacc == 0 || key_cmp(&acc[nacc - 1].first, &r) != 0)
		{
			a = &acc[nacc++];
			a->first = r;
			a->hour = utc_hour(r->values[at[F_TS] - 1]);
			a->value_sum_null = a->decimal_sum_null = a->minmax_null = true;
			a->latest = r;
		}
		else
		{
			a = &acc[nacc - 1];
			if (later(f, a->latest, r))
				a->latest = r;
		}
		a->events++;
		if (!vnull)
		{
			double		v = DatumGetFloat8(r->values[at[F_VALUE] - 1]);
			Datum		vn = DirectFunctionCall1(float8_numeric, Float8GetDatum(v));

			a->value_sum = a->value_sum_null ? vn :
				DirectFunctionCall2(numeric_add, a->value_sum, vn);
			a->value_sum_null = false;
			if (a->minmax_null || float8_lt(v, a->value_min))
				a->value_min = v;
			if (a->minmax_null || float8_gt(v, a->value_max))
				a->value_max = v;
			a->minmax_null = false;
		}
		if (!dnull)
		{
			a->decimal_sum = a->decimal_sum_null ? r->values[at[F_DECIMAL] - 1] :
				DirectFunctionCall2(numeric_add, a->decimal_sum, r->values[at[F_DECIMAL] - 1]);
			a->decimal_sum_null = false;
		}
	}

	col = palloc(sizeof(Datum) * nacc);
	nul = palloc(sizeof(bool) * nacc);
#define ARRAY_ARG(pos, type, expr, isnull) \
	do { \
		int16		typlen_; \
		bool		typbyval_; \
		char		typalign_; \
		int			dims_[1] = {nacc}; \
		int			lbs_[1] = {1}; \
		for (i = 0; i < nacc; i++) \
		{ \
			DeltaAcc   *a = &acc[i]; \
			col[i] = (expr); \
			nul[i] = (isnull); \
		} \
		get_typlenbyvalalign((type), &typlen_, &typbyval_, &typalign_); \
		args[pos] = PointerGetDatum(construct_md_array(col, nul, 1, dims_, lbs_, (type), \
													   typlen_, typbyval_, typalign_)); \
	} while (0)

	args[0] = ObjectIdGetDatum(f->relid);
	ARRAY_ARG(1, UUIDOID, a->first->values[at[F_ORG] - 1], false);
	ARRAY_ARG(2, TIMESTAMPTZOID, TimestampTzGetDatum(a->hour), false);
	ARRAY_ARG(3, TEXTOID, a->first->values[at[F_CODE] - 1], false);
	ARRAY_ARG(4, TEXTOID, a->first->values[at[F_CUST] - 1], false);
	ARRAY_ARG(5, INT8OID, Int64GetDatum(a->events), false);
	ARRAY_ARG(6, NUMERICOID, a->value_sum, a->value_sum_null);
	ARRAY_ARG(7, NUMERICOID, a->decimal_sum, a->decimal_sum_null);
	ARRAY_ARG(8, FLOAT8OID, Float8GetDatum(a->value_min), a->minmax_null);
	ARRAY_ARG(9, FLOAT8OID, Float8GetDatum(a->value_max), a->minmax_null);
	ARRAY_ARG(10, FLOAT8OID, a->latest->values[at[F_VALUE] - 1], a->latest->nulls[at[F_VALUE] - 1]);
	ARRAY_ARG(11, TIMESTAMPTZOID, a->latest->values[at[F_TS] - 1], false);
	ARRAY_ARG(12, TEXTOID, a->latest->values[at[F_TX] - 1], false);
#undef ARRAY_ARG

	AS_EXTENSION_OWNER(f->owner, rc = SPI_execute_plan(f->plain, args, NULL, false, 0));
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not append rollup deltas: %s", SPI_result_code_string(rc));
}

/*
 * Append the deltas of the rows a batch wrote (state ROW_LOADED): the
 * default rollup's aggregated here, those of rollups with dimensions in SQL.
 */
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

	{
		LoadRow   **loaded = palloc(sizeof(LoadRow *) * n);
		int			k = 0;

		for (i = 0; i < nrows; i++)
			if (rows[i]->state == ROW_LOADED)
				loaded[k++] = rows[i];
		feed_default(f, loaded, n);
		pfree(loaded);
	}
	if (!f->has_dimensions)
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
	SPI_freeplan(f->plain);
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
