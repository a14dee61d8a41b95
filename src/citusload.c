/*-------------------------------------------------------------------------
 *
 * citusload.c
 *	  ingest.load of a table distributed by ingest.distribute_table(): the
 *	  coordinator reads and checks the rows, Citus stores them.
 *
 * The coordinator's table is an empty shell and its ledger lives on the
 * shards, so the loader can neither claim keys nor write rows there.  Each
 * row that passed the loader's checks (parse, conversion with defaults,
 * NOT NULL, key, key width, a partition for its day) is queued.  Up to
 * 50,000 queued rows at a time are sorted by shard, then key, and each
 * shard's rows go to Citus as one
 *
 *	  WITH stored AS (INSERT INTO tbl (columns) OVERRIDING SYSTEM VALUE
 *					  SELECT ... FROM unnest($1) RETURNING 1)
 *	  SELECT count(*) FROM stored
 *
 * over an array of the table's rows.  Citus passes them through an
 * intermediate result to the shard, where ingest's row trigger
 * deduplicates each against the colocated ledger shard and the statement
 * triggers feed its rollups; the rows returned are those stored, the
 * others were duplicates (counted in SQL: Citus reports the rows it sent
 * as the INSERT's count).
 *
 * One shard per statement, shards in shard order, keys in key order: two
 * loads claim keys in the same order, and a statement that writes one
 * shard takes none of the locks with which Citus makes concurrent
 * multi-shard writes wait for each other until they commit.  The shard of
 * a row is found here as Citus finds it (the hash of organization_id in
 * the shards' hash ranges); were it not, Citus would still route every row
 * right, in a statement of two shards.  This path does not compare a
 * duplicate's payload with the stored one: ingest.load reports conflicts
 * as NULL for a distributed table.
 *
 * The INSERT runs as the caller, whose INSERT privilege was checked as
 * COPY checks it (Citus connects to the workers as the current user, and
 * refuses column-level grants on a distributed table, so the caller holds
 * INSERT on the whole table).  It sends every column with the values the
 * loader computed, defaults and identity included, as COPY writes them:
 * nothing is evaluated twice.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

#include "loader.h"

/* Queued rows sent at a time: memory is the rows' size once. */
#define SEND_MAX_ROWS	50000
#define SEND_MAX_BYTES	(16 * 1024 * 1024)

/* A checked row waiting to be sent, with its shard and key for sorting. */
typedef struct PendingRow
{
	int			shard;			/* index in the shard ranges, -1 unknown */
	pg_uuid_t	org;
	text	   *tx;
	int64		seq;			/* input order, among rows of one key */
	Datum		row;			/* a datum of the table's row type */
} PendingRow;

/* A shard's range of organization_id hashes. */
typedef struct ShardRange
{
	int32		min;
	int32		max;
} ShardRange;

struct IngestCitusLoad
{
	Relation	rel;
	SPIPlanPtr	plan;
	AttrNumber	org_att;
	AttrNumber	tx_att;
	FmgrInfo	hash;			/* uuid's hash function, as Citus's */
	ShardRange *ranges;			/* ordered by min */
	int			nranges;
	MemoryContext cxt;			/* the pending rows, reset per send */
	PendingRow *pending;
	int			npending;
	Size		bytes;
	int64		sent;
	int64		stored;
};

/*
 * Pending rows by shard, then (organization_id, transaction_id) bytewise
 * (any fixed order will do), and a key's rows in input order: the first is
 * stored.
 */
static int
compare_rows(const void *a, const void *b)
{
	const PendingRow *x = (const PendingRow *) a;
	const PendingRow *y = (const PendingRow *) b;
	int			c;
	int			lx;
	int			ly;

	if (x->shard != y->shard)
		return x->shard < y->shard ? -1 : 1;
	c = memcmp(x->org.data, y->org.data, UUID_LEN);
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

/* The hash ranges of the table's shards, from Citus's metadata (SPI connected). */
static void
read_ranges(IngestCitusLoad *c)
{
	Datum		arg = ObjectIdGetDatum(RelationGetRelid(c->rel));
	bool		isnull;
	int			rc;
	uint64		i;

	rc = SPI_execute_with_args(
		"SELECT s.shardminvalue::pg_catalog.int4, s.shardmaxvalue::pg_catalog.int4 "
		"  FROM pg_catalog.pg_dist_shard s "
		" WHERE s.logicalrelid OPERATOR(pg_catalog.=) $1 "
		" ORDER BY 1",
		1, (Oid[]) {OIDOID}, &arg, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the shards of \"%s\": %s",
			 RelationGetRelationName(c->rel), SPI_result_code_string(rc));
	c->nranges = (int) SPI_processed;
	c->ranges = palloc(sizeof(ShardRange) * Max(c->nranges, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		c->ranges[i].min = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
													   SPI_tuptable->tupdesc, 1, &isnull));
		c->ranges[i].max = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
													   SPI_tuptable->tupdesc, 2, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
}

/* The shard (index in the ranges) of an organization, -1 if none holds it. */
static int
shard_of(IngestCitusLoad *c, Datum org)
{
	int32		h = DatumGetInt32(FunctionCall1(&c->hash, org));
	int			lo = 0;
	int			hi = c->nranges - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (h < c->ranges[mid].min)
			hi = mid - 1;
		else if (h > c->ranges[mid].max)
			lo = mid + 1;
		else
			return mid;
	}
	return -1;
}

/* Prepare the load of "rel" into Citus; SPI connected. */
IngestCitusLoad *
IngestCitusLoadBegin(Relation rel)
{
	IngestCitusLoad *c = palloc0(sizeof(IngestCitusLoad));
	TupleDesc	desc = RelationGetDescr(rel);
	Oid			arraytype = get_array_type(rel->rd_rel->reltype);
	TypeCacheEntry *uuid = lookup_type_cache(UUIDOID, TYPECACHE_HASH_PROC);
	StringInfoData sql;
	StringInfoData select;
	MemoryContext cxt = CurrentMemoryContext;
	bool		first = true;
	int			a;

	if (!OidIsValid(arraytype) || !OidIsValid(uuid->hash_proc))
		elog(ERROR, "no array type for \"%s\" or no hash function for uuid",
			 RelationGetRelationName(rel));
	c->rel = rel;
	c->org_att = get_attnum(RelationGetRelid(rel), "organization_id");
	c->tx_att = get_attnum(RelationGetRelid(rel), "transaction_id");
	fmgr_info(uuid->hash_proc, &c->hash);
	read_ranges(c);
	/* SPI leaves its procedure context current (the ranges live there) */
	MemoryContextSwitchTo(cxt);
	c->cxt = AllocSetContextCreate(cxt, "ingest citus load",
								   ALLOCSET_DEFAULT_SIZES);
	c->pending = palloc(sizeof(PendingRow) * SEND_MAX_ROWS);

	/* every stored column: a generated one is computed on the shard */
	initStringInfo(&sql);
	initStringInfo(&select);
	appendStringInfo(&sql, "WITH stored AS (INSERT INTO %s (",
					 IngestQualifiedName(RelationGetRelid(rel)));
	for (a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);
		const char *name = quote_identifier(NameStr(att->attname));

		if (att->attisdropped || att->attgenerated)
			continue;
		appendStringInfo(&sql, "%s%s", first ? "" : ", ", name);
		appendStringInfo(&select, "%su.%s", first ? "" : ", ", name);
		first = false;
	}
	appendStringInfo(&sql, ") OVERRIDING SYSTEM VALUE SELECT %s FROM pg_catalog.unnest($1) AS u "
					 "RETURNING 1) SELECT pg_catalog.count(*) FROM stored", select.data);
	c->plan = SPI_prepare(sql.data, 1, &arraytype);
	MemoryContextSwitchTo(cxt);
	if (c->plan == NULL)
		elog(ERROR, "could not prepare the insert into \"%s\": %s",
			 RelationGetRelationName(rel), SPI_result_code_string(SPI_result));
	return c;
}

/* Send "n" rows of one shard in one INSERT (in the pending rows' context). */
static void
send_shard(IngestCitusLoad *c, PendingRow *rows, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * n);
	Datum		arg;
	bool		isnull;
	int			ret;
	int			i;

	for (i = 0; i < n; i++)
		elems[i] = rows[i].row;
	arg = PointerGetDatum(construct_array(elems, n, RelationGetDescr(c->rel)->tdtypeid,
										  -1, false, TYPALIGN_DOUBLE));
	ret = SPI_execute_plan(c->plan, &arg, NULL, false, 0);
	/* SPI leaves its procedure context current: the next shard's is ours */
	MemoryContextSwitchTo(c->cxt);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not insert into \"%s\": %s",
			 RelationGetRelationName(c->rel), SPI_result_code_string(ret));
	c->stored += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											 1, &isnull));
	c->sent += n;
	SPI_freetuptable(SPI_tuptable);
	pfree(DatumGetPointer(arg));
	pfree(elems);
}

/* Send the pending rows, shard after shard in shard order. */
static void
send_pending(IngestCitusLoad *c)
{
	MemoryContext old;
	int			from = 0;
	int			i;

	if (c->npending == 0)
		return;
	old = MemoryContextSwitchTo(c->cxt);
	qsort(c->pending, c->npending, sizeof(PendingRow), compare_rows);
	for (i = 1; i <= c->npending; i++)
	{
		if (i < c->npending && c->pending[i].shard == c->pending[from].shard)
			continue;
		CHECK_FOR_INTERRUPTS();
		send_shard(c, &c->pending[from], i - from);
		from = i;
	}
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
		HeapTuple	tuple = heap_form_tuple(desc, r->values, r->nulls);
		MemoryContext old = MemoryContextSwitchTo(c->cxt);

		/* copied: the batch's memory is reset before the rows are sent */
		p->shard = shard_of(c, r->values[c->org_att - 1]);
		memcpy(p->org.data, DatumGetUUIDP(r->values[c->org_att - 1])->data, UUID_LEN);
		p->tx = DatumGetTextPCopy(r->values[c->tx_att - 1]);
		p->seq = c->sent + c->npending;
		p->row = heap_copy_tuple_as_datum(tuple, desc);
		MemoryContextSwitchTo(old);
		c->bytes += tuple->t_len;
		heap_freetuple(tuple);
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
