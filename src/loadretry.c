/*-------------------------------------------------------------------------
 *
 * loadretry.c
 *	  A load that deadlocks, loaded again where it can let go of all it
 *	  holds.
 *
 * Keys are claimed in sorted order batch by batch (dedup.c), so a call whose
 * batches' key ranges interleave with another session's can deadlock with
 * it, as two INSERT ... ON CONFLICT statements can.  Where the call can let
 * go of everything it holds, it does, and loads again instead of failing:
 * when it is its transaction's first write (no xid yet, so the transaction
 * holds no key and no row) and its input can be read again (a payload in
 * memory, or a file that can be rewound).  Such a call runs in one
 * subtransaction; on 40P01 that is rolled back, releasing the call's keys,
 * rows and rejects, and the next attempt first waits, holding no key, for
 * the transaction holding the key the call was waiting for.  Loads each in
 * their own transaction thus do not fail with a deadlock over keys against
 * each other.  Locks the transaction took before the call (advisory, LOCK
 * TABLE) stay held: a deadlock over them fails the call.  COPY through the
 * hook streams its input, which cannot be read again: a deadlock fails it,
 * as it fails COPY.  Such a call does not even wait for an older
 * transaction while it holds keys of its own: it lets go of them and loads
 * again after waiting (wait-die, dedup.c), so that two such calls never
 * deadlock, whatever order each meets its keys in.  The cost, paid by every such call: a subtransaction,
 * whose xid is one more per call.  A retry reads and writes the whole input
 * again (the first attempt's rows are dead tuples for vacuum).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>

#include "access/xact.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/uuid.h"

#include "loader.h"

/* Attempts before a deadlock fails the call after all. */
#define LOAD_ATTEMPTS 5

/*
 * Attempts that let go of their keys rather than wait holding them
 * (dedup.c), besides: past these, an attempt waits, as one with nothing to
 * load again must.
 */
#define LOAD_YIELDS 16

/* Whether the input can be read again from its start. */
static bool
input_replayable(const IngestInput *input)
{
	if (input->data != NULL)
		return true;
	return input->file != NULL && ftello(input->file) >= 0;
}

IngestLoadResult
IngestLoadInput(Relation rel, IngestTable *t, const char *format, bool header,
				List *copy_options, List *attnums, const IngestInput *input,
				const char *source, bool abort_on_error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	IngestRetry *retry;
	off_t		start = 0;
	int			deadlocks = 0;
	int			yields = 0;

	/*
	 * Citus cancels a deadlocked load of a distributed table (57014, which
	 * it reports as 40P01): no deadlock to retry from (citusload.c).
	 */
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()) || !input_replayable(input) ||
		IsInParallelMode() || t->distributed)
		return IngestLoadAttempt(rel, t, format, header, copy_options, attnums, input,
								 source, abort_on_error, NULL);
	if (input->file != NULL)
		start = ftello(input->file);
	/* not a local: an attempt writes it before a longjmp */
	retry = palloc0(sizeof(IngestRetry));

	for (;;)
	{
		IngestLoadResult result;
		ErrorData  *edata = NULL;
		bool		yielded = false;
		MemoryContext attemptcxt = AllocSetContextCreate(cxt, "ingest load attempt",
														 ALLOCSET_DEFAULT_SIZES);

		retry->ledger = NULL;
		retry->awaiting = false;
		retry->may_yield = (yields < LOAD_YIELDS);
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(attemptcxt);
		PG_TRY();
		{
			result = IngestLoadAttempt(rel, t, format, header, copy_options, attnums,
									   input, source, abort_on_error, retry);
			ReleaseCurrentSubTransaction();
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
		if (edata == NULL)
		{
			CurrentResourceOwner = owner;
			MemoryContextDelete(attemptcxt);
			pfree(retry);
			return result;
		}

		/* the key waited for, copied out of the attempt's memory */
		retry->await = false;
		if (edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED && retry->ledger != NULL)
		{
			Datum		org;
			Datum		tx;

			yielded = IngestLedgerYielded(retry->ledger);
			if (IngestLedgerWaitingFor(retry->ledger, &org, &tx))
			{
				retry->await = true;
				retry->org = datumCopy(org, false, UUID_LEN);
				retry->tx = datumCopy(tx, false, -1);
			}
		}
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		/* what the attempt left: its resources went with the subtransaction */
		MemoryContextDelete(attemptcxt);

		/*
		 * A deadlock in the wait before claiming anything is over what the
		 * transaction held before the call (an advisory or table lock): a
		 * retry cannot let go of that.
		 */
		if (yielded)
			yields++;
		else if (edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED)
			deadlocks++;
		if (edata->sqlerrcode != ERRCODE_T_R_DEADLOCK_DETECTED || retry->awaiting ||
			deadlocks == LOAD_ATTEMPTS)
			ReThrowError(edata);
		if (input->file != NULL && fseeko(input->file, start, SEEK_SET) != 0)
		{
			/* a yield is no deadlock: say what failed */
			if (!yielded)
				ReThrowError(edata);
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not rewind file \"%s\" to load it again: %m", source)));
		}
		if (input->file != NULL)
			clearerr(input->file);
		FreeErrorData(edata);
	}
}
