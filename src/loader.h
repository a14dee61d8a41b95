/*-------------------------------------------------------------------------
 *
 * loader.h
 *	  The bulk loader's pipeline: parse, convert, route, deduplicate, write.
 *
 *	  load.c		SQL entry points: argument and privilege checks
 *	  loader.c		the batch pipeline, reject isolation, counts
 *	  loadretry.c	a load that deadlocks, loaded again where it can let go
 *					of all it holds
 *	  copyparse.c	input rows from COPY csv/text/binary (PostgreSQL's own
 *					parser) and JSON lines, and their conversion to Datums
 *	  dedup.c		the key ledger: exact (organization_id, transaction_id)
 *					dedup across partitions and sessions; the INSERT trigger
 *	  partwriter.c	multi-insert of the surviving rows into day partitions
 *	  copyhook.c	COPY ... FROM STDIN into a managed table, through the loader
 *	  rollupfeed.c	the hourly rollup deltas of the rows a load wrote
 *	  managed.c		which tables are managed, their side tables; acting as
 *					a table's owner
 *	  changes.c		statement triggers: the ledger and rollups follow every
 *					other change (UPDATE, DELETE, TRUNCATE, INSERT, MERGE)
 *	  tableddl.c		partitions attached, detached or dropped by hand
 *	  datarestore.c	data-only restores: the tables this session disabled
 *					the triggers of; COPY into side tables refused otherwise
 *	  cmdstack.c	which executor command is running (a row moved by
 *					UPDATE from an inserted one)
 *	  loadstats.c	per table and hour counts of every write path
 *	  citusload.c	ingest.load of a distributed table: the rows go to
 *					Citus as multi-row INSERTs, deduplicated on the shards
 *
 *-------------------------------------------------------------------------
 */
#ifndef INGEST_LOADER_H
#define INGEST_LOADER_H

#include "access/attnum.h"
#include "fmgr.h"
#include "executor/execdesc.h"
#include "nodes/execnodes.h"
#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
#include "tcop/cmdtag.h"
#include "nodes/pg_list.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

/* The name of ingest's own row trigger (25_side_tables.sql). */
#define INGEST_DEDUP_TRIGGER "ingest_dedup"

/* Rows per batch: one subtransaction, one ledger probe, one flush each. */
#define INGEST_BATCH_ROWS	1000

/* What became of an input row. */
typedef enum LoadRowState
{
	ROW_PARSED,					/* fields read, not converted yet */
	ROW_CONVERTED,				/* values and nulls are set */
	ROW_REJECTED,
	ROW_DUPLICATE,
	ROW_LOADED
} LoadRowState;

typedef struct LoadRow
{
	uint64		lineno;			/* 1-based input line (first line of the row) */
	char	   *raw;			/* the row's input text, for rejects (NULL:
								 * binary, rendered when set aside) */
	Size		size;			/* bytes of the row's input */
	int			nfields;
	char	  **fields;			/* raw field text; NULL entry = SQL NULL */
	bool	   *use_default;	/* JSON lines: key absent, take the default */
	Datum	   *values;			/* root tuple layout */
	bool	   *nulls;
	int			part;			/* index in the partition map, -1 none */
	uint64		hash;			/* payload hash (dedup.c) */
	LoadRowState state;
	bool		conflict;		/* duplicate whose payload differs */
} LoadRow;

/* managed.c: a managed table and its side tables */
typedef struct IngestTable
{
	Oid			relid;
	Oid			owner;			/* side state is written as the owner */
	Oid			ledger;			/* ingest_side.<name>_keys */
	Oid			rollup_hours;	/* ingest_side.<name>_rollup */
	Oid			rollup_deltas;	/* ingest_side.<name>_deltas */
	Oid			rollup_stale;	/* ingest_side.<name>_stale */
	bool		ready;			/* its triggers are in place (not mid-restore) */
	bool		partman;		/* pg_partman makes and retires its partitions */
	bool		abort_on_error; /* on_error = 'abort' */
	bool		latest_snapshot;	/* side-state steps read the latest rows */
	bool		distributed;	/* its side state is on Citus shards (the
								 * coordinator's table) */
	bool		citus_shard;	/* a shard of such a table, on a Citus node */
} IngestTable;

typedef struct IngestOwnerScope
{
	Oid			save_user;
	int			save_sec;
	int			guc_level;
} IngestOwnerScope;

extern bool IngestLookupTable(Oid relid, IngestTable *t);
extern Oid	IngestSideTableOf(Oid relid);
extern bool IngestTriggersAheadOfConfiguration(void);
extern void IngestRequireTable(Oid relid, bool found, const IngestTable *t);
extern Relation IngestOpenForLoad(Oid relid, IngestTable *t, bool missing_ok);
extern void IngestRequireCurrentVersion(void);
extern bool IngestNeedsExecutor(Oid relid, Relation rel);
extern bool IngestRelationNeedsExecutor(Relation rel);
extern bool IngestIsOwnTriggerFunction(Oid fn, bool any);
extern Oid	IngestRootOf(Oid relid);
extern Oid	IngestRelationOwner(Oid relid);
extern Oid	IngestCaller(void);
extern void IngestInstallCallerHook(void);
extern char *IngestQualifiedName(Oid relid);
extern void IngestOwnerPush(Oid owner, bool pin_path, IngestOwnerScope *s);
extern void IngestOwnerAllRows(IngestOwnerScope *s);
extern void IngestOwnerPop(IngestOwnerScope *s);

/* datarestore.c */
extern void IngestSideCopyCheck(CopyStmt *stmt);
extern void IngestSideInsertCheck(QueryDesc *qd);
extern void IngestSideTruncateCheck(TruncateStmt *stmt);
extern void IngestTriggersAltered(AlterTableStmt *stmt);
extern List *IngestTriggersOffHere(Oid relid);

/* cmdstack.c */
extern void IngestInstallExecutorHooks(void);
extern bool IngestExecutorHooksInstalled(void);
extern CmdType IngestCommandWriting(Oid relid, List **writers);
extern void IngestCopyFromEnter(Oid relid);
extern void IngestCopyFromLeave(Oid relid);

/* changes.c: side state of the rows of "src" (a relation or transition table) */
extern void IngestClaimKeysStrict(IngestTable *t, const char *src);
extern void IngestForgetKeys(IngestTable *t, const char *src);
extern bool IngestOldestDayMarked(IngestTable *t, Oid part);
extern void IngestMarkStale(IngestTable *t, const char *src, bool per_org);
extern void IngestFeedDeltas(IngestTable *t, const char *src);

/* tableddl.c */
extern void *IngestPartitionDDLBefore(Node *stmt);
extern void IngestPartitionDDLAfter(void *work);
extern void IngestInstallDropHook(void);
extern void *IngestStatementEnter(Node *stmt);
extern void IngestStatementLeave(void *outer);
extern int	ingest_internal_ddl_depth;
extern bool IngestInternalDDL(void);

/* utility_hook.c */
extern int	ingest_utility_depth;

/*
 * Where the loader's input comes from: a payload in memory (ingest.load), a
 * server-side file read in chunks (ingest.load_file), or, with neither, the
 * client's COPY data (COPY FROM STDIN).
 */
typedef struct IngestInput
{
	const char *data;
	Size		len;
	FILE	   *file;			/* opened by the caller, which closes it */
	const char *path;
} IngestInput;

/* copyparse.c */
typedef struct IngestParser IngestParser;

extern IngestParser *IngestParserBegin(Relation rel, const char *format,
									   bool header, List *copy_options,
									   List *attnums, const IngestInput *input,
									   ExprContext *econtext);
extern bool IngestParserNext(IngestParser *parser, LoadRow *row);
extern void IngestParserConvert(IngestParser *parser, LoadRow *row,
								ExprContext *econtext);
extern bool IngestParserCanSkipBadInput(IngestParser *parser, ErrorData *edata);
extern void IngestParserPosition(IngestParser *parser, uint64 *lineno, char **raw);
extern void IngestParserEnd(IngestParser *parser);
extern char *IngestParserRowText(IngestParser *parser, LoadRow *row);
extern bool IngestFormatIsKnown(const char *format);

/* dedup.c */
typedef struct IngestLedger IngestLedger;

extern Oid	IngestExtensionOwner(void);

/*
 * Run a statement as a role, under SECURITY_RESTRICTED_OPERATION: the
 * table's owner for its side tables, the extension owner for ingest's own
 * tables (rejects).  For executing prepared plans, which keep the
 * search_path they were planned with; IngestOwnerPush pins it for parsing.
 */
#define AS_OWNER(owner, stmt) \
	do { \
		Oid			save_user_; \
		int			save_sec_; \
		GetUserIdAndSecContext(&save_user_, &save_sec_); \
		SetUserIdAndSecContext((owner), save_sec_ | SECURITY_LOCAL_USERID_CHANGE | \
							   SECURITY_RESTRICTED_OPERATION); \
		stmt; \
		SetUserIdAndSecContext(save_user_, save_sec_); \
	} while (0)

extern IngestLedger *IngestLedgerBegin(Relation rel, IngestTable *t, EState *estate);
extern void IngestLedgerClaim(IngestLedger *ledger, LoadRow **rows, int nrows);
extern uint64 IngestPayloadHash(TupleDesc desc, Datum *values, bool *nulls);
extern uint64 IngestLedgerHash(IngestLedger *ledger, Datum *values, bool *nulls);
extern char *IngestKeyWidthError(Datum tx, bool tx_null, Datum code, bool code_null,
								 Datum customer, bool customer_null);
#define INGEST_NEVER_NULL 5
extern const char *const IngestNeverNull[INGEST_NEVER_NULL];
extern char *IngestNullColumnError(const char *column);
extern bool IngestLedgerWaitingFor(IngestLedger *ledger, Datum *org, Datum *tx);
extern void IngestLedgerAwait(IngestLedger *ledger, Datum org, Datum tx);
extern void IngestLedgerMayYield(IngestLedger *ledger);
extern bool IngestLedgerYielded(IngestLedger *ledger);
extern void IngestLedgerEnd(IngestLedger *ledger);

/* partwriter.c */
typedef struct IngestPartWriter IngestPartWriter;
struct BulkInsertStateData;

extern IngestPartWriter *IngestPartWriterBegin(Relation rel, EState *estate);
extern int	IngestPartWriterRoute(IngestPartWriter *writer, Datum timestamp);
extern void IngestPartWriterAdd(IngestPartWriter *writer, LoadRow *row);
extern void IngestPartWriterFlush(IngestPartWriter *writer);
extern void IngestPartWriterEnd(IngestPartWriter *writer);
extern void IngestMultiInsert(ResultRelInfo *rri, EState *estate,
							  TupleTableSlot **slots, int nslots, CommandId cid,
							  struct BulkInsertStateData *bistate);

/* loader.c */
typedef struct IngestLoadResult
{
	int64		loaded;
	int64		duplicates;
	int64		rejected;
	int64		conflicts;
} IngestLoadResult;

extern IngestLoadResult IngestLoad(Relation rel, IngestTable *t,
								   const char *format, bool header,
								   List *copy_options, List *attnums,
								   const char *data, Size len,
								   const char *source, bool abort_on_error);
/* what a retried load attempt waits for first, and its ledger while open */
typedef struct IngestRetry
{
	bool		await;
	Datum		org;
	Datum		tx;
	bool		awaiting;		/* in that wait, holding nothing of the call */
	bool		may_yield;		/* the attempt may yield keys (dedup.c) */
	IngestLedger *ledger;
} IngestRetry;

extern IngestLoadResult IngestLoadAttempt(Relation rel, IngestTable *t,
										  const char *format, bool header,
										  List *copy_options, List *attnums,
										  const IngestInput *input,
										  const char *source, bool abort_on_error,
										  IngestRetry *attempt);

/* loadretry.c */
extern IngestLoadResult IngestLoadInput(Relation rel, IngestTable *t,
										const char *format, bool header,
										List *copy_options, List *attnums,
										const IngestInput *input,
										const char *source, bool abort_on_error);

/* load.c: the checks ingest.load and COPY share */
extern bool IngestMayReadPayloads(Oid relid);
extern void IngestCheckLoadPrivileges(Relation rel, List *attnums);

/* rollupfeed.c */
typedef struct IngestRollup IngestRollup;

extern IngestRollup *IngestRollupBegin(Relation rel, IngestTable *t, EState *estate);
extern char *IngestRollupAggSql(const char *src, const char *cond);
extern void IngestRollupFeed(IngestRollup *feed, LoadRow **rows, int nrows);
extern void IngestRollupEnd(IngestRollup *feed);

extern Datum ingest_dedup_row(PG_FUNCTION_ARGS);
extern Datum ingest_track_changes(PG_FUNCTION_ARGS);
extern Datum ingest_replica_guard(PG_FUNCTION_ARGS);

/* loadstats.c */
typedef struct IngestLoadCounts
{
	int64		calls;
	int64		loaded;
	int64		duplicates;
	int64		conflicts;
	int64		rejected;
	int64		bytes;
	double		seconds;
	TimestampTz last_load_at;
} IngestLoadCounts;

extern bool ingest_track_loads;
extern void IngestCountLoad(Oid relid, const IngestLoadCounts *c);

/* rollupmerge.c */
extern int	IngestTextCmpC(text *ta, text *tb);
extern bool IngestEventIsLater(TimestampTz at, text *tx, TimestampTz at0, text *tx0);

/* citus.c */
extern void IngestRefuseCitus(Relation rel, IngestTable *t, const char *action);
extern bool IngestCitusSession(void);
extern bool IngestCitusShardWritable(void);
extern void IngestRefuseCitusTrigger(Oid relid);
extern void IngestRefuseCitusWorker(Oid relid, const char *action);
extern bool IngestCitusTable(Oid relid);
extern bool IngestCitusAdoptShard(Oid relid);

/* citusload.c */
typedef struct IngestCitusLoad IngestCitusLoad;
extern IngestCitusLoad *IngestCitusLoadBegin(Relation rel);
extern void IngestCitusLoadAdd(IngestCitusLoad *c, LoadRow **rows, int n);
extern void IngestCitusLoadEnd(IngestCitusLoad *c, int64 *sent, int64 *stored);

/* copyhook.c */
extern bool IngestCopyHook(CopyStmt *stmt, const char *query_string,
						   QueryCompletion *qc);

/* the columns a payload names by default, in order */
extern const char *const IngestDefaultColumns[];
extern const int IngestNumDefaultColumns;

#endif							/* INGEST_LOADER_H */
