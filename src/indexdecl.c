/*-------------------------------------------------------------------------
 *
 * indexdecl.c
 *	  Declared indexes: each piece a user gives is one piece of one index.
 *
 * ingest.add_index() keeps a declaration as text (column names or
 * parenthesized expressions, a WHERE predicate, storage options) and the
 * worker builds CREATE INDEX statements from it for every partition.  Text
 * from users is never pasted into SQL unchecked: each piece is parsed on
 * its own, inside a fixed statement, and must come out as exactly that
 * piece (one expression, one predicate, a list of options) of exactly one
 * statement.  A piece that would close the statement, open another or
 * smuggle in another clause is refused (42601).  Names are quoted by the
 * SQL that builds the statement.  The statement built from the pieces is
 * checked again as a whole before it runs: pieces that each pass alone can
 * still combine (a comment one opens hides the start of the next).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "loader.h"

/* Parse sql (a syntax error is raised as such): one statement, or NULL. */
static Node *
parse_one(const char *sql)
{
	List	   *stmts = raw_parser(sql, RAW_PARSE_DEFAULT);

	if (list_length(stmts) != 1)
		return NULL;
	return linitial_node(RawStmt, stmts)->stmt;
}

static void
refuse(const char *what, const char *text)
{
	ereport(ERROR,
			(errcode(ERRCODE_SYNTAX_ERROR),
			 errmsg("invalid %s in index declaration: %s", what, text),
			 errdetail("Each part of a declaration must be one part of one CREATE INDEX statement.")));
}

/* An index column or a parenthesized expression: one element, nothing else. */
static void
check_element(const char *elem)
{
	IndexStmt  *stmt;

	if (elem[0] != '(')
		return;					/* a column name, quoted when used */
	stmt = (IndexStmt *) parse_one(psprintf("CREATE INDEX x ON t (%s)", elem));
	if (stmt == NULL || !IsA(stmt, IndexStmt) || list_length(stmt->indexParams) != 1 ||
		stmt->whereClause != NULL || stmt->options != NIL || stmt->indexIncludingParams != NIL)
		refuse("column expression", elem);
}

static void
check_predicate(const char *pred)
{
	IndexStmt  *stmt = (IndexStmt *) parse_one(psprintf("CREATE INDEX x ON t (c) WHERE (%s)", pred));

	if (stmt == NULL || !IsA(stmt, IndexStmt) || list_length(stmt->indexParams) != 1 ||
		stmt->whereClause == NULL || stmt->options != NIL)
		refuse("WHERE clause", pred);
}

static void
check_options(const char *opts)
{
	IndexStmt  *stmt = (IndexStmt *) parse_one(psprintf("CREATE INDEX x ON t (c) WITH (%s)", opts));

	if (stmt == NULL || !IsA(stmt, IndexStmt) || list_length(stmt->indexParams) != 1 ||
		stmt->whereClause != NULL || stmt->options == NIL)
		refuse("WITH options", opts);
}

/*
 * The statement built from a declaration: exactly one CREATE INDEX with
 * ncolumns columns, a WHERE clause and options when the declaration has
 * them, and nothing else (no INCLUDE, no TABLESPACE).
 */
static void
check_statement(const char *sql, int ncolumns, bool has_where, bool has_with)
{
	IndexStmt  *stmt = (IndexStmt *) parse_one(sql);

	if (stmt == NULL || !IsA(stmt, IndexStmt) || stmt->unique ||
		list_length(stmt->indexParams) != ncolumns || stmt->indexIncludingParams != NIL ||
		(stmt->whereClause != NULL) != has_where || (stmt->options != NIL) != has_with ||
		stmt->tableSpace != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invalid index declaration: its parts do not make one CREATE INDEX statement"),
				 errdetail("A part may not end the statement, or open a comment or a clause that another part closes.")));
}

PG_FUNCTION_INFO_V1(ingest_check_index_statement);

/*
 * ingest_internal.check_index_statement(sql, ncolumns, has_where,
 * has_with): raises 42601 unless sql is the one index the parts declare.
 */
Datum
ingest_check_index_statement(PG_FUNCTION_ARGS)
{
	check_statement(text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_INT32(1),
					PG_GETARG_BOOL(2), PG_GETARG_BOOL(3));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(ingest_check_index_declaration);

/*
 * ingest_internal.check_index_declaration(columns, where_clause,
 * with_options): raises 42601 unless each piece is one piece of one index.
 */
Datum
ingest_check_index_declaration(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		int			i;

		deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &n);
		for (i = 0; i < n; i++)
			if (!nulls[i])
				check_element(TextDatumGetCString(elems[i]));
	}
	if (!PG_ARGISNULL(1))
		check_predicate(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	if (!PG_ARGISNULL(2))
		check_options(text_to_cstring(PG_GETARG_TEXT_PP(2)));
	PG_RETURN_VOID();
}
