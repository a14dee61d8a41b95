/*-------------------------------------------------------------------------
 *
 * loader.c
 *	  The bulk loader's batch pipeline.
 *
 * For each batch of up to INGEST_BATCH_ROWS input rows:
 *	  1. read the rows' fields (copyparse.c);
 *	  2. convert them in one subtransaction; if any field fails its type
 *		 input, roll back and retry each half, down to the single bad rows,
 *		 which are set aside: clean data pays one subtransaction per batch;
 *	  3. set aside rows with a NULL in a NOT NULL column, oversize rows and
 *		 rows whose day has no partition (too old for retention, or beyond
 *		 the premade days);
 *	  4. claim the keys of the rest in the ledger, sorted (dedup.c);
 *	  5. multi-insert the rows that own their key (partwriter.c).
 * Rejected rows go to ingest.rejects with their line, text, SQLSTATE and
 * message.  Everything happens in the caller's transaction: rows, keys and
 * rejects commit or roll back together.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "ingest.h"
#include "loader.h"

const char *const IngestDefaultColumns[] = {
	"organization_id", "transaction_id", "external_customer_id", "code",
	"timestamp", "properties", "value", "decimal_value"
};
const int	IngestNumDefaultColumns = lengthof(IngestDefaultColumns);

/* A batch also ends when its input text reaches this size. */
#define BATCH_MAX_BYTES		(8 * 1024 * 1024)

typedef struct LoadState
{
	Relation	rel;
	IngestParser *parser;
	IngestLedger *ledger;		/* NULL for a distributed table: */
	IngestCitusLoad *citus;		/* Citus stores its rows instead */
	IngestPartWriter *writer;
	IngestRollup *rollup;
	ExprContext *econtext;
	SPIPlanPtr	reject_plan;
	Oid			owner;			/* the extension's: rejects are its table */
	const char *source;
	bool		abort_on_error;
	AttrNumber	ts_att;
	AttrNumber	org_att;
	AttrNumber	tx_att;
	AttrNumber	code_att;
	AttrNumber	customer_att;
	AttrNumber	never_null[INGEST_NEVER_NULL];	/* IngestNeverNull's */
	int			ntargets;
	int			batches;		/* batches loaded so far */
	int64		bytes;			/* input read */
	IngestLoadResult result;
} LoadState;

/* Write a row of ingest.rejects: a rejected row or a conflict. */
static void
record_reject(LoadState *st, LoadRow *row, int sqlerrcode, const char *message,
			  const char *kind)
{
	Datum		args[7];
	int			rc;
	MemoryContext cxt = CurrentMemoryContext;

	args[0] = ObjectIdGetDatum(RelationGetRelid(st->rel));
	args[1] = CStringGetTextDatum(st->source);
	args[2] = Int64GetDatum((int64) row->lineno);
	args[3] = CStringGetTextDatum(row->raw ? row->raw : IngestParserRowText(st->parser, row));
	args[4] = CStringGetTextDatum(unpack_sql_state(sqlerrcode));
	args[5] = CStringGetTextDatum(message);
	args[6] = CStringGetTextDatum(kind);
	AS_OWNER(st->owner,
			 rc = SPI_execute_plan(st->reject_plan, args, NULL, false, 0));
	/* SPI leaves its procedure context current: the batch goes on in its own */
	MemoryContextSwitchTo(cxt);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not record a %s row: %s", kind, SPI_result_code_string(rc));
}

/* Set a row aside, or end the load when on_error is "abort". */
static void
reject_row(LoadState *st, LoadRow *row, int sqlerrcode, const char *message)
{
	if (st->abort_on_error)
		ereport(ERROR,
				(errcode(sqlerrcode),
				 errmsg_internal("%s", message),
				 errdetail("Line " UINT64_FORMAT " of the input was rejected.",
						   row->lineno)));

	row->state = ROW_REJECTED;
	st->result.rejected++;
	record_reject(st, row, sqlerrcode, message, "rejected");
}

/* Record a duplicate whose payload differs from the stored event. */
static void
record_conflict(LoadState *st, LoadRow *row)
{
	st->result.conflicts++;
	record_reject(st, row, ERRCODE_UNIQUE_VIOLATION,
				  "an event with this organization_id and transaction_id "
				  "is stored with a different payload; the stored one is kept",
				  "conflict");
}

/* Errors of the data itself, which set a row aside; others end the load. */
static bool
is_data_error(int sqlerrcode)
{
	int			category = ERRCODE_TO_CATEGORY(sqlerrcode);

	return category == ERRCODE_DATA_EXCEPTION ||
		category == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		sqlerrcode == ERRCODE_PROGRAM_LIMIT_EXCEEDED;
}

/*
 * Run fn(st, arg) in a subtransaction.  Returns NULL, or the data error it
 * raised (rolled back); any other error is re-thrown.
 */
static ErrorData *
try_in_subxact(void (*fn) (LoadState *, void *), LoadState *st, void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(st, arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;

	if (edata != NULL && !is_data_error(edata->sqlerrcode))
		ReThrowError(edata);
	return edata;
}

/* Rows to convert, for try_in_subxact. */
typedef struct RowRange
{
	LoadRow   **rows;
	int			lo;
	int			hi;
} RowRange;

static void
convert_range(LoadState *st, void *arg)
{
	RowRange   *r = (RowRange *) arg;
	int			i;

	for (i = r->lo; i < r->hi; i++)
	{
		if (r->rows[i]->state == ROW_PARSED)
			IngestParserConvert(st->parser, r->rows[i], st->econtext);
	}
}

/*
 * Convert rows[lo..hi) in one subtransaction; on a data error, split the
 * range and retry, until the bad rows stand alone and are set aside.
 */
static void
convert_rows(LoadState *st, LoadRow **rows, int lo, int hi)
{
	RowRange	range = {rows, lo, hi};
	ErrorData  *edata;
	int			i;
	int			mid;

	if (lo >= hi)
		return;
	edata = try_in_subxact(convert_range, st, &range);
	if (edata == NULL)
		return;

	if (hi - lo == 1)
	{
		reject_row(st, rows[lo], edata->sqlerrcode, edata->message);
		FreeErrorData(edata);
		return;
	}
	FreeErrorData(edata);

	/* Everything in the range converts again. */
	for (i = lo; i < hi; i++)
		if (rows[i]->state == ROW_CONVERTED)
			rows[i]->state = ROW_PARSED;
	mid = lo + (hi - lo) / 2;
	convert_rows(st, rows, lo, mid);
	convert_rows(st, rows, mid, hi);
}

/*
 * Checks that need no subtransaction: size, field count, NOT NULL, key
 * width, day.
 * Returns how many rows had the wrong number of fields.
 */
static int
check_rows(LoadState *st, LoadRow **rows, int n, bool before_convert)
{
	TupleDesc	desc = RelationGetDescr(st->rel);
	int			shape = 0;
	int			i;
	int			a;
	char	   *why;

	for (i = 0; i < n; i++)
	{
		LoadRow    *r = rows[i];

		if (before_convert)
		{
			if (r->size > (Size) ingest_max_event_bytes)
			{
				/* a row this large is not kept whole in ingest.rejects */
				if (r->raw == NULL)
					r->raw = psprintf("(binary row of %zu bytes)", r->size);
				reject_row(st, r, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
						   psprintf("row of %zu bytes exceeds \"ingest.max_event_bytes\" (%d)",
									r->size, ingest_max_event_bytes));
			}
			else if (r->nfields >= 0 && r->nfields != st->ntargets)
			{
				shape++;
				reject_row(st, r, ERRCODE_BAD_COPY_FILE_FORMAT,
						   r->nfields < st->ntargets
						   ? psprintf("missing data: %d of %d columns", r->nfields, st->ntargets)
						   : psprintf("extra data after last expected column: %d of %d columns",
									  r->nfields, st->ntargets));
			}
			continue;
		}

		if (r->state != ROW_CONVERTED)
			continue;
		for (a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			/* a generated column is computed, and checked, when written */
			if (att->attnotnull && !att->attisdropped && !att->attgenerated && r->nulls[a])
			{
				reject_row(st, r, ERRCODE_NOT_NULL_VIOLATION,
						   psprintf("null value in column \"%s\" violates not-null constraint",
									NameStr(att->attname)));
				break;
			}
		}
		if (r->state != ROW_CONVERTED)
			continue;
		/* an adopted table's columns may be nullable: ingest's may not */
		for (a = 0; a < INGEST_NEVER_NULL; a++)
			if (r->nulls[st->never_null[a] - 1])
			{
				reject_row(st, r, ERRCODE_NOT_NULL_VIOLATION,
						   IngestNullColumnError(IngestNeverNull[a]));
				break;
			}
		if (r->state != ROW_CONVERTED)
			continue;
		why = IngestKeyWidthError(r->values[st->tx_att - 1], r->nulls[st->tx_att - 1],
								  r->values[st->code_att - 1], r->nulls[st->code_att - 1],
								  r->values[st->customer_att - 1], r->nulls[st->customer_att - 1]);
		if (why != NULL)
		{
			reject_row(st, r, ERRCODE_PROGRAM_LIMIT_EXCEEDED, why);
			continue;
		}
		r->part = IngestPartWriterRoute(st->writer, r->values[st->ts_att - 1]);
		if (r->part < 0)
		{
			reject_row(st, r, ERRCODE_CHECK_VIOLATION,
					   psprintf("no partition of \"%s\" holds timestamp %s",
								RelationGetRelationName(st->rel),
								timestamptz_to_str(DatumGetTimestampTz(r->values[st->ts_att - 1]))));
			continue;
		}
		if (st->ledger != NULL)
			r->hash = IngestLedgerHash(st->ledger, r->values, r->nulls);
	}
	return shape;
}

static void
load_batch(LoadState *st, LoadRow **rows, int n)
{
	LoadRow   **live = palloc(sizeof(LoadRow *) * n);
	int			nlive = 0;
	int			i;

	/*
	 * Input whose first batch has not one row of the expected shape is not
	 * this table's data (a column list is missing, say): it fails the load,
	 * as COPY fails, instead of setting every row aside.
	 */
	if (check_rows(st, rows, n, true) == n && st->batches == 0)
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("no row of the input has the %d fields expected for table \"%s\"",
						st->ntargets, RelationGetRelationName(st->rel)),
				 errdetail("The first row has %d fields.", rows[0]->nfields),
				 errhint("Name the input's columns: a column list in COPY, or columns => ARRAY[...] in ingest.load().")));
	st->batches++;
	/* binary rows arrive converted */
	for (i = 0; i < n; i++)
		if (rows[i]->state == ROW_PARSED || rows[i]->state == ROW_CONVERTED)
			live[nlive++] = rows[i];
	convert_rows(st, live, 0, nlive);
	(void) check_rows(st, live, nlive, false);

	n = nlive;
	nlive = 0;
	for (i = 0; i < n; i++)
		if (live[i]->state == ROW_CONVERTED)
			live[nlive++] = live[i];
	if (st->citus != NULL)
	{
		IngestCitusLoadAdd(st->citus, live, nlive);
		return;
	}
	IngestLedgerClaim(st->ledger, live, nlive);

	for (i = 0; i < nlive; i++)
	{
		LoadRow    *r = live[i];

		if (r->state == ROW_CONVERTED)
		{
			IngestPartWriterAdd(st->writer, r);
			r->state = ROW_LOADED;
			st->result.loaded++;
		}
		else if (r->state == ROW_DUPLICATE)
		{
			st->result.duplicates++;
			if (r->conflict)
				record_conflict(st, r);
		}
	}
	IngestPartWriterFlush(st->writer);
	IngestRollupFeed(st->rollup, live, nlive);
}

/* A batch being read, for try_in_subxact. */
typedef struct BatchRead
{
	LoadRow    *rowbuf;
	LoadRow   **rows;
	int			n;
	bool		more;
} BatchRead;

static void
read_rows(LoadState *st, void *arg)
{
	BatchRead  *b = (BatchRead *) arg;
	Size		bytes = 0;

	while (b->n < INGEST_BATCH_ROWS && bytes < BATCH_MAX_BYTES)
	{
		if (!IngestParserNext(st->parser, &b->rowbuf[b->n]))
		{
			b->more = false;
			break;
		}
		b->rows[b->n] = &b->rowbuf[b->n];
		bytes += b->rowbuf[b->n].size;
		st->bytes += b->rowbuf[b->n].size;
		b->n++;
	}
}

/*
 * Read the next batch's rows.  Reading happens in a subtransaction: input
 * the parser cannot split at all (an unterminated quoted field) sets the
 * rest of the input aside as one malformed row and ends the input, and the
 * rows read before it still load.  Returns false at the end of the input.
 */
static bool
read_batch(LoadState *st, LoadRow *rowbuf, LoadRow **rows, int *n)
{
	BatchRead	b = {rowbuf, rows, 0, true};
	ErrorData  *edata = try_in_subxact(read_rows, st, &b);

	*n = b.n;
	if (edata == NULL)
		return b.more;
	if (!IngestParserCanSkipBadInput(st->parser, edata))
		ReThrowError(edata);

	/* The malformed rest of the input is one rejected row. */
	{
		LoadRow    *bad = &rowbuf[b.n];

		memset(bad, 0, sizeof(LoadRow));
		IngestParserPosition(st->parser, &bad->lineno, &bad->raw);
		reject_row(st, bad, edata->sqlerrcode, edata->message);
	}
	FreeErrorData(edata);
	return false;
}

/* A payload in memory, or the client's COPY data when data is NULL. */
IngestLoadResult
IngestLoad(Relation rel, IngestTable *t, const char *format, bool header, List *copy_options,
		   List *attnums, const char *data, Size len, const char *source,
		   bool abort_on_error)
{
	IngestInput input = {data, len, NULL, NULL};

	return IngestLoadInput(rel, t, format, header, copy_options, attnums, &input,
						   source, abort_on_error);
}

/*
 * One attempt at a load (loadretry.c may make more).  With attempt->await,
 * it first waits, holding no key, for that key's claimant to end; it sets
 * attempt->ledger as soon as the ledger is open.
 */
IngestLoadResult
IngestLoadAttempt(Relation rel, IngestTable *t, const char *format, bool header,
				  List *copy_options, List *attnums, const IngestInput *input,
				  const char *source, bool abort_on_error, IngestRetry *attempt)
{
	const char *command;
	MemoryContext loadcxt;
	MemoryContext batchcxt;
	MemoryContext old;
	EState	   *estate;
	LoadState	st;
	LoadRow    *rowbuf;
	LoadRow   **rows;
	bool		more;
	TimestampTz started = GetCurrentTimestamp();
	IngestLoadCounts counts = {0};

	/* as COPY FROM: no writes in a read-only transaction or parallel mode */
	command = input->file ? "ingest.load_file" : input->data ? "ingest.load" : "COPY FROM";
	PreventCommandIfReadOnly(command);
	PreventCommandIfParallelMode(command);

	memset(&st, 0, sizeof(st));
	loadcxt = AllocSetContextCreate(CurrentMemoryContext, "ingest load",
									ALLOCSET_DEFAULT_SIZES);
	batchcxt = AllocSetContextCreate(loadcxt, "ingest load batch",
									 ALLOCSET_DEFAULT_SIZES);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	old = MemoryContextSwitchTo(loadcxt);

	st.rel = rel;
	st.source = source;
	st.abort_on_error = abort_on_error;
	st.ntargets = list_length(attnums);
	st.ts_att = get_attnum(RelationGetRelid(rel), "timestamp");
	st.org_att = get_attnum(RelationGetRelid(rel), "organization_id");
	st.tx_att = get_attnum(RelationGetRelid(rel), "transaction_id");
	st.code_att = get_attnum(RelationGetRelid(rel), "code");
	st.customer_att = get_attnum(RelationGetRelid(rel), "external_customer_id");
	for (int i = 0; i < INGEST_NEVER_NULL; i++)
		st.never_null[i] = get_attnum(RelationGetRelid(rel), IngestNeverNull[i]);
	estate = CreateExecutorState();
	st.econtext = CreateExprContext(estate);
	st.parser = IngestParserBegin(rel, format, header, copy_options, attnums, input,
								  st.econtext);
	st.owner = IngestExtensionOwner();
	/*
	 * An xid before the table's rollups are read: a rollup created after
	 * that read waits for this transaction to end before it is built
	 * (ingest_internal.rollup_build_ready).
	 */
	(void) GetCurrentTransactionId();
	if (!t->distributed)
		st.ledger = IngestLedgerBegin(rel, t, estate);
	if (attempt != NULL && st.ledger != NULL)
	{
		attempt->ledger = st.ledger;
		if (attempt->may_yield)
			IngestLedgerMayYield(st.ledger);
		if (attempt->await)
		{
			attempt->awaiting = true;
			IngestLedgerAwait(st.ledger, attempt->org, attempt->tx);
			attempt->awaiting = false;
		}
	}
	st.writer = IngestPartWriterBegin(rel, estate);
	if (t->distributed)
		st.citus = IngestCitusLoadBegin(rel);
	else
		st.rollup = IngestRollupBegin(rel, t, estate);
	AS_OWNER(st.owner, st.reject_plan = SPI_prepare(
		"INSERT INTO ingest.rejects (event_table, source, line_number, raw, sqlstate, message, kind) "
		"VALUES ($1, $2, $3, $4, $5, $6, $7)",
		7, (Oid[]) {OIDOID, TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID}));
	if (st.reject_plan == NULL)
		elog(ERROR, "could not prepare the rejects statement: %s",
			 SPI_result_code_string(SPI_result));

	rowbuf = palloc(sizeof(LoadRow) * INGEST_BATCH_ROWS);
	rows = palloc(sizeof(LoadRow *) * INGEST_BATCH_ROWS);

	for (;;)
	{
		int			n = 0;

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(batchcxt);
		ResetExprContext(st.econtext);
		MemoryContextSwitchTo(batchcxt);

		more = read_batch(&st, rowbuf, rows, &n);
		if (n > 0)
			load_batch(&st, rows, n);
		if (!more)
			break;
	}

	MemoryContextSwitchTo(loadcxt);
	if (st.citus != NULL)
	{
		int64		sent;
		int64		stored;

		IngestCitusLoadEnd(st.citus, &sent, &stored);
		st.result.loaded += stored;
		st.result.duplicates += sent - stored;
	}
	IngestPartWriterEnd(st.writer);
	if (st.ledger != NULL)
	{
		IngestRollupEnd(st.rollup);
		if (attempt != NULL)
			attempt->ledger = NULL;
		IngestLedgerEnd(st.ledger);
	}
	IngestParserEnd(st.parser);
	FreeExecutorState(estate);

	MemoryContextSwitchTo(old);
	SPI_finish();
	MemoryContextDelete(loadcxt);

	counts.calls = 1;
	/* a distributed table's rows are counted by the shards that store them */
	if (st.citus == NULL)
	{
		counts.loaded = st.result.loaded;
		counts.duplicates = st.result.duplicates;
		counts.bytes = st.bytes;
	}
	counts.conflicts = st.result.conflicts;
	counts.rejected = st.result.rejected;
	counts.seconds = (double) (GetCurrentTimestamp() - started) / USECS_PER_SEC;
	IngestCountLoad(RelationGetRelid(rel), &counts);
	return st.result;
}
