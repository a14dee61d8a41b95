/*-------------------------------------------------------------------------
 *
 * dedup.c
 *	  Exact (organization_id, transaction_id) dedup: the key ledger.
 *
 * PostgreSQL has no unique index across partitions, and a unique key on a
 * table partitioned by day must contain the timestamp, which would store a
 * re-stamped retry twice.  So every managed table has its keys in a ledger,
 * its side table ingest_side.<name>_keys, primary key (organization_id,
 * transaction_id), written in the same transaction as the events.  A key is
 * claimed with INSERT ... ON CONFLICT DO NOTHING: a second session claiming
 * the same key waits for the first and then skips (or wins, if the first
 * aborted), without an error.  Each key carries a hash of its event's
 * payload, so that a duplicate whose payload differs is told apart as a
 * conflict.
 *
 * The loader claims a batch's keys sorted in the ledger index's order (uuid
 * bytes, then transaction_id in the "C" collation), so the B-tree is written
 * in order instead of at random, one key after the other as INSERT ... ON
 * CONFLICT DO NOTHING does, in C: most keys are new, so each is inserted
 * speculatively without that statement's probe first; the unique index's
 * own check during the insertion finds a conflict, the speculative tuple is
 * then killed, and the key's claimant is waited for if its transaction is
 * in progress.  A loader never holds a key while waiting for one that sorts
 * before it, so loaders whose keys arrive in the same order never
 * deadlock; a load that can be loaded again does not wait for an older
 * transaction while it holds keys at all (wait-die, yield_or_wait).  When
 * most keys of a batch conflict (a replay), the next batch checks before
 * inserting.  Plain INSERT and COPY claim through a row trigger; every
 * other change keeps the ledger through the statement triggers of
 * changes.c.  Retention forgets the keys of retired partitions.  The
 * ledger is written as the table's owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/skey.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/subtrans.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "utils/syscache.h"
#include "nodes/plannodes.h"
#include "catalog/pg_index.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "storage/lmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

#include "compat.h"
#include "loader.h"

/* Columns whose values make up an event's payload, for conflict detection. */
static const char *const payload_columns[] = {
	"external_customer_id", "code", "timestamp", "properties", "value",
	"decimal_value"
};
#define NUM_PAYLOAD_COLUMNS lengthof(payload_columns)

struct IngestLedger
{
	Oid			relid;
	Oid			owner;			/* ledger statements run as the table's owner */
	AttrNumber	org_att;
	AttrNumber	tx_att;
	SPIPlanPtr	lookup;
	MemoryContext cxt;
	/* the speculative path */
	EState	   *estate;
	Relation	keys;			/* the table's ledger */
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	BulkInsertState bistate;
	MemoryContext keycxt;		/* reset per key */
	bool		probe_first;	/* last batch was mostly conflicts */
	struct PayloadColumns *payload_cols;
	/* the key whose claimant a wait is for, while it waits (loadretry.c) */
	bool		waiting;
	Datum		wait_org;
	Datum		wait_tx;
	/* a load that can be loaded again yields instead of waiting holding keys */
	bool		may_yield;
	bool		yielded;
	int64		nclaimed;		/* keys this ledger claimed */
	TupleTableSlot *probe_slot;
	/* the speculative insertion token of the keys being claimed, if held */
	bool		token_held;
	uint32		token;
};

/*
 * The widest keys the side tables' B-trees hold with room to spare (an
 * index row over a third of a page fails): a transaction_id in the ledger,
 * a code and an external_customer_id together in the rollups.  A wider
 * event could be neither claimed nor folded, so it is refused (set aside
 * by the loader).  Returns why, or NULL.
 */
#define MAX_KEY_BYTES 2000

static Size
text_bytes(Datum d, bool isnull)
{
	return isnull ? 0 : toast_raw_datum_size(d) - VARHDRSZ;
}

char *
IngestKeyWidthError(Datum tx, bool tx_null, Datum code, bool code_null,
					Datum customer, bool customer_null)
{
	Size		t = text_bytes(tx, tx_null);
	Size		k = text_bytes(code, code_null) + text_bytes(customer, customer_null);

	if (t > MAX_KEY_BYTES)
		return psprintf("transaction_id of %zu bytes exceeds the %d the key ledger indexes",
						t, MAX_KEY_BYTES);
	if (k > MAX_KEY_BYTES)
		return psprintf("code and external_customer_id of %zu bytes together exceed the %d the rollups index",
						k, MAX_KEY_BYTES);
	return NULL;
}

/*
 * The columns ingest keys, rolls up and routes by are never null, whatever
 * an adopted table's own constraints say: an event without one could be
 * neither claimed nor rolled up.  Why a null in one of them is refused.
 */
const char *const IngestNeverNull[INGEST_NEVER_NULL] = {
	"organization_id", "transaction_id", "code", "external_customer_id", "timestamp"
};

char *
IngestNullColumnError(const char *column)
{
	if (strcmp(column, "organization_id") == 0 || strcmp(column, "transaction_id") == 0)
		return psprintf("null value in column \"%s\" violates ingest's key (organization_id, transaction_id)",
						column);
	return psprintf("null value in column \"%s\" violates ingest's rollup key (code, external_customer_id, timestamp)",
					column);
}

PG_FUNCTION_INFO_V1(ingest_key_width_error);

/* ingest_side.key_width_error(transaction_id, code, external_customer_id) */
Datum
ingest_key_width_error(PG_FUNCTION_ARGS)
{
	char	   *why = IngestKeyWidthError(PG_GETARG_DATUM(0), PG_ARGISNULL(0),
										  PG_GETARG_DATUM(1), PG_ARGISNULL(1),
										  PG_GETARG_DATUM(2), PG_ARGISNULL(2));

	if (why == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(why));
}

static AttrNumber
column_attnum(Relation rel, const char *name)
{
	AttrNumber	a = get_attnum(RelationGetRelid(rel), name);

	if (a == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table \"%s\" has no column \"%s\"",
						RelationGetRelationName(rel), name)));
	return a;
}

/* Where the payload columns are in a tuple layout, and how to hash them. */
typedef struct PayloadColumns
{
	int			att[NUM_PAYLOAD_COLUMNS];	/* 0-based, -1 when absent */
	FmgrInfo   *hash[NUM_PAYLOAD_COLUMNS];
	Oid			collation[NUM_PAYLOAD_COLUMNS];
} PayloadColumns;

static void
payload_columns_init(TupleDesc desc, PayloadColumns *pc)
{
	int			i;
	int			a;

	for (i = 0; i < (int) NUM_PAYLOAD_COLUMNS; i++)
	{
		pc->att[i] = -1;
		for (a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (!att->attisdropped && strcmp(NameStr(att->attname), payload_columns[i]) == 0)
			{
				TypeCacheEntry *tc = lookup_type_cache(att->atttypid,
													   TYPECACHE_HASH_EXTENDED_PROC_FINFO);

				if (!OidIsValid(tc->hash_extended_proc_finfo.fn_oid))
					elog(ERROR, "no extended hash function for type %u", tc->type_id);
				pc->att[i] = a;
				pc->hash[i] = &tc->hash_extended_proc_finfo;	/* type cache: long-lived */
				pc->collation[i] = att->attcollation;
				break;
			}
		}
	}
}

/*
 * Hash of an event's payload: the type's own extended hash of each payload
 * column, combined in a fixed order.  Equal values hash equally whatever
 * their input spelling ('1.0' and '1' as numeric, key order in jsonb).
 */
static uint64
payload_hash(const PayloadColumns *pc, Datum *values, bool *nulls)
{
	uint64		h = 0;
	int			i;

	for (i = 0; i < (int) NUM_PAYLOAD_COLUMNS; i++)
	{
		uint64		ch = 0x9e3779b97f4a7c15;	/* marks a NULL */
		int			a = pc->att[i];

		if (a >= 0 && !nulls[a])
			ch = DatumGetUInt64(FunctionCall2Coll(pc->hash[i], pc->collation[i],
												  values[a], UInt64GetDatum(0)));
		h = hash_combine64(h, ch);
	}
	return h;
}

uint64
IngestPayloadHash(TupleDesc desc, Datum *values, bool *nulls)
{
	PayloadColumns pc;

	payload_columns_init(desc, &pc);
	return payload_hash(&pc, values, nulls);
}

/* The payload hash of a row in the loaded table's layout. */
uint64
IngestLedgerHash(IngestLedger *l, Datum *values, bool *nulls)
{
	return payload_hash(l->payload_cols, values, nulls);
}

IngestLedger *
IngestLedgerBegin(Relation rel, IngestTable *t, EState *estate)
{
	IngestLedger *l = palloc0(sizeof(IngestLedger));
	char	   *ledger = IngestQualifiedName(t->ledger);
	IngestOwnerScope scope;

	l->relid = RelationGetRelid(rel);
	l->owner = t->owner;
	l->org_att = column_attnum(rel, "organization_id");
	l->payload_cols = palloc(sizeof(PayloadColumns));
	payload_columns_init(RelationGetDescr(rel), l->payload_cols);
	l->tx_att = column_attnum(rel, "transaction_id");
	l->cxt = CurrentMemoryContext;

	IngestOwnerPush(l->owner, true, &scope);
	/* a subplan: one index probe per key, never a hash of the whole ledger */
	l->lookup = SPI_prepare(psprintf(
		"SELECT (SELECT k.payload_hash FROM %s k "
		"         WHERE k.organization_id OPERATOR(pg_catalog.=) u.o "
		"           AND k.transaction_id OPERATOR(pg_catalog.=) u.t COLLATE \"C\") "
		"  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.uuid[]), "
		"                 pg_catalog.unnest($2::pg_catalog.text[])) AS u(o, t)", ledger),
		2, (Oid[]) {UUIDARRAYOID, TEXTARRAYOID});
	IngestOwnerPop(&scope);
	if (l->lookup == NULL)
		elog(ERROR, "could not prepare ledger statements: %s",
			 SPI_result_code_string(SPI_result));

	l->estate = estate;
	l->keys = table_open(t->ledger, RowExclusiveLock);
	l->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(l->rri, l->keys, 0, NULL, 0);
	ExecOpenIndices(l->rri, true);
	l->slot = table_slot_create(l->keys, NULL);
	l->probe_slot = table_slot_create(l->keys, NULL);
	l->bistate = GetBulkInsertState();
	l->keycxt = AllocSetContextCreate(CurrentMemoryContext, "ingest ledger key",
									  ALLOCSET_SMALL_SIZES);
	return l;
}

/*
 * The transaction in progress that holds a key (inserted it, or is deleting
 * it), without waiting for it: InvalidTransactionId when none does.
 * *stored: a version of the key is there (committed, or in progress).
 */
static TransactionId
key_holder(IngestLedger *l, Datum org, Datum tx, bool *stored)
{
	SnapshotData dirty;
	ScanKeyData skey[2];
	IndexScanDesc scan;
	TransactionId holder = InvalidTransactionId;
	Relation	pkey = NULL;

	InitDirtySnapshot(dirty);
	ScanKeyEntryInitialize(&skey[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   InvalidOid, F_UUID_EQ, org);
	ScanKeyEntryInitialize(&skey[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
						   C_COLLATION_OID, F_TEXTEQ, tx);
	for (int i = 0; i < l->rri->ri_NumIndices && pkey == NULL; i++)
		if (l->rri->ri_IndexRelationInfo[i]->ii_Unique)
			pkey = l->rri->ri_IndexRelationDescs[i];
	if (pkey == NULL)
		elog(ERROR, "the key ledger of table %u has no primary key", l->relid);
	scan = index_beginscan(l->keys, pkey, &dirty, NULL, 2, 0);
	index_rescan(scan, skey, 2, NULL, 0);
	*stored = false;
	while (index_getnext_slot(scan, ForwardScanDirection, l->probe_slot))
	{
		*stored = true;
		holder = TransactionIdIsValid(dirty.xmin) ? dirty.xmin : dirty.xmax;
		if (TransactionIdIsValid(holder))
			break;
	}
	index_endscan(scan);
	ExecClearTuple(l->probe_slot);
	return holder;
}

/* What a look at a key before waiting for its claimant found. */
typedef enum KeyLook
{
	KEY_WAIT,					/* wait for the claimant, if any, as before */
	KEY_STORED,					/* stored, by nobody in progress: a duplicate */
	KEY_FREE					/* not stored: insert it */
} KeyLook;

/*
 * Before waiting for a key's claimant: a load that holds keys already, and
 * can be loaded again, lets go of everything instead when the claimant's
 * transaction is older than its own (40P01, which loadretry.c takes as a
 * deadlock: it rolls the attempt back, waits for that claimant holding
 * nothing, and loads again).  Waiting, it could hold a key the claimant
 * meets later in a batch of its own, which sorts its keys in its own
 * order: a deadlock, found only after deadlock_timeout.  An older load
 * waits for a younger one (wait-die): so two loads never both let go and
 * meet again in step, and a load keeps its age (its top transaction) from
 * one attempt to the next, so it is not let go of for ever.
 */
static KeyLook
yield_or_wait(IngestLedger *l, Datum org, Datum tx)
{
	TransactionId holder;
	bool		stored;

	if (!l->may_yield || l->nclaimed == 0)
		return KEY_WAIT;
	holder = key_holder(l, org, tx, &stored);
	if (!TransactionIdIsValid(holder))
		return stored ? KEY_STORED : KEY_FREE;
	if (!TransactionIdPrecedes(SubTransGetTopmostTransaction(holder), GetTopTransactionId()))
		return KEY_WAIT;		/* a younger claimant: wait for it */
	l->waiting = true;
	l->wait_org = org;
	l->wait_tx = tx;
	l->yielded = true;
	ereport(ERROR,
			(errcode(ERRCODE_T_R_DEADLOCK_DETECTED),
			 errmsg("load let go of its keys for a key held by transaction %u", holder),
			 errdetail("The load is retried once that transaction ends.")));
	return KEY_WAIT;			/* keep compiler quiet */
}

/*
 * One speculative insertion token serves a run of keys claimed without a
 * conflict: a session that meets one of them while it is speculative waits
 * for the token until the run ends, then finds the key held, as it would
 * after a token of its own.  The token is let go before every wait for
 * another claimant, so that a session never waits holding one.  It saves
 * a lock acquisition and release per key.
 */
static uint32
token_take(IngestLedger *l, TransactionId xid)
{
	if (!l->token_held)
	{
		l->token = SpeculativeInsertionLockAcquire(xid);
		l->token_held = true;
	}
	return l->token;
}

static void
token_release(IngestLedger *l, TransactionId xid)
{
	/*
	 * By our own token, not SpeculativeInsertionLockRelease's idea of the
	 * latest one: code run by an index expression between take and release
	 * may have taken one of its own.
	 */
	if (l->token_held)
	{
		LOCKTAG		tag;

		SET_LOCKTAG_SPECULATIVE_INSERTION(tag, xid, l->token);
		LockRelease(&tag, ExclusiveLock, false);
		l->token_held = false;
	}
}

/*
 * Claim one key as INSERT ... ON CONFLICT DO NOTHING claims it, without its
 * probe before the insert when most keys are new: a speculative insertion
 * that the unique index checks.  On a conflict the tuple is killed, and
 * ExecCheckIndexConstraints waits for the key's claimant if its
 * transaction is in progress: if the key is still held it is a duplicate
 * (false), if the claimant aborted the insertion is tried again.  With
 * probe_first (a replay: mostly duplicates) the wait-and-check comes first.
 *
 * Keys are claimed in the batch's sorted order, each settled before the
 * next: a session waits for a key holding only keys that sort before it,
 * so loaders whose keys arrive in the same order never deadlock.
 */
static bool
claim_key(IngestLedger *l, Datum org, Datum tx, uint64 hash, bool probe_first)
{
	TupleTableSlot *slot = l->slot;
	TransactionId xid = GetCurrentTransactionId();
	bool		claimed = false;
	MemoryContext old = MemoryContextSwitchTo(l->keycxt);

	for (;;)
	{
		ItemPointerData conflict_tid;
		uint32		token;
		bool		conflict = false;

		CHECK_FOR_INTERRUPTS();
		ExecClearTuple(slot);
		slot->tts_values[0] = org;
		slot->tts_values[1] = tx;
		slot->tts_values[2] = Int64GetDatum((int64) hash);
		memset(slot->tts_isnull, 0, sizeof(bool) * 3);
		ExecStoreVirtualTuple(slot);

		if (probe_first)
		{
			KeyLook		look;
			bool		held;

			/* never wait for another claimant holding the token */
			token_release(l, xid);
			look = yield_or_wait(l, org, tx);
			held = (look == KEY_STORED);

			if (look == KEY_WAIT)
			{
				l->waiting = true;
				l->wait_org = org;
				l->wait_tx = tx;
				held = !ExecCheckIndexConstraints(l->rri, slot, l->estate, &conflict_tid,
												  NULL, NIL);
				l->waiting = false;
			}
			if (held)
				break;			/* a duplicate */
		}

		token = token_take(l, xid);
		table_tuple_insert_speculative(l->keys, slot, GetCurrentCommandId(true), 0,
									   l->bistate, token);
		list_free(ExecInsertIndexTuples(l->rri, slot, l->estate, false, true,
										&conflict, NIL, false));
		table_tuple_complete_speculative(l->keys, slot, token, !conflict);
		ResetPerTupleExprContext(l->estate);
		if (!conflict)
		{
			claimed = true;
			l->nclaimed++;
			break;
		}
		probe_first = true;		/* wait for the claimant, then look again */
	}
	ResetPerTupleExprContext(l->estate);
	MemoryContextSwitchTo(old);
	MemoryContextReset(l->keycxt);
	return claimed;
}

/* Sort context: rows by key in the ledger index's order, then input order. */
static LoadRow **sort_rows;
static AttrNumber sort_org;
static AttrNumber sort_tx;

static int
key_cmp(Datum org1, Datum tx1, Datum org2, Datum tx2)
{
	int			c = memcmp(DatumGetUUIDP(org1)->data, DatumGetUUIDP(org2)->data,
						   UUID_LEN);

	return c != 0 ? c : IngestTextCmpC(DatumGetTextPP(tx1), DatumGetTextPP(tx2));
}

static int
row_cmp(const void *a, const void *b)
{
	int			ia = *(const int *) a;
	int			ib = *(const int *) b;
	LoadRow    *ra = sort_rows[ia];
	LoadRow    *rb = sort_rows[ib];
	int			c = key_cmp(ra->values[sort_org - 1], ra->values[sort_tx - 1],
							rb->values[sort_org - 1], rb->values[sort_tx - 1]);

	if (c != 0)
		return c;
	return (ia > ib) - (ia < ib);
}

/* Statement arguments $1 and $2: the keys as uuid[] and text[]. */
static void
key_args(Datum *args, Datum *orgs, Datum *txs, int n)
{
	args[0] = PointerGetDatum(construct_array(orgs, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	args[1] = PointerGetDatum(construct_array(txs, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * Claim the keys of a batch of converted rows.  The first row of each key
 * in the batch is the candidate; later ones are duplicates.  Candidates
 * whose key the ledger already holds are duplicates too.  Rows that stay
 * ROW_CONVERTED own their key and must be written.
 */
void
IngestLedgerClaim(IngestLedger *l, LoadRow **rows, int nrows)
{
	int		   *order;
	int		   *cand;
	int		   *group;			/* by row: index in cand of its key's first row */
	uint64	   *ref_hash;		/* by cand: the payload hash the key is stored with */
	int			ncand = 0;
	int			nwin = 0;
	Datum	   *orgs;
	Datum	   *txs;
	Datum		args[2];
	bool	   *claimed;
	int			nheld = 0;
	int		   *cand_losers;
	int			i;
	int			rc;

	if (nrows == 0)
		return;

	order = palloc(sizeof(int) * nrows);
	for (i = 0; i < nrows; i++)
		order[i] = i;
	sort_rows = rows;
	sort_org = l->org_att;
	sort_tx = l->tx_att;
	qsort(order, nrows, sizeof(int), row_cmp);

	/* In-batch: the first occurrence wins. */
	cand = palloc(sizeof(int) * nrows);
	group = palloc(sizeof(int) * nrows);
	for (i = 0; i < nrows; i++)
	{
		LoadRow    *r = rows[order[i]];

		if (ncand > 0)
		{
			LoadRow    *first = rows[cand[ncand - 1]];

			if (key_cmp(first->values[l->org_att - 1], first->values[l->tx_att - 1],
						r->values[l->org_att - 1], r->values[l->tx_att - 1]) == 0)
			{
				r->state = ROW_DUPLICATE;
				group[order[i]] = ncand - 1;
				continue;
			}
		}
		group[order[i]] = ncand;
		cand[ncand++] = order[i];
	}
	ref_hash = palloc(sizeof(uint64) * Max(ncand, 1));
	for (i = 0; i < ncand; i++)
		ref_hash[i] = rows[cand[i]]->hash;

	orgs = palloc(sizeof(Datum) * Max(ncand, 1));
	txs = palloc(sizeof(Datum) * Max(ncand, 1));
	claimed = palloc0(sizeof(bool) * Max(ncand, 1));

	/* In key order; new keys, the common case, take one index descent. */
	for (i = 0; i < ncand; i++)
	{
		LoadRow    *r = rows[cand[i]];

		if (claim_key(l, r->values[l->org_att - 1], r->values[l->tx_att - 1], r->hash,
					  l->probe_first))
			claimed[i] = true;
		else
			nheld++;
	}
	token_release(l, GetCurrentTransactionId());
	/* Mostly known keys (a replay): probe before inserting next time. */
	l->probe_first = (nheld > ncand / 2);

	for (i = 0; i < ncand; i++)
	{
		orgs[i] = rows[cand[i]]->values[l->org_att - 1];
		txs[i] = rows[cand[i]]->values[l->tx_att - 1];
	}

	/* The rest were stored before: duplicates, maybe conflicts. */
	{
		int		   *loser = palloc(sizeof(int) * Max(ncand, 1));

		for (i = 0; i < ncand; i++)
		{
			if (claimed[i])
				continue;
			rows[cand[i]]->state = ROW_DUPLICATE;
			orgs[nwin] = orgs[i];
			txs[nwin] = txs[i];
			loser[nwin++] = i;
		}
		cand_losers = loser;
	}
	if (nwin > 0)
	{
		uint64		k;
		MemoryContext cxt = CurrentMemoryContext;

		key_args(args, orgs, txs, nwin);
		/* not read-only: a fresh snapshot sees our own earlier batches' keys */
		AS_OWNER(l->owner, rc = SPI_execute_plan(l->lookup, args, NULL, false, 0));
		/* SPI leaves its procedure context current: the batch's is ours */
		MemoryContextSwitchTo(cxt);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not look up keys: %s", SPI_result_code_string(rc));
		/* one row per key offered, in order */
		if (SPI_processed != (uint64) nwin)
			elog(ERROR, "looked up %d keys, got " UINT64_FORMAT " rows", nwin, SPI_processed);
		for (k = 0; k < SPI_processed; k++)
		{
			bool		isnull;
			Datum		stored = SPI_getbinval(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 1, &isnull);

			/*
			 * NULL: claimed by a transaction our snapshot does not see.
			 * Under REPEATABLE READ or SERIALIZABLE that is a serialization
			 * failure, as for INSERT ... ON CONFLICT DO NOTHING: the load
			 * would skip a row for an event it cannot see.
			 */
			if (!isnull)
				ref_hash[cand_losers[k]] = (uint64) DatumGetInt64(stored);
			else if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not serialize access due to concurrent insert"),
						 errdetail("Key (organization_id, transaction_id)=(%s, %s) was stored by a transaction this one does not see.",
								   DatumGetCString(DirectFunctionCall1(uuid_out, orgs[k])),
								   TextDatumGetCString(txs[k]))));
		}
		SPI_freetuptable(SPI_tuptable);
	}

	/* A duplicate conflicts when its payload differs from the stored one. */
	for (i = 0; i < nrows; i++)
	{
		LoadRow    *r = rows[i];

		if (r->state == ROW_DUPLICATE)
			r->conflict = (r->hash != ref_hash[group[i]]);
	}
}

/*
 * The key a wait for its claimant was in when an error (a deadlock) broke
 * it off; the values are the batch's.
 */
bool
IngestLedgerWaitingFor(IngestLedger *l, Datum *org, Datum *tx)
{
	*org = l->wait_org;
	*tx = l->wait_tx;
	return l->waiting;
}

/* A load that can be loaded again yields keys instead of waiting holding them. */
void
IngestLedgerMayYield(IngestLedger *l)
{
	l->may_yield = true;
}

/* Did an error come from a yield rather than a deadlock? */
bool
IngestLedgerYielded(IngestLedger *l)
{
	return l->yielded;
}

/*
 * Wait until no transaction in progress holds the key: before a retried
 * load claims anything, so that it waits holding nothing.
 */
void
IngestLedgerAwait(IngestLedger *l, Datum org, Datum tx)
{
	ItemPointerData conflict_tid;

	ExecClearTuple(l->slot);
	l->slot->tts_values[0] = org;
	l->slot->tts_values[1] = tx;
	l->slot->tts_values[2] = Int64GetDatum(0);
	memset(l->slot->tts_isnull, 0, sizeof(bool) * 3);
	ExecStoreVirtualTuple(l->slot);
	(void) ExecCheckIndexConstraints(l->rri, l->slot, l->estate, &conflict_tid, NULL, NIL);
	ResetPerTupleExprContext(l->estate);
	ExecClearTuple(l->slot);
}

void
IngestLedgerEnd(IngestLedger *l)
{
	SPI_freeplan(l->lookup);
	FreeBulkInsertState(l->bistate);
	ExecDropSingleTupleTableSlot(l->slot);
	ExecDropSingleTupleTableSlot(l->probe_slot);
	ExecCloseIndices(l->rri);
	table_close(l->keys, NoLock);
	MemoryContextDelete(l->keycxt);
	pfree(l);
}

/*
 * What the row trigger needs per table it fires on, kept for the rest of
 * the transaction: a plain INSERT of many rows looks it up once.
 */
typedef struct TriggerTarget
{
	Oid			relid;			/* the table or partition the trigger fires on */
	bool		valid;			/* no relcache invalidation since it was made */
	bool		managed;		/* its root is managed and ready */
	Oid			owner;
	Oid			root;			/* the managed table */
	SPIPlanPtr	claim;
	AttrNumber	org_att;
	AttrNumber	tx_att;
	AttrNumber	code_att;
	AttrNumber	customer_att;
	AttrNumber	never_null[INGEST_NEVER_NULL];	/* IngestNeverNull's */
	PayloadColumns payload_cols;
} TriggerTarget;

static HTAB *trigger_targets = NULL;

static void
trigger_targets_reset(XactEvent event, void *arg)
{
	HASH_SEQ_STATUS seq;
	TriggerTarget *tt;

	if (trigger_targets == NULL ||
		!(event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		  event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		  event == XACT_EVENT_PREPARE))
		return;
	hash_seq_init(&seq, trigger_targets);
	while ((tt = hash_seq_search(&seq)) != NULL)
		if (tt->claim)
			SPI_freeplan(tt->claim);
	hash_destroy(trigger_targets);
	trigger_targets = NULL;
}

/*
 * Any relcache invalidation (ALTER TABLE ... OWNER TO, a new partition, the
 * table dropped and made again) may change what an entry says, its owner
 * above all: the entry is made again at its next use.  The plan is freed
 * there, not here, as an invalidation can arrive while it runs.
 */
static void
trigger_targets_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	TriggerTarget *tt;

	if (trigger_targets == NULL)
		return;
	hash_seq_init(&seq, trigger_targets);
	while ((tt = hash_seq_search(&seq)) != NULL)
		tt->valid = false;
}

static TriggerTarget *
trigger_target(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	TriggerTarget *tt;
	bool		found;
	IngestTable t;
	static bool callback_registered = false;

	if (trigger_targets == NULL)
	{
		HASHCTL		ctl;

		if (!callback_registered)
		{
			RegisterXactCallback(trigger_targets_reset, NULL);
			CacheRegisterRelcacheCallback(trigger_targets_invalidate, (Datum) 0);
			callback_registered = true;
		}
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(TriggerTarget);
		ctl.hcxt = TopTransactionContext;
		trigger_targets = hash_create("ingest trigger targets", 16, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	tt = hash_search(trigger_targets, &relid, HASH_ENTER, &found);
	if (found && tt->valid)
		return tt;
	if (found && tt->claim)
		SPI_freeplan(tt->claim);

	tt->valid = true;
	tt->managed = false;
	tt->claim = NULL;
	PG_TRY();
	{
		if (IngestLookupTable(IngestRootOf(relid), &t) && t.ready)
		{
			IngestOwnerScope scope;
			SPIPlanPtr	p;

			tt->owner = t.owner;
			tt->root = t.relid;
			tt->org_att = column_attnum(rel, "organization_id");
			tt->tx_att = column_attnum(rel, "transaction_id");
			tt->code_att = column_attnum(rel, "code");
			tt->customer_att = column_attnum(rel, "external_customer_id");
			for (int i = 0; i < INGEST_NEVER_NULL; i++)
				tt->never_null[i] = column_attnum(rel, IngestNeverNull[i]);
			/* the shape is enforced (tableddl.c); never read a Datum amiss */
			if (TupleDescAttr(RelationGetDescr(rel), tt->org_att - 1)->atttypid != UUIDOID ||
				TupleDescAttr(RelationGetDescr(rel), tt->tx_att - 1)->atttypid != TEXTOID)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("table \"%s\" no longer has the shape ingest manages",
								RelationGetRelationName(rel)),
						 errdetail("organization_id must be uuid and transaction_id text.")));
			payload_columns_init(RelationGetDescr(rel), &tt->payload_cols);
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			IngestOwnerPush(t.owner, true, &scope);
			p = SPI_prepare(psprintf("INSERT INTO %s (organization_id, transaction_id, payload_hash) "
									 "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
									 IngestQualifiedName(t.ledger)),
							3, (Oid[]) {UUIDOID, TEXTOID, INT8OID});
			IngestOwnerPop(&scope);
			if (p == NULL)
				elog(ERROR, "could not prepare ledger statement: %s",
					 SPI_result_code_string(SPI_result));
			SPI_keepplan(p);
			SPI_finish();
			tt->claim = p;
			tt->managed = true;
		}
		else
			IngestRefuseCitusTrigger(relid);	/* a Citus shard */
	}
	PG_CATCH();
	{
		hash_search(trigger_targets, &relid, HASH_REMOVE, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return tt;
}

/*
 * The MERGE node refuse_merge_moving_rows passed last: its actions are the
 * same for every row it writes, so they are looked at once.  Forgotten
 * when the statement's memory goes, before the address can be reused.
 */
static ModifyTableState *merge_checked = NULL;

static void
merge_check_gone(void *arg)
{
	if (merge_checked == arg)
		merge_checked = NULL;
}

/*
 * MERGE's UPDATE action may move a row to another partition; PostgreSQL 15
 * then shows the moved row in no transition table, so its key and hours
 * could not be kept: a MERGE that sets "timestamp" is refused.  A BEFORE
 * UPDATE row trigger may move a row too: this is called for a row that
 * enters a partition, which is a moved one when the MERGE writing it has
 * no INSERT action.  (With one, the moved row is among the inserted ones,
 * whose keys changes.c claims: 23505, the key being held.)  With several
 * MERGEs writing it in one statement (PostgreSQL 17's MERGE in WITH), the
 * row could be one's move or another's insert: refused.
 */
static void
refuse_merge_moving_rows(List *writers, Relation rel)
{
	Oid			root;
	ModifyTableState *mts;
	ModifyTable *mt;
	MemoryContextCallback *cb;
	bool		inserts = false;
	ListCell   *lr;
	ListCell   *lc;
	ListCell   *lc2;

	if (list_length(writers) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a statement may not write managed table \"%s\" by more than one MERGE",
						get_rel_name(IngestRootOf(RelationGetRelid(rel)))),
				 errdetail("ingest could not tell a row that one MERGE moves to another partition from a row that another inserts."),
				 errhint("Run the MERGE commands as statements of their own.")));
	mts = linitial_node(ModifyTableState, writers);
	mt = (ModifyTable *) mts->ps.plan;
	if (mts == merge_checked)
		return;
	root = IngestRootOf(RelationGetRelid(rel));

	/*
	 * Each result relation's actions number its columns its own way (a
	 * partition made after a DROP COLUMN of the table's has no gap; a MERGE
	 * into a view names them its way): "timestamp" is looked up in each.
	 */
	forboth(lr, mt->resultRelations, lc, mt->mergeActionLists)
	{
		Oid			relid = exec_rt_fetch(lfirst_int(lr), mts->ps.state)->relid;
		AttrNumber	ts = get_attnum(relid, "timestamp");

		foreach(lc2, (List *) lfirst(lc))
		{
			MergeAction *action = lfirst_node(MergeAction, lc2);
			ListCell   *col;

			if (action->commandType == CMD_INSERT)
				inserts = true;
			if (action->commandType != CMD_UPDATE)
				continue;
			foreach(col, action->updateColnos)
				if (lfirst_int(col) == ts)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("MERGE cannot update \"timestamp\" of managed table \"%s\"",
									get_rel_name(root)),
							 errdetail("A row moved to another day by MERGE would escape the key ledger and the rollups."),
							 errhint("Use UPDATE to change the timestamp of events.")));
		}
	}
	if (!inserts)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("MERGE cannot move a row of managed table \"%s\" to another partition",
						get_rel_name(root)),
				 errdetail("A BEFORE UPDATE row trigger changed the row's \"timestamp\"; a row moved by MERGE would escape the key ledger and the rollups."),
				 errhint("Use UPDATE to change the timestamp of events.")));
	cb = MemoryContextAlloc(mts->ps.state->es_query_cxt, sizeof(MemoryContextCallback));
	cb->func = merge_check_gone;
	cb->arg = mts;
	MemoryContextRegisterResetCallback(mts->ps.state->es_query_cxt, cb);
	merge_checked = mts;
}

/*
 * INSERT ... ON CONFLICT can skip a row after this trigger claimed its key
 * (a conflict on another unique index or an exclusion constraint): on a
 * table with either it is refused.  Without one there is nothing to conflict with but the key,
 * which this trigger deduplicates as ON CONFLICT DO NOTHING would.
 */
static void
refuse_on_conflict(ModifyTable *mt, Relation rel)
{
	List	   *indexes;
	ListCell   *lc;

	if (mt->onConflictAction == ONCONFLICT_NONE)
		return;
	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		bool		unique;

		if (!HeapTupleIsValid(tup))
			continue;
		/* with no conflict target, exclusion constraints arbitrate too */
		unique = ((Form_pg_index) GETSTRUCT(tup))->indisunique ||
			((Form_pg_index) GETSTRUCT(tup))->indisexclusion;
		ReleaseSysCache(tup);
		if (unique)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("INSERT ... ON CONFLICT is not supported on managed table \"%s\", which has a unique index or an exclusion constraint",
							get_rel_name(IngestRootOf(RelationGetRelid(rel)))),
					 errdetail("A row skipped for another unique index would keep the key ingest claimed for it."),
					 errhint("ingest skips rows whose key is stored already: use INSERT without ON CONFLICT.")));
	}
	list_free(indexes);
}

PG_FUNCTION_INFO_V1(ingest_dedup_row);

/*
 * BEFORE INSERT row trigger on managed tables: a plain INSERT (or COPY
 * that bypasses the loader) claims the row's key, and skips the row when
 * the key is stored already, as ON CONFLICT DO NOTHING would.  A row that
 * an UPDATE or MERGE moves between partitions holds its key already, and
 * MERGE's inserts are claimed by its statement trigger (changes.c).
 */
Datum
ingest_dedup_row(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerTarget *tt;
	TupleDesc	desc;
	HeapTuple	tuple;
	Datum	   *values;
	bool	   *nulls;
	Datum		args[3];
	CmdType		cmd;
	List	   *writers = NIL;
	ListCell   *lc;
	int			rc;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ingest_side.dedup_row() must be a BEFORE INSERT row trigger")));
	if (!IngestExecutorHooksInstalled())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ingest must be loaded via shared_preload_libraries"),
				 errhint("Add ingest to shared_preload_libraries and restart the server.")));

	tuple = td->tg_trigtuple;
	if (trigger_targets == NULL)
		IngestRequireCurrentVersion();
	cmd = IngestCommandWriting(RelationGetRelid(td->tg_relation), &writers);
	if (cmd == CMD_UPDATE)
		return PointerGetDatum(tuple);	/* a row moved: it holds its key */
	if (cmd == CMD_MERGE)
	{
		refuse_merge_moving_rows(writers, td->tg_relation);
		return PointerGetDatum(tuple);	/* claimed by the statement trigger */
	}
	if (cmd == CMD_INSERT)
		foreach(lc, writers)
			refuse_on_conflict((ModifyTable *) lfirst_node(ModifyTableState, lc)->ps.plan, td->tg_relation);

	tt = trigger_target(td->tg_relation);
	if (!tt->managed)
		return PointerGetDatum(tuple);

	desc = RelationGetDescr(td->tg_relation);
	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(tuple, desc, values, nulls);
	for (int i = 0; i < INGEST_NEVER_NULL; i++)
	{
		AttrNumber	att = tt->never_null[i];

		if (!nulls[att - 1])
			continue;
		/* a NOT NULL column's own check fails the insert, with its message */
		if (TupleDescAttr(desc, att - 1)->attnotnull)
			return PointerGetDatum(tuple);
		/* an adopted table's may be nullable: ingest's columns may not */
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg_internal("%s", IngestNullColumnError(IngestNeverNull[i])),
				 errtable(td->tg_relation)));
	}
	{
		char	   *why = IngestKeyWidthError(values[tt->tx_att - 1], false,
											  values[tt->code_att - 1], nulls[tt->code_att - 1],
											  values[tt->customer_att - 1], nulls[tt->customer_att - 1]);

		if (why != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("event too wide for managed table \"%s\"", get_rel_name(tt->root)),
					 errdetail("The %s.", why)));
	}

	args[0] = values[tt->org_att - 1];
	args[1] = values[tt->tx_att - 1];
	args[2] = Int64GetDatum((int64) payload_hash(&tt->payload_cols, values, nulls));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	AS_OWNER(tt->owner, rc = SPI_execute_plan(tt->claim, args, NULL, false, 0));
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not claim key: %s", SPI_result_code_string(rc));
	rc = (int) SPI_processed;
	SPI_finish();

	/* the statement trigger counts the call (changes.c) */
	if (ingest_track_loads)
	{
		IngestLoadCounts counts = {0};

		if (rc == 1)
			counts.loaded = 1;
		else
			counts.duplicates = 1;
		counts.bytes = tuple->t_len;
		IngestCountLoad(tt->root, &counts);
	}
	return rc == 1 ? PointerGetDatum(tuple) : PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(ingest_payload_hash);

/* ingest_internal.payload_hash(tbl, row): the ledger's hash of a stored event */
Datum
ingest_payload_hash(PG_FUNCTION_ARGS)
{
	HeapTupleHeader td = PG_GETARG_HEAPTUPLEHEADER(0);
	TupleDesc	desc;
	HeapTupleData tmp;
	Datum	   *values;
	bool	   *nulls;
	uint64		h;

	desc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(td),
								  HeapTupleHeaderGetTypMod(td));
	tmp.t_len = HeapTupleHeaderGetDatumLength(td);
	tmp.t_data = td;
	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(&tmp, desc, values, nulls);
	h = IngestPayloadHash(desc, values, nulls);
	ReleaseTupleDesc(desc);
	PG_RETURN_INT64((int64) h);
}
