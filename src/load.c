/*-------------------------------------------------------------------------
 *
 * load.c
 *	  SQL entry points of the bulk loader: ingest.load(text|bytea) and
 *	  ingest.load_file, which streams a server-side file in batches.
 *
 * These check the arguments and the caller's rights as COPY FROM would
 * (INSERT on the table and the named columns, no row-level security) and
 * hand the work to IngestLoad() (loader.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "storage/fd.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "loader.h"

static char *
lowercase(char *s)
{
	char	   *c;

	for (c = s; *c; c++)
		*c = pg_ascii_tolower((unsigned char) *c);
	return s;
}

/*
 * May the caller learn whether a stored event's payload differs from one it
 * sends?  Only with SELECT on the table: the conflict count would be an
 * oracle of stored values otherwise.
 */
bool
IngestMayReadPayloads(Oid relid)
{
	return pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) == ACLCHECK_OK;
}

/* Column numbers of the columns the payload names, checked like COPY's. */
static List *
target_columns(Relation rel, ArrayType *columns)
{
	List	   *attnums = NIL;
	Datum	   *names;
	bool	   *nulls;
	int			n;
	int			i;

	if (columns == NULL)
	{
		for (i = 0; i < IngestNumDefaultColumns; i++)
		{
			AttrNumber	a = get_attnum(RelationGetRelid(rel), IngestDefaultColumns[i]);

			if (a == InvalidAttrNumber)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" of relation \"%s\" does not exist",
								IngestDefaultColumns[i], RelationGetRelationName(rel))));
			attnums = lappend_int(attnums, a);
		}
		return attnums;
	}

	deconstruct_array(columns, TEXTOID, -1, false, TYPALIGN_INT, &names, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("column list must not be empty")));
	for (i = 0; i < n; i++)
	{
		char	   *name;
		AttrNumber	a;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("column list must not contain nulls")));
		name = TextDatumGetCString(names[i]);
		a = get_attnum(RelationGetRelid(rel), name);
		if (a <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of relation \"%s\" does not exist",
							name, RelationGetRelationName(rel))));
		if (TupleDescAttr(RelationGetDescr(rel), a - 1)->attgenerated)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("column \"%s\" is a generated column", name)));
		if (list_member_int(attnums, a))
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_COLUMN),
					 errmsg("column \"%s\" specified more than once", name)));
		attnums = lappend_int(attnums, a);
	}
	return attnums;
}

/* INSERT on the table, or on every named column, as COPY FROM checks. */
void
IngestCheckLoadPrivileges(Relation rel, List *attnums)
{
	Oid			relid = RelationGetRelid(rel);
	ListCell   *lc;

	if (pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK)
	{
		foreach(lc, attnums)
		{
			if (pg_attribute_aclcheck(relid, lfirst_int(lc), GetUserId(),
									  ACL_INSERT) != ACLCHECK_OK)
				aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE,
							   RelationGetRelationName(rel));
		}
	}
	if (check_enable_rls(relid, InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("loading through ingest is not supported for tables with row-level security"),
				 errhint("Use INSERT statements instead.")));
}

/*
 * Tables with foreign keys, deferrable constraints or triggers of the
 * user's are COPY's to load:
 * checked before the table is locked (rel NULL) and again once it is
 * (IngestNeedsExecutor).
 */
static void
refuse_executor_tables(Oid relid, Relation rel, const IngestInput *input)
{
	if (IngestNeedsExecutor(relid, rel))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s() cannot check the foreign keys or deferrable constraints, or fire the triggers, of table \"%s\"",
						input->file ? "ingest.load_file" : "ingest.load", get_rel_name(relid)),
				 errdetail("The loader writes rows without PostgreSQL's executor, which COPY uses for them."),
				 errhint("Load it with COPY: for such tables ingest leaves COPY to PostgreSQL, and its triggers deduplicate row by row.")));
}

/* Shared by the text, bytea and file forms. */
static Datum
load_common(FunctionCallInfo fcinfo, const IngestInput *input, const char *source,
			bool binary_ok)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid;
	char	   *format;
	bool		header;
	char	   *on_error;
	IngestTable t;
	bool		found;
	bool		abort_on_error;
	Relation	rel;
	List	   *attnums;
	IngestLoadResult r;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tbl, format and header must not be null")));
	relid = PG_GETARG_OID(0);
	/* option words are case-insensitive, as COPY's */
	format = lowercase(text_to_cstring(PG_GETARG_TEXT_PP(2)));
	header = PG_GETARG_BOOL(3);
	on_error = PG_ARGISNULL(5) ? NULL : lowercase(text_to_cstring(PG_GETARG_TEXT_PP(5)));
	if (get_rel_name(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));

	if (!IngestFormatIsKnown(format))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unrecognized format \"%s\"", format),
				 errhint("Use \"csv\", \"text\", \"jsonl\" or \"binary\".")));
	if (strcmp(format, "binary") == 0 && !binary_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("format \"binary\" needs the payload as bytea")));
	if (on_error && strcmp(on_error, "reject") != 0 && strcmp(on_error, "abort") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unrecognized on_error \"%s\"", on_error),
				 errhint("Use \"reject\" or \"abort\".")));

	found = IngestLookupTable(relid, &t);
	if (!found)
		IngestRefuseCitusWorker(relid, "load");
	IngestRequireTable(relid, found, &t);
	refuse_executor_tables(relid, NULL, input);
	/* what committed while the lock was waited for counts (managed.c) */
	rel = IngestOpenForLoad(relid, &t, false);
	refuse_executor_tables(relid, rel, input);
	abort_on_error = on_error ? strcmp(on_error, "abort") == 0 : t.abort_on_error;
	IngestRefuseCitus(rel, &t, "load managed table");
	attnums = target_columns(rel, PG_ARGISNULL(4) ? NULL : PG_GETARG_ARRAYTYPE_P(4));
	IngestCheckLoadPrivileges(rel, attnums);

	r = IngestLoadInput(rel, &t, format, header, NIL, attnums, input, source,
						abort_on_error);
	table_close(rel, NoLock);

	InitMaterializedSRF(fcinfo, 0);
	values[0] = Int64GetDatum(r.loaded);
	values[1] = Int64GetDatum(r.duplicates);
	values[2] = Int64GetDatum(r.rejected);
	values[3] = Int64GetDatum(r.conflicts);
	/*
	 * whether a stored payload differs is for those who may read it, and
	 * not known for a distributed table (citusload.c)
	 */
	nulls[3] = !IngestMayReadPayloads(relid) || t.distributed;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(ingest_load_text);

Datum
ingest_load_text(PG_FUNCTION_ARGS)
{
	text	   *data;
	IngestInput input = {0};

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("data must not be null")));
	data = PG_GETARG_TEXT_PP(1);
	input.data = VARDATA_ANY(data);
	input.len = VARSIZE_ANY_EXHDR(data);
	return load_common(fcinfo, &input, "ingest.load", false);
}

PG_FUNCTION_INFO_V1(ingest_load_bytea);

/* The payload as bytes, in the database encoding. */
Datum
ingest_load_bytea(PG_FUNCTION_ARGS)
{
	bytea	   *data;
	IngestInput input = {0};

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("data must not be null")));
	data = PG_GETARG_BYTEA_PP(1);
	/* text formats are in the database encoding; binary is bytes */
	if (PG_ARGISNULL(2) || pg_strcasecmp(text_to_cstring(PG_GETARG_TEXT_PP(2)), "binary") != 0)
		(void) pg_verify_mbstr(GetDatabaseEncoding(), VARDATA_ANY(data),
							   VARSIZE_ANY_EXHDR(data), false);
	input.data = VARDATA_ANY(data);
	input.len = VARSIZE_ANY_EXHDR(data);
	return load_common(fcinfo, &input, "ingest.load", true);
}

PG_FUNCTION_INFO_V1(ingest_load_file);

/*
 * ingest.load_file(tbl, path, ...): a server-side file, for members of
 * pg_read_server_files, as for COPY FROM a file.  The file is read in
 * chunks as the batches need them (copyparse.c), so memory does not grow
 * with its size and there is no limit to it; its encoding is checked as it
 * is read, and invalid bytes fail the call as for ingest.load.
 */
Datum
ingest_load_file(PG_FUNCTION_ARGS)
{
	IngestInput input = {0};
	char	   *path;
	Datum		result;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("path must not be null")));
	if (!has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to load from a file"),
				 errdetail("Only roles with privileges of the \"pg_read_server_files\" role may load from a file.")));

	path = text_to_cstring(PG_GETARG_TEXT_PP(1));
	/* closed at transaction end on error */
	input.file = AllocateFile(path, PG_BINARY_R);
	if (input.file == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\" for reading: %m", path)));
	input.path = path;
	result = load_common(fcinfo, &input, psprintf("file %s", path), true);
	FreeFile(input.file);
	return result;
}
