/*-------------------------------------------------------------------------
 *
 * citusload.c
 *	  ingest.load of a table distributed by ingest.distribute_table(): the
 *	  coordinator reads and checks the rows, Citus stores them.
 *
 * The coordinator's table is an empty shell and its ledger lives on the
 * shards, so the loader can neither claim keys nor write rows there.  Each
 * row that passed the loader's checks (parse, conversion, NOT NULL, key
 * width, a partition for its day) is queued, and up to 50,000 rows at a
 * time go to Citus as one
 *
 *	  WITH stored AS (INSERT INTO tbl (columns) SELECT ... FROM unnest($1)
 *					  RETURNING 1)
 *	  SELECT count(*) FROM stored
 *
 * over an array of the table's rows.  Citus sends the rows to their shards,
 * where ingest's row trigger deduplicates each against the colocated ledger
 * shard and the statement triggers feed its rollups, as for any INSERT
 * there; the rows returned are those stored, the others were duplicates
 * (counted in SQL: Citus reports the rows it sent as the INSERT's count).
 * The queued rows are sorted by key and Citus runs the INSERT shard after
 * shard, so two loads claim keys in the same order and never deadlock with
 * each other; one that deadlocks with another transaction fails with 40P01,
 * as an INSERT does (Citus's detector cancels it, which leaves nothing to
 * retry from).  This path does not compare a
 * duplicate's payload with the stored one: ingest.load reports conflicts as
 * NULL for a distributed table.
 *
 * The INSERT runs as the caller, as the load does: the caller's INSERT
 * privilege on the named columns was checked as COPY checks it, and the
 * columns not named take their defaults on the way, as in COPY.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/memutils.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/uuid.h"

#include "loader.h"

/* Rows sent in one INSERT: each costs Citus a round of intermediate results. */
#define SEND_MAX_ROWS	50000
#define SEND_MAX_BYTES	(16 * 1024 * 1024)

/* A checked row waiting to be sent, with its key for sorting. */
typedef struct PendingRow
{
	pg_uuid_t	org;
	text	   *tx;
	int64		seq;			/* input order, among rows of one key */
	Datum		row;			/* a datum of the table's row type */
} PendingRow;

struct IngestCitusLoad
{
	Relation	rel;
	SPIPlanPtr	plan;
	AttrNumber	org_att;
	AttrNumber	tx_att;
	MemoryContext cxt;			/* the pending rows, reset per send */
	PendingRow *pending;
	int			npending;
	Size		bytes;
	int64		sent;
	int64		stored;
};

/*
 * Pending rows by (organization_id, transaction_id), bytewise (any fixed
 * order will do), and a key's rows in input order: the first is stored.
 */
static int
compare_keys(const void *a, const void *b)
{
	const PendingRow *x = (const PendingRow *) a;
	const PendingRow *y = (const PendingRow *) b;
	int			c = memcmp(x->org.data, y->org.data, UUID_LEN);
	int			lx;
	int			ly;

	if (c != 0)
		return c;
	lx = VARSIZE_ANY_EXHDR(x->tx);
	ly = VARSIZE_ANY_EXHDR(y->tx);
	c = memcmp(VARDATA_ANY(x->tx), VARDATA_ANY(y->tx), Min(lx, ly));
	if (c != 0)
		return c;
	if (lx != ly)
		return lx < ly ? -1 : 1;
	return (x->seq > y->seq) - (x->seq < y->seq);
}

/*
 * Prepare the INSERT of "rel" for the payload's columns "attnums".  The
 * caller is connected to SPI for the whole load.
 */
IngestCitusLoad *
IngestCitusLoadBegin(Relation rel, List *attnums)
{
	IngestCitusLoad *c = palloc0(sizeof(IngestCitusLoad));
	TupleDesc	desc = RelationGetDescr(rel);
	Oid			arraytype = get_array_type(rel->rd_rel->reltype);
	StringInfoData sql;
	StringInfoData select;
	ListCell   *lc;

	if (!OidIsValid(arraytype))
		elog(ERROR, "no array type for the row type of \"%s\"", RelationGetRelationName(rel));
	c->rel = rel;
	c->org_att = get_attnum(RelationGetRelid(rel), "organization_id");
	c->tx_att = get_attnum(RelationGetRelid(rel), "transaction_id");
	c->cxt = AllocSetContextCreate(CurrentMemoryContext, "ingest citus load",
								   ALLOCSET_DEFAULT_SIZES);
	c->pending = palloc(sizeof(PendingRow) * SEND_MAX_ROWS);

	initStringInfo(&sql);
	initStringInfo(&select);
	appendStringInfo(&sql, "WITH stored AS (INSERT INTO %s (",
					 IngestQualifiedName(RelationGetRelid(rel)));
	foreach(lc, attnums)
	{
		const char *name = quote_identifier(NameStr(TupleDescAttr(desc, lfirst_int(lc) - 1)->attname));

		appendStringInfo(&sql, "%s%s", lc == list_head(attnums) ? "" : ", ", name);
		appendStringInfo(&select, "%su.%s", lc == list_head(attnums) ? "" : ", ", name);
	}
	appendStringInfo(&sql, ") SELECT %s FROM pg_catalog.unnest($1) AS u RETURNING 1) "
					 "SELECT pg_catalog.count(*) FROM stored", select.data);
	c->plan = SPI_prepare(sql.data, 1, &arraytype);
	if (c->plan == NULL)
		elog(ERROR, "could not prepare the insert into \"%s\": %s",
			 RelationGetRelationName(rel), SPI_result_code_string(SPI_result));
	return c;
}

/* Send the pending rows, sorted by key, in one INSERT. */
static void
send_pending(IngestCitusLoad *c)
{
	Datum	   *elems;
	Datum		arg;
	int			ret;
	bool		isnull;
	int			i;
	int			guc_level;
	MemoryContext old;

	if (c->npending == 0)
		return;
	old = MemoryContextSwitchTo(c->cxt);
	qsort(c->pending, c->npending, sizeof(PendingRow), compare_keys);
	elems = palloc(sizeof(Datum) * c->npending);
	for (i = 0; i < c->npending; i++)
		elems[i] = c->pending[i].row;
	arg = PointerGetDatum(construct_array(elems, c->npending,
										  RelationGetDescr(c->rel)->tdtypeid,
										  -1, false, TYPALIGN_DOUBLE));
	/*
	 * One shard after another, in shard order, and each shard's keys in key
	 * order: two loads then claim their keys in the same order and wait for
	 * each other instead of deadlocking across shards.
	 */
	guc_level = NewGUCNestLevel();
	(void) set_config_option("citus.multi_shard_modify_mode", "sequential", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	ret = SPI_execute_plan(c->plan, &arg, NULL, false, 0);
	AtEOXact_GUC(true, guc_level);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not insert into \"%s\": %s",
			 RelationGetRelationName(c->rel), SPI_result_code_string(ret));
	c->stored += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											 1, &isnull));
	c->sent += c->npending;
	SPI_freetuptable(SPI_tuptable);
	MemoryContextSwitchTo(old);
	MemoryContextReset(c->cxt);
	c->npending = 0;
	c->bytes = 0;
}

/* Queue the "n" checked rows of a batch, sending when enough are queued. */
void
IngestCitusLoadAdd(IngestCitusLoad *c, LoadRow **rows, int n)
{
	TupleDesc	desc = RelationGetDescr(c->rel);
	int			i;

	for (i = 0; i < n; i++)
	{
		LoadRow    *r = rows[i];
		PendingRow *p = &c->pending[c->npending++];
		MemoryContext old = MemoryContextSwitchTo(c->cxt);

		memcpy(p->org.data, DatumGetUUIDP(r->values[c->org_att - 1])->data, UUID_LEN);
		p->tx = DatumGetTextPCopy(r->values[c->tx_att - 1]);
		p->seq = c->sent + c->npending;
		p->row = heap_copy_tuple_as_datum(heap_form_tuple(desc, r->values, r->nulls), desc);
		MemoryContextSwitchTo(old);
		c->bytes += r->size;
		if (c->npending == SEND_MAX_ROWS || c->bytes >= SEND_MAX_BYTES)
			send_pending(c);
	}
}

/* Send what is queued; the rows sent and those stored (the rest were duplicates). */
void
IngestCitusLoadEnd(IngestCitusLoad *c, int64 *sent, int64 *stored)
{
	send_pending(c);
	*sent = c->sent;
	*stored = c->stored;
	MemoryContextDelete(c->cxt);
}
