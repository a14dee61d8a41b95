/*-------------------------------------------------------------------------
 *
 * rollupfeed.c
 *	  The loader's feed of hourly rollup deltas.
 *
 * The rows the loader wrote are aggregated per (organization, hour, code,
 * customer) over the whole load, in a hash table, and written to the
 * table's ingest_side.<name>_deltas with multi-insert at its end (or
 * whenever the table holds MAX_DELTA_ENTRIES keys), in the load's
 * transaction, so the deltas commit or roll back with the events;
 * duplicates and rejects never reach them.  Rollups with dimensions are
 * aggregated in SQL per batch, by the one definition of the rollup
 * arithmetic (ingest_internal.rollup_agg_sql), which this file's C code for
 * the default rollup must equal (ingest.rollup_verify checks it).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/executor.h"
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
#include "utils/hsearch.h"
#include "utils/jsonb.h"
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

/* Columns of the deltas side table the feed writes, in this order. */
static const char *const delta_columns[] = {
	"rollup", "organization_id", "hour", "code", "external_customer_id",
	"dims", "events", "value_sum", "decimal_sum", "value_min", "value_max",
	"latest_value", "latest_at", "latest_tx"
};
#define NUM_DELTA_COLUMNS lengthof(delta_columns)

/*
 * Entries the default rollup may collect before they are written out: this
 * bounds the feed's memory (a few hundred bytes each) whatever the load.
 */
#define MAX_DELTA_ENTRIES	65536

/* Positions in feed_columns. */
enum
{
	F_ORG, F_CODE, F_CUST, F_TS, F_VALUE, F_DECIMAL, F_TX, F_PROPS
};

/* A key of the default rollup; the texts point into the feed's memory. */
typedef struct DeltaKey
{
	pg_uuid_t	org;
	TimestampTz hour;
	text	   *code;
	text	   *cust;
} DeltaKey;

/* One delta row of the default rollup, aggregated here. */
typedef struct DeltaAcc
{
	DeltaKey	key;
	int64		events;
	Datum		value_sum;
	bool		value_sum_null;
	Datum		decimal_sum;
	bool		decimal_sum_null;
	double		value_min;
	double		value_max;
	bool		minmax_null;
	double		latest_value;
	bool		latest_value_null;
	TimestampTz latest_at;
	text	   *latest_tx;
} DeltaAcc;

struct IngestRollup
{
	Oid			relid;
	Oid			owner;
	AttrNumber	attnums[NUM_FEED_COLUMNS];
	SPIPlanPtr	plan;			/* rollups with dimensions, aggregated in SQL */
	bool		has_dimensions;
	bool		has_default;
	/* the default rollup: the whole load's deltas, aggregated here */
	HTAB	   *acc;
	MemoryContext acccxt;
	EState	   *estate;
	Relation	deltas;
	ResultRelInfo *rri;
	AttrNumber	delta_att[NUM_DELTA_COLUMNS];
	TupleTableSlot *slots[INGEST_BATCH_ROWS];
	int			nslots;
	BulkInsertState bistate;
	MemoryContext cxt;			/* the load's: slots live as long as the feed */
	Datum		empty_dims;		/* '{}'::jsonb */
	Datum		default_name;	/* 'default'::text */
};

static TimestampTz
utc_hour(Datum ts)
{
	TimestampTz t = DatumGetTimestampTz(ts);
	TimestampTz r = t % USECS_PER_HOUR;

	if (r < 0)
		r += USECS_PER_HOUR;
	return t - r;
}

static uint32
delta_key_hash(const void *key, Size keysize)
{
	const DeltaKey *k = key;
	uint32		h = hash_bytes((const unsigned char *) &k->org, UUID_LEN);

	h = hash_combine(h, hash_bytes((const unsigned char *) &k->hour, sizeof(TimestampTz)));
	h = hash_combine(h, hash_bytes((const unsigned char *) VARDATA_ANY(k->code),
								   VARSIZE_ANY_EXHDR(k->code)));
	return hash_combine(h, hash_bytes((const unsigned char *) VARDATA_ANY(k->cust),
									  VARSIZE_ANY_EXHDR(k->cust)));
}

static int
delta_key_match(const void *a, const void *b, Size keysize)
{
	const DeltaKey *ka = a;
	const DeltaKey *kb = b;

	if (ka->hour != kb->hour || memcmp(&ka->org, &kb->org, UUID_LEN) != 0)
		return 1;
	return IngestTextCmpC(ka->code, kb->code) != 0 || IngestTextCmpC(ka->cust, kb->cust) != 0;
}

static void
create_acc(IngestRollup *f)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(DeltaKey);
	ctl.entrysize = sizeof(DeltaAcc);
	ctl.hash = delta_key_hash;
	ctl.match = delta_key_match;
	ctl.hcxt = f->acccxt;
	f->acc = hash_create("ingest rollup deltas", 1024, &ctl,
						 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}

/*
 * The rollup arithmetic over "src" (a FROM item whose rows are events) for
 * rows matching "cond", from its one definition: ingest_internal.rollup_agg_sql,
 * which only the extension owner may run (it is text formatting).
 */
char *
IngestRollupAggSql(const char *src, const char *cond)
{
	Datum		args[2] = {CStringGetTextDatum(src), CStringGetTextDatum(cond)};
	MemoryContext cxt = CurrentMemoryContext;
	char	   *sql;
	bool		isnull;
	Oid			owner;
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	owner = IngestExtensionOwner();
	AS_OWNER(owner, rc = SPI_execute_with_args(
		"SELECT ingest_internal.rollup_agg_sql($1, $2)",
		2, (Oid[]) {TEXTOID, TEXTOID}, args, NULL, true, 1));
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the rollup arithmetic: %s", SPI_result_code_string(rc));
	sql = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	sql = MemoryContextStrdup(cxt, sql);
	SPI_finish();
	return sql;
}

IngestRollup *
IngestRollupBegin(Relation rel, IngestTable *t, EState *estate)
{
	IngestRollup *f = palloc0(sizeof(IngestRollup));
	Oid			argtypes[NUM_FEED_COLUMNS + 1];
	Datum		arg;
	bool		isnull;
	int			rc;
	int			i;
	IngestOwnerScope scope;
	char	   *agg;

	f->relid = RelationGetRelid(rel);
	f->owner = t->owner;
	f->estate = estate;
	f->cxt = CurrentMemoryContext;
	argtypes[0] = REGCLASSOID;
	for (i = 0; i < (int) NUM_FEED_COLUMNS; i++)
	{
		f->attnums[i] = get_attnum(f->relid, feed_columns[i]);
		argtypes[i + 1] = get_array_type(feed_types[i]);
	}

	/* $2.. are the loaded rows' columns, as arrays */
	agg = IngestRollupAggSql(
		"(SELECT * FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), "
		"     pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), "
		"     pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9)) "
		"  AS u(organization_id, code, external_customer_id, \"timestamp\", value, "
		"       decimal_value, transaction_id, properties))",
		"rc.dimensions OPERATOR(pg_catalog.<>) '{}'::pg_catalog.text[]");
	IngestOwnerPush(f->owner, true, &scope);
	f->plan = SPI_prepare(psprintf("INSERT INTO %s %s", IngestQualifiedName(t->rollup_deltas), agg),
						  NUM_FEED_COLUMNS + 1, argtypes);
	IngestOwnerPop(&scope);
	if (f->plan == NULL)
		elog(ERROR, "could not prepare the rollup feed: %s",
			 SPI_result_code_string(SPI_result));

	/*
	 * Which rollups the table has, as of now, after the load took its xid
	 * (loader.c): a rollup created before that is fed, one created after
	 * waits for this transaction to end before it is built.  The load's own
	 * snapshot may be older than both (a statement that waited for a lock;
	 * REPEATABLE READ).  A Citus shard's statement may even have adopted it
	 * (citus.c), writing its rollup after the snapshot.
	 */
	arg = ObjectIdGetDatum(f->relid);
	PushActiveSnapshot(GetLatestSnapshot());
	rc = SPI_execute_with_args(
		"SELECT pg_catalog.bool_or(rc.dimensions OPERATOR(pg_catalog.<>) '{}'::pg_catalog.text[]), "
		"       pg_catalog.bool_or(rc.name OPERATOR(pg_catalog.=) 'default') "
		"  FROM ingest.rollup_config rc WHERE rc.event_table OPERATOR(pg_catalog.=) $1",
		1, (Oid[]) {OIDOID}, &arg, NULL, true, 1);
	PopActiveSnapshot();
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the rollups of table %u", f->relid);
	f->has_dimensions = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull)) && !isnull;
	f->has_default = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 2, &isnull)) && !isnull;
	SPI_freetuptable(SPI_tuptable);

	if (f->has_default)
	{
		Oid			deltas_oid = t->rollup_deltas;
		TupleDesc	desc;

		f->deltas = table_open(deltas_oid, RowExclusiveLock);
		desc = RelationGetDescr(f->deltas);
		if (desc->natts != (int) NUM_DELTA_COLUMNS)
			elog(ERROR, "unexpected layout of the rollup deltas table");
		for (i = 0; i < (int) NUM_DELTA_COLUMNS; i++)
		{
			f->delta_att[i] = get_attnum(deltas_oid, delta_columns[i]);
			if (f->delta_att[i] == InvalidAttrNumber)
				elog(ERROR, "unexpected layout of the rollup deltas table");
		}
		f->rri = makeNode(ResultRelInfo);
		InitResultRelInfo(f->rri, f->deltas, 0, NULL, 0);
		ExecOpenIndices(f->rri, false);
		f->bistate = GetBulkInsertState();
		f->empty_dims = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
		f->default_name = CStringGetTextDatum("default");
		f->acccxt = AllocSetContextCreate(CurrentMemoryContext, "ingest rollup deltas",
										  ALLOCSET_DEFAULT_SIZES);
		create_acc(f);
	}
	return f;
}

/* Write the collected deltas with multi-insert, and start over. */
static void
flush_default(IngestRollup *f)
{
	HASH_SEQ_STATUS seq;
	DeltaAcc   *a;
	CommandId	cid = GetCurrentCommandId(true);
	int			n = 0;

	hash_seq_init(&seq, f->acc);
	while ((a = hash_seq_search(&seq)) != NULL)
	{
		TupleTableSlot *slot;
		Datum	   *v;
		bool	   *nul;
		AttrNumber *at = f->delta_att;

		CHECK_FOR_INTERRUPTS();
		if (n == f->nslots)
		{
			MemoryContext old = MemoryContextSwitchTo(f->cxt);

			f->slots[f->nslots++] = table_slot_create(f->deltas, NULL);
			MemoryContextSwitchTo(old);
		}
		slot = f->slots[n++];
		ExecClearTuple(slot);
		v = slot->tts_values;
		nul = slot->tts_isnull;
		memset(nul, 0, sizeof(bool) * NUM_DELTA_COLUMNS);
		v[at[0] - 1] = f->default_name;
		v[at[1] - 1] = UUIDPGetDatum(&a->key.org);
		v[at[2] - 1] = TimestampTzGetDatum(a->key.hour);
		v[at[3] - 1] = PointerGetDatum(a->key.code);
		v[at[4] - 1] = PointerGetDatum(a->key.cust);
		v[at[5] - 1] = f->empty_dims;
		v[at[6] - 1] = Int64GetDatum(a->events);
		v[at[7] - 1] = a->value_sum;
		nul[at[7] - 1] = a->value_sum_null;
		v[at[8] - 1] = a->decimal_sum;
		nul[at[8] - 1] = a->decimal_sum_null;
		v[at[9] - 1] = Float8GetDatum(a->value_min);
		nul[at[9] - 1] = a->minmax_null;
		v[at[10] - 1] = Float8GetDatum(a->value_max);
		nul[at[10] - 1] = a->minmax_null;
		v[at[11] - 1] = Float8GetDatum(a->latest_value);
		nul[at[11] - 1] = a->latest_value_null;
		v[at[12] - 1] = TimestampTzGetDatum(a->latest_at);
		v[at[13] - 1] = PointerGetDatum(a->latest_tx);
		ExecStoreVirtualTuple(slot);
		if (n == INGEST_BATCH_ROWS)
		{
			IngestMultiInsert(f->rri, f->estate, f->slots, n, cid, f->bistate);
			n = 0;
		}
	}
	if (n > 0)
		IngestMultiInsert(f->rri, f->estate, f->slots, n, cid, f->bistate);

	hash_destroy(f->acc);
	MemoryContextReset(f->acccxt);
	create_acc(f);
}

/* Add a batch's loaded rows (ROW_LOADED) to the default rollup's deltas. */
static void
feed_default(IngestRollup *f, LoadRow **rows, int n)
{
	AttrNumber *at = f->attnums;
	MemoryContext old = MemoryContextSwitchTo(f->acccxt);
	int			i;

	for (i = 0; i < n; i++)
	{
		LoadRow    *r = rows[i];
		Datum	   *rv = r->values;
		DeltaKey	key;
		DeltaAcc   *a;
		bool		found;
		TimestampTz ts;
		text	   *tx;

		if (r->state != ROW_LOADED)
			continue;
		ts = DatumGetTimestampTz(rv[at[F_TS] - 1]);
		tx = DatumGetTextPP(rv[at[F_TX] - 1]);
		memcpy(&key.org, DatumGetUUIDP(rv[at[F_ORG] - 1]), UUID_LEN);
		key.hour = utc_hour(rv[at[F_TS] - 1]);
		key.code = DatumGetTextPP(rv[at[F_CODE] - 1]);
		key.cust = DatumGetTextPP(rv[at[F_CUST] - 1]);
		a = hash_search(f->acc, &key, HASH_ENTER, &found);
		if (!found)
		{
			a->key.code = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(key.code));
			a->key.cust = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(key.cust));
			a->events = 0;
			a->value_sum_null = a->decimal_sum_null = a->minmax_null = true;
			a->latest_tx = NULL;
		}
		a->events++;
		if (a->latest_tx == NULL || IngestEventIsLater(ts, tx, a->latest_at, a->latest_tx))
		{
			if (a->latest_tx)
				pfree(a->latest_tx);
			a->latest_tx = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(tx));
			a->latest_at = ts;
			a->latest_value_null = r->nulls[at[F_VALUE] - 1];
			a->latest_value = a->latest_value_null ? 0 : DatumGetFloat8(rv[at[F_VALUE] - 1]);
		}
		if (!r->nulls[at[F_VALUE] - 1])
		{
			double		v = DatumGetFloat8(rv[at[F_VALUE] - 1]);
			Datum		vn = DirectFunctionCall1(float8_numeric, Float8GetDatum(v));

			if (a->value_sum_null)
				a->value_sum = vn;
			else
			{
				Datum		sum = DirectFunctionCall2(numeric_add, a->value_sum, vn);

				pfree(DatumGetPointer(a->value_sum));
				pfree(DatumGetPointer(vn));
				a->value_sum = sum;
			}
			a->value_sum_null = false;
			if (a->minmax_null || float8_lt(v, a->value_min))
				a->value_min = v;
			if (a->minmax_null || float8_gt(v, a->value_max))
				a->value_max = v;
			a->minmax_null = false;
		}
		if (!r->nulls[at[F_DECIMAL] - 1])
		{
			Datum		d = rv[at[F_DECIMAL] - 1];

			if (a->decimal_sum_null)
				a->decimal_sum = PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
			else
			{
				Datum		sum = DirectFunctionCall2(numeric_add, a->decimal_sum, d);

				pfree(DatumGetPointer(a->decimal_sum));
				a->decimal_sum = sum;
			}
			a->decimal_sum_null = false;
		}
	}
	MemoryContextSwitchTo(old);
	if (hash_get_num_entries(f->acc) >= MAX_DELTA_ENTRIES)
		flush_default(f);
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

	if (f->has_default)
		feed_default(f, rows, nrows);
	if (!f->has_dimensions)
		return;

	args[0] = ObjectIdGetDatum(f->relid);	/* regclass */
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

	AS_OWNER(f->owner, rc = SPI_execute_plan(f->plan, args, NULL, false, 0));
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not append rollup deltas: %s", SPI_result_code_string(rc));
}

/* Write the default rollup's deltas of the whole load. */
void
IngestRollupEnd(IngestRollup *f)
{
	int			i;

	SPI_freeplan(f->plan);
	if (f->has_default)
	{
		flush_default(f);
		hash_destroy(f->acc);
		MemoryContextDelete(f->acccxt);
		for (i = 0; i < f->nslots; i++)
			ExecDropSingleTupleTableSlot(f->slots[i]);
		FreeBulkInsertState(f->bistate);
		ExecCloseIndices(f->rri);
		table_close(f->deltas, NoLock);
	}
	pfree(f);
}
