/*-------------------------------------------------------------------------
 *
 * copyhook.c
 *	  COPY ... FROM STDIN into a managed table, through the loader.
 *
 * Any client's COPY support (psql \copy, psycopg, pgx CopyFrom, JDBC
 * CopyManager, pg-copy-streams) then gets the loader's dedup, rejects and
 * multi-insert, with the COPY data streamed from the client in batches.
 * The command tag reports the rows loaded; a NOTICE reports duplicates and
 * rejects.  COPY forms the loader does not take (WHERE, FREEZE, files,
 * programs, and PostgreSQL 17's ON_ERROR, REJECT_LIMIT and LOG_VERBOSITY)
 * run as plain COPY, where ingest's row trigger still deduplicates.  Off with ingest.copy_hook.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "commands/copy.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "storage/lmgr.h"
#include "tcop/cmdtag.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "ingest.h"
#include "loader.h"

/* The format a COPY option list asks for; NULL when the loader won't take it. */
static const char *
copy_format(List *options)
{
	const char *format = "text";
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *opt = lfirst_node(DefElem, lc);

		if (strcmp(opt->defname, "format") == 0)
			format = defGetString(opt);
		else if (strcmp(opt->defname, "freeze") == 0 ||
				 strcmp(opt->defname, "on_error") == 0 ||
				 strcmp(opt->defname, "reject_limit") == 0 ||
				 strcmp(opt->defname, "log_verbosity") == 0)
			return NULL;		/* PostgreSQL 17's own error handling: plain COPY */
		else if (strcmp(opt->defname, "force_not_null") == 0 ||
				 strcmp(opt->defname, "force_null") == 0 ||
				 strcmp(opt->defname, "default") == 0)
			return NULL;		/* applied past the raw fields the loader reads */
	}
	if (strcmp(format, "csv") != 0 && strcmp(format, "text") != 0 &&
		strcmp(format, "binary") != 0)
		return NULL;
	return format;
}

/*
 * Whether the loader takes a COPY into this managed table.  A table being
 * restored (not ready) takes COPY as it is; so does one with foreign keys
 * or triggers of the user's, which PostgreSQL's COPY checks and fires (and
 * where ingest's triggers deduplicate row by row), and one that this
 * session disabled the triggers of, or of a partition of, while its dedup
 * trigger is off still (pg_restore --disable-triggers
 * --load-via-partition-root copies each partition's rows through the
 * table: they go in as they were dumped; datarestore.c).  A table
 * distributed with ingest.distribute_table(): Citus's COPY sends each
 * shard its rows, and the hook loads them there (a shard is a managed
 * table of its node).  Asked before the table is locked (rel NULL) and
 * again once it is.
 */
static bool
loader_takes(Oid relid, Relation rel, const IngestTable *t)
{
	return t->ready && !t->distributed &&
		(!t->citus_shard || IngestCitusShardWritable()) &&
		!IngestNeedsExecutor(relid, rel) &&
		(rel == NULL || IngestTriggersOffHere(relid) == NIL);
}

/*
 * Load a COPY FROM STDIN into a managed table.  Returns false when the
 * statement is not one the loader takes; the caller then runs it as usual.
 */
bool
IngestCopyHook(CopyStmt *stmt, const char *query_string, QueryCompletion *qc)
{
	const char *format;
	Oid			relid;
	IngestTable t;
	int			guc_level;
	Relation	rel;
	List	   *attnums;
	IngestLoadResult r;

	if (!ingest_copy_hook || !stmt->is_from || stmt->relation == NULL ||
		stmt->filename != NULL || stmt->is_program || stmt->whereClause != NULL)
		return false;
	format = copy_format(stmt->options);
	if (format == NULL)
		return false;

	/* The library is preloaded everywhere; the extension may be absent here. */
	if (!OidIsValid(get_extension_oid("ingest", true)))
		return false;
	relid = RangeVarGetRelid(stmt->relation, NoLock, true);
	if (!OidIsValid(relid) || get_rel_relkind(relid) != RELKIND_PARTITIONED_TABLE)
		return false;
	if (!IngestLookupTable(relid, &t) || !loader_takes(relid, NULL, &t))
		return false;
	/* what committed while the lock was waited for counts (managed.c) */
	rel = IngestOpenForLoad(relid, &t, true);
	if (rel == NULL)
		return false;
	if (!loader_takes(relid, rel, &t))
	{
		table_close(rel, NoLock);
		return false;
	}
	if (!t.citus_shard)
		IngestRefuseCitus(rel, &t, "copy into managed table");
	attnums = CopyGetAttnums(RelationGetDescr(rel), rel, stmt->attlist);
	IngestCheckLoadPrivileges(rel, attnums);

	/* nothing the caller's search_path finds runs inside the load */
	guc_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	r = IngestLoad(rel, &t, format, false, stmt->options, attnums, NULL, 0, "COPY",
				   t.abort_on_error);
	AtEOXact_GUC(true, guc_level);
	table_close(rel, NoLock);

	if ((r.duplicates > 0 || r.rejected > 0) && IngestMayReadPayloads(relid))
		ereport(NOTICE,
				(errmsg("ingest: duplicate rows skipped: " INT64_FORMAT " (" INT64_FORMAT
						" with a different payload); rows rejected: " INT64_FORMAT,
						r.duplicates, r.conflicts, r.rejected),
				 r.rejected > 0 ? errhint("See ingest.rejects.") : 0));
	else if (r.duplicates > 0 || r.rejected > 0)
		ereport(NOTICE,
				(errmsg("ingest: duplicate rows skipped: " INT64_FORMAT "; rows rejected: " INT64_FORMAT,
						r.duplicates, r.rejected)));
	if (qc)
		SetQueryCompletion(qc, CMDTAG_COPY, (uint64) r.loaded);
	return true;
}
