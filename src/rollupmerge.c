/*-------------------------------------------------------------------------
 *
 * rollupmerge.c
 *	  Which event of a rollup key is the latest, and the aggregates that
 *	  merge rollup rows by it.
 *
 * A rollup row keeps the value and transaction_id of its latest event: the
 * greatest (timestamp, transaction_id in the "C" collation).  The loader's
 * feed (rollupfeed.c) picks it with IngestEventIsLater, and merges of rollup
 * rows (ingest_internal.rollup_merge_sql: folds, daily rows, usage) with
 * ingest_internal.latest_value and latest_tx, which share one transition
 * state per group and sort nothing: an ordered array_agg sorted every group
 * twice, most of a month's usage on high-cardinality data.  As there, a
 * NULL instant or transaction_id counts as the latest.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "loader.h"

/* bytes, then length: the "C" collation's order */
int
IngestTextCmpC(text *ta, text *tb)
{
	int			la = VARSIZE_ANY_EXHDR(ta);
	int			lb = VARSIZE_ANY_EXHDR(tb);
	int			c = memcmp(VARDATA_ANY(ta), VARDATA_ANY(tb), Min(la, lb));

	return c != 0 ? c : (la > lb) - (la < lb);
}

/* Whether event (at, tx) is later than event (at0, tx0). */
bool
IngestEventIsLater(TimestampTz at, text *tx, TimestampTz at0, text *tx0)
{
	return at > at0 || (at == at0 && IngestTextCmpC(tx, tx0) > 0);
}

/* The latest row merged so far. */
typedef struct LatestState
{
	bool		at_null;
	TimestampTz at;
	text	   *tx;				/* NULL: a NULL transaction_id */
	bool		value_null;
	float8		value;
} LatestState;

/* Whether (at, tx) with their NULLs is later than the state's. */
static bool
later_than(LatestState *s, bool at_null, TimestampTz at, text *tx)
{
	if (s->at_null != at_null)
		return at_null;
	if (!at_null && at != s->at)
		return at > s->at;
	/* the same instant, or both NULL */
	if (s->tx == NULL || tx == NULL)
		return tx == NULL && s->tx != NULL;
	return IngestTextCmpC(tx, s->tx) > 0;
}

PG_FUNCTION_INFO_V1(ingest_latest_trans);

/* ingest_internal.latest_trans(internal, value, at, tx) */
Datum
ingest_latest_trans(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	LatestState *s = PG_ARGISNULL(0) ? NULL : (LatestState *) PG_GETARG_POINTER(0);
	bool		at_null = PG_ARGISNULL(2);
	TimestampTz at = at_null ? 0 : PG_GETARG_TIMESTAMPTZ(2);
	text	   *tx = PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3);

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "ingest_latest_trans called in non-aggregate context");
	if (s != NULL && !later_than(s, at_null, at, tx))
		PG_RETURN_POINTER(s);
	if (s == NULL)
		s = MemoryContextAllocZero(aggcxt, sizeof(LatestState));
	else if (s->tx != NULL)
		pfree(s->tx);
	s->at_null = at_null;
	s->at = at;
	s->tx = tx ? (text *) MemoryContextAlloc(aggcxt, VARSIZE_ANY(tx)) : NULL;
	if (tx)
		memcpy(s->tx, tx, VARSIZE_ANY(tx));
	s->value_null = PG_ARGISNULL(1);
	s->value = s->value_null ? 0 : PG_GETARG_FLOAT8(1);
	PG_RETURN_POINTER(s);
}

PG_FUNCTION_INFO_V1(ingest_latest_value_final);

Datum
ingest_latest_value_final(PG_FUNCTION_ARGS)
{
	LatestState *s = (LatestState *) PG_GETARG_POINTER(0);

	if (s->value_null)
		PG_RETURN_NULL();
	PG_RETURN_FLOAT8(s->value);
}

PG_FUNCTION_INFO_V1(ingest_latest_tx_final);

Datum
ingest_latest_tx_final(PG_FUNCTION_ARGS)
{
	LatestState *s = (LatestState *) PG_GETARG_POINTER(0);

	if (s->tx == NULL)
		PG_RETURN_NULL();
	/* a copy: the state is shared with latest_value's final */
	PG_RETURN_TEXT_P(DatumGetTextPCopy(PointerGetDatum(s->tx)));
}
