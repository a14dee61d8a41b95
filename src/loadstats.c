/*-------------------------------------------------------------------------
 *
 * loadstats.c
 *	  Load statistics: what every write path into a managed table did, per
 *	  table and hour (ingest.load_stats).
 *
 * The hot path only adds to counters in backend memory, tagged with the
 * subtransaction that did the work: a rollback drops them with the rows
 * they counted.  At commit they are added to a shared hash (one lookup per
 * table and hour of the transaction), and the database's worker moves the
 * shared counts into ingest_internal.load_stats.  ingest.load_stats reads
 * both, so a count is visible from its commit on.  Counts not yet moved are
 * lost in a crash, as PostgreSQL's own statistics are.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "ingest.h"
#include "loader.h"

/* Distinct (database, table, hour) counts waiting for their worker. */
#define LOAD_STATS_ENTRIES	4096

typedef struct LoadStatsKey
{
	Oid			dbid;
	Oid			relid;
	TimestampTz hour;
} LoadStatsKey;

typedef struct LoadStatsEntry
{
	LoadStatsKey key;
	IngestLoadCounts c;
} LoadStatsEntry;

typedef struct LoadStatsShared
{
	LWLock	   *lock;
	int64		lost;			/* counts dropped because the hash was full */
} LoadStatsShared;

static LoadStatsShared *shared = NULL;
static HTAB *shared_hash = NULL;

/* This backend's counts of the current transaction, by subtransaction. */
typedef struct PendingCounts
{
	LoadStatsKey key;
	int			level;
	IngestLoadCounts c;
} PendingCounts;

static PendingCounts *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;
static bool callbacks_registered = false;

bool		ingest_track_loads = true;

void
IngestLoadStatsShmemRequest(void)
{
	RequestAddinShmemSpace(add_size(MAXALIGN(sizeof(LoadStatsShared)),
									hash_estimate_size(LOAD_STATS_ENTRIES,
													   sizeof(LoadStatsEntry))));
	RequestNamedLWLockTranche("ingest load stats", 1);
}

void
IngestLoadStatsShmemInit(void)
{
	HASHCTL		info;
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("ingest load stats", sizeof(LoadStatsShared), &found);
	if (!found)
	{
		shared->lock = &(GetNamedLWLockTranche("ingest load stats"))->lock;
		shared->lost = 0;
	}
	info.keysize = sizeof(LoadStatsKey);
	info.entrysize = sizeof(LoadStatsEntry);
	shared_hash = ShmemInitHash("ingest load stats hash",
								LOAD_STATS_ENTRIES, LOAD_STATS_ENTRIES,
								&info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

static void
counts_add(IngestLoadCounts *to, const IngestLoadCounts *c)
{
	to->calls += c->calls;
	to->loaded += c->loaded;
	to->duplicates += c->duplicates;
	to->conflicts += c->conflicts;
	to->rejected += c->rejected;
	to->bytes += c->bytes;
	to->seconds += c->seconds;
	to->last_load_at = Max(to->last_load_at, c->last_load_at);
}

/* Publish this transaction's counts; no error may be raised here. */
static void
publish_pending(void)
{
	int			i;

	if (npending == 0 || shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < npending; i++)
	{
		LoadStatsEntry *e;
		bool		found;

		e = hash_search(shared_hash, &pending[i].key, HASH_ENTER_NULL, &found);
		if (e == NULL)
		{
			shared->lost++;
			continue;
		}
		if (!found)
			memset(&e->c, 0, sizeof(e->c));
		counts_add(&e->c, &pending[i].c);
	}
	LWLockRelease(shared->lock);
	npending = 0;
}

static void
loadstats_xact(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			/* a prepared transaction's loads count when prepared */
			publish_pending();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			npending = 0;
			break;
		default:
			break;
	}
}

static void
loadstats_subxact(SubXactEvent event, SubTransactionId mySubid,
				  SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	int			i;
	int			kept = 0;

	if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;
	for (i = 0; i < npending; i++)
	{
		if (pending[i].level < level)
			pending[kept++] = pending[i];
		else if (event == SUBXACT_EVENT_COMMIT_SUB)
		{
			pending[i].level = level - 1;
			pending[kept++] = pending[i];
		}
	}
	npending = kept;
}

/*
 * Count what a write into managed table "relid" did, in the hour of the
 * current statement.  Called per load by the loader and per row by the
 * INSERT trigger: a few additions in backend memory.
 */
void
IngestCountLoad(Oid relid, const IngestLoadCounts *c)
{
	TimestampTz now = GetCurrentStatementStartTimestamp();
	LoadStatsKey key;
	int			level;
	int			i;

	if (!ingest_track_loads || shared == NULL)
		return;

	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	key.relid = relid;
	key.hour = now - now % USECS_PER_HOUR;	/* hours of UTC, as the rollups */
	level = GetCurrentTransactionNestLevel();

	/* the latest entry is the likely one */
	for (i = npending - 1; i >= 0; i--)
		if (pending[i].level == level &&
			memcmp(&pending[i].key, &key, sizeof(key)) == 0)
			break;
	if (i < 0)
	{
		if (!callbacks_registered)
		{
			RegisterXactCallback(loadstats_xact, NULL);
			RegisterSubXactCallback(loadstats_subxact, NULL);
			callbacks_registered = true;
		}
		if (npending == maxpending)
		{
			maxpending = Max(8, maxpending * 2);
			pending = pending == NULL
				? MemoryContextAlloc(TopMemoryContext, maxpending * sizeof(PendingCounts))
				: repalloc(pending, maxpending * sizeof(PendingCounts));
		}
		i = npending++;
		pending[i].key = key;
		pending[i].level = level;
		memset(&pending[i].c, 0, sizeof(pending[i].c));
	}
	counts_add(&pending[i].c, c);
	pending[i].c.last_load_at = Max(pending[i].c.last_load_at, now);
}

/* Move the shared counts of this database into a local array. */
static LoadStatsEntry *
take_shared(int *n, int64 *lost)
{
	HASH_SEQ_STATUS seq;
	LoadStatsEntry *e;
	LoadStatsEntry *out;
	int			max;

	*n = 0;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	max = hash_get_num_entries(shared_hash);
	out = palloc(sizeof(LoadStatsEntry) * Max(max, 1));
	hash_seq_init(&seq, shared_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->key.dbid != MyDatabaseId)
			continue;
		out[(*n)++] = *e;
		hash_search(shared_hash, &e->key, HASH_REMOVE, NULL);
	}
	*lost = shared->lost;
	shared->lost = 0;
	LWLockRelease(shared->lock);
	return out;
}

/* Put counts back when they could not be stored. */
static void
give_back(LoadStatsEntry *entries, int n, int64 lost)
{
	int			i;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < n; i++)
	{
		LoadStatsEntry *e;
		bool		found;

		e = hash_search(shared_hash, &entries[i].key, HASH_ENTER_NULL, &found);
		if (e == NULL)
		{
			shared->lost++;
			continue;
		}
		if (!found)
			memset(&e->c, 0, sizeof(e->c));
		counts_add(&e->c, &entries[i].c);
	}
	shared->lost += lost;
	LWLockRelease(shared->lock);
}

static Datum
int8_array(LoadStatsEntry *entries, int n, size_t offset)
{
	Datum	   *d = palloc(sizeof(Datum) * n);
	int			i;

	for (i = 0; i < n; i++)
		d[i] = Int64GetDatum(*(int64 *) ((char *) &entries[i].c + offset));
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* Counts taken from shared memory, for store_counts. */
typedef struct LoadStatsBatch
{
	LoadStatsEntry *entries;
	int			n;
} LoadStatsBatch;

/* Add a batch of counts to ingest_internal.load_stats, in a transaction. */
static void
store_counts(void *arg)
{
	LoadStatsEntry *entries = ((LoadStatsBatch *) arg)->entries;
	int			n = ((LoadStatsBatch *) arg)->n;
	Datum		args[10];
	Oid			types[10] = {OIDARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID,
		INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID,
	FLOAT8ARRAYOID, TIMESTAMPTZARRAYOID};
	Datum	   *relids;
	Datum	   *hours;
	Datum	   *secs;
	Datum	   *lasts;
	int			i;
	int			rc;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	/* the arrays live in SPI's memory, freed by SPI_finish */
	relids = palloc(sizeof(Datum) * n);
	hours = palloc(sizeof(Datum) * n);
	secs = palloc(sizeof(Datum) * n);
	lasts = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
	{
		relids[i] = ObjectIdGetDatum(entries[i].key.relid);
		hours[i] = TimestampTzGetDatum(entries[i].key.hour);
		secs[i] = Float8GetDatum(entries[i].c.seconds);
		lasts[i] = TimestampTzGetDatum(entries[i].c.last_load_at);
	}
	args[0] = PointerGetDatum(construct_array(relids, n, OIDOID, 4, true, TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(hours, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = int8_array(entries, n, offsetof(IngestLoadCounts, calls));
	args[3] = int8_array(entries, n, offsetof(IngestLoadCounts, loaded));
	args[4] = int8_array(entries, n, offsetof(IngestLoadCounts, duplicates));
	args[5] = int8_array(entries, n, offsetof(IngestLoadCounts, conflicts));
	args[6] = int8_array(entries, n, offsetof(IngestLoadCounts, rejected));
	args[7] = int8_array(entries, n, offsetof(IngestLoadCounts, bytes));
	args[8] = PointerGetDatum(construct_array(secs, n, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[9] = PointerGetDatum(construct_array(lasts, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));

	rc = SPI_execute_with_args(
		"INSERT INTO ingest_internal.load_stats AS s "
		"SELECT u.* FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
		"  pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), "
		"  pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8), "
		"  pg_catalog.unnest($9), pg_catalog.unnest($10)) "
		"  AS u(event_table, hour, calls, loaded, duplicates, conflicts, rejected, bytes, seconds, last_load_at) "
		" WHERE EXISTS (SELECT 1 FROM ingest.table_config c "
		"                WHERE c.event_table OPERATOR(pg_catalog.=) u.event_table) "
		"ON CONFLICT (event_table, hour) DO UPDATE SET "
		"  calls = s.calls OPERATOR(pg_catalog.+) excluded.calls, "
		"  loaded = s.loaded OPERATOR(pg_catalog.+) excluded.loaded, "
		"  duplicates = s.duplicates OPERATOR(pg_catalog.+) excluded.duplicates, "
		"  conflicts = s.conflicts OPERATOR(pg_catalog.+) excluded.conflicts, "
		"  rejected = s.rejected OPERATOR(pg_catalog.+) excluded.rejected, "
		"  bytes = s.bytes OPERATOR(pg_catalog.+) excluded.bytes, "
		"  seconds = s.seconds OPERATOR(pg_catalog.+) excluded.seconds, "
		"  last_load_at = GREATEST(s.last_load_at, excluded.last_load_at)",
		10, types, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not store load statistics: %s", SPI_result_code_string(rc));
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
}

/*
 * The worker's step: store the counts published in this database, in a
 * transaction of its own; counts of tables no longer managed are dropped.
 * On failure they are put back and stored next time.
 */
void
IngestFlushLoadStats(void)
{
	LoadStatsBatch batch;
	ErrorData  *edata;
	int64		lost;

	if (shared == NULL)
		return;
	batch.entries = take_shared(&batch.n, &lost);
	if (lost > 0)
		ereport(LOG,
				(errmsg("ingest: " INT64_FORMAT " load statistics counts were lost: the shared table of %d entries was full",
						lost, LOAD_STATS_ENTRIES)));
	if (batch.n == 0)
		return;

	pgstat_report_activity(STATE_RUNNING, "storing load statistics");
	edata = IngestWorkerStep(store_counts, &batch);
	if (edata != NULL)
	{
		give_back(batch.entries, batch.n, 0);
		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("could not store load statistics: %s", edata->message)));
		FreeErrorData(edata);
	}
	pfree(batch.entries);
	pgstat_report_activity(STATE_IDLE, NULL);
}

PG_FUNCTION_INFO_V1(ingest_load_stats_pending);

/*
 * ingest_side.load_stats_pending(): counts committed in this database and
 * not yet stored by its worker, of the tables the caller may read (or all,
 * for pg_monitor).
 */
Datum
ingest_load_stats_pending(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS seq;
	LoadStatsEntry *e;
	LoadStatsEntry *entries;
	int			n = 0;
	int			i;
	bool		monitor = has_privs_of_role(GetUserId(), ROLE_PG_MONITOR);

	InitMaterializedSRF(fcinfo, 0);
	if (shared == NULL)
		return (Datum) 0;

	/* copied out first: no catalog access under the lock */
	LWLockAcquire(shared->lock, LW_SHARED);
	entries = palloc(sizeof(LoadStatsEntry) * Max(hash_get_num_entries(shared_hash), 1));
	hash_seq_init(&seq, shared_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
		if (e->key.dbid == MyDatabaseId)
			entries[n++] = *e;
	LWLockRelease(shared->lock);

	for (i = 0; i < n; i++)
	{
		Datum		values[10];
		bool		nulls[10] = {0};
		IngestLoadCounts *c = &entries[i].c;

		bool		missing = false;

		if (!monitor &&
			pg_class_aclcheck_ext(entries[i].key.relid, GetUserId(), ACL_SELECT,
								  &missing) != ACLCHECK_OK)
			continue;
		if (missing)
			continue;			/* dropped since; never stored */
		values[0] = ObjectIdGetDatum(entries[i].key.relid);
		values[1] = TimestampTzGetDatum(entries[i].key.hour);
		values[2] = Int64GetDatum(c->calls);
		values[3] = Int64GetDatum(c->loaded);
		values[4] = Int64GetDatum(c->duplicates);
		values[5] = Int64GetDatum(c->conflicts);
		values[6] = Int64GetDatum(c->rejected);
		values[7] = Int64GetDatum(c->bytes);
		values[8] = Float8GetDatum(c->seconds);
		values[9] = TimestampTzGetDatum(c->last_load_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
