/*-------------------------------------------------------------------------
 *
 * copyparse.c
 *	  Input rows for the loader, and their conversion to Datums.
 *
 * csv and text are split into fields by PostgreSQL's own COPY parser
 * (BeginCopyFrom with a data-source callback, NextCopyFromRawFields), so
 * quoting, escapes, NULL markers, headers and encodings behave exactly as in
 * COPY.  JSON lines are one object per line with column names as keys.
 *
 * Splitting and converting are separate steps: a row whose fields do not
 * convert (a type input error) can then be retried on its own and set aside,
 * without losing the position in the input.
 *
 * A server-side file is read in chunks, never whole: COPY's reader takes it
 * through the same callback as a payload, and JSON lines are cut from the
 * chunks.  What ingest.load checks on a whole payload before reading it (its
 * encoding, no data after a "\." line) is checked as the chunks go by, and
 * such an error fails the load as it would have before any row was read.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "commands/copy.h"
#include "commands/copyfrom_internal.h"
#include "executor/executor.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_node.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "loader.h"

struct IngestParser
{
	Relation	rel;
	bool		jsonl;
	bool		binary;			/* COPY binary: NextCopyFrom converts */
	ExprContext *econtext;
	int			ntargets;
	AttrNumber *targets;		/* columns the input names, in order */
	char	  **target_names;
	bool	   *targeted;		/* by attnum - 1 */
	FmgrInfo   *in_functions;	/* by attnum - 1 */
	Oid		   *typioparams;
	ExprState **defaults;		/* by attnum - 1; NULL when none */

	/* csv and text */
	CopyFromState cstate;
	ErrorContextCallback errcallback;

	/* the input */
	IngestInput input;
	const char *caller;			/* for error context: ingest.load(_file) */
	Size		pos;			/* in a payload */
	uint64		lineno;			/* JSON lines */
	bool		fatal;			/* an error of the whole input: no skipping */

	/* a file: FILE_CHUNK bytes read, handed out once checked */
	char	   *fbuf;
	int			fstart;			/* next byte to hand out */
	int			fready;			/* bytes before this one are checked */
	int			fend;			/* bytes read */
	bool		feof;
	bool		fbad;			/* invalid bytes at fready */
	bool		fverify;		/* text formats: in the database encoding */
	/* following the lines for a "\." line (scan_end_marker) */
	bool		csv;			/* csv: a quoted field's lines are data */
	bool		in_quote;
	bool		after_cr;		/* the last byte was "\r" */
	int			mlen;			/* the current line's length, up to 3 */
	char		mline[2];		/* and its first bytes */
	bool		marker;			/* a "\." line went by */
	StringInfoData line;		/* a JSON line */
	MemoryContext cxt;			/* where the line buffer lives */
};

/* A file's bytes are read this many at a time. */
#define FILE_CHUNK			(64 * 1024)
/* A JSON line buffer grown past this is given back after its line. */
#define LINE_KEEP_BYTES		(1024 * 1024)

/*
 * Error context of ingest.load's and ingest.load_file's parsing: the
 * function, the table and the line.
 */
static void
load_error_callback(void *arg)
{
	IngestParser *p = (IngestParser *) arg;
	CopyFromState cstate = p->cstate;

	/* JSON lines from a file: the line being read */
	if (cstate == NULL)
		errcontext("%s into table \"%s\", line " UINT64_FORMAT,
				   p->caller, RelationGetRelationName(p->rel), p->lineno + 1);
	else if (cstate->cur_lineno > 0)
		errcontext("%s into table \"%s\", line " UINT64_FORMAT,
				   p->caller, cstate->cur_relname, cstate->cur_lineno);
	else
		errcontext("%s into table \"%s\"", p->caller, cstate->cur_relname);
}

/* BeginCopyFrom's callback takes no argument: the payload being read. */
static IngestParser *reading = NULL;

static int
read_payload(void *outbuf, int minread, int maxread)
{
	IngestParser *p = reading;
	Size		n;

	Assert(p != NULL);
	n = Min((Size) maxread, p->input.len - p->pos);
	memcpy(outbuf, p->input.data + p->pos, n);
	p->pos += n;
	return (int) n;
}

/*
 * The file's next chunk.  Only whole valid characters are handed out: a
 * character cut by the chunk's end waits for the next one; invalid bytes
 * are reported when the reader reaches them (file_available).
 */
static void
file_fill(IngestParser *p)
{
	size_t		n;
	int			pending;
	int			valid;

	CHECK_FOR_INTERRUPTS();
	Assert(p->fstart == p->fready && !p->fbad && !p->feof);
	memmove(p->fbuf, p->fbuf + p->fstart, p->fend - p->fstart);
	p->fend -= p->fstart;
	p->fready = p->fstart = 0;

	n = fread(p->fbuf + p->fend, 1, FILE_CHUNK - p->fend, p->input.file);
	if (ferror(p->input.file))
	{
		p->fatal = true;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", p->input.path)));
	}
	p->fend += (int) n;
	p->feof = (n == 0 || feof(p->input.file));
	if (!p->fverify)
	{
		p->fready = p->fend;
		return;
	}
	pending = p->fend - p->fready;
	valid = pg_encoding_verifymbstr(GetDatabaseEncoding(), p->fbuf + p->fready, pending);
	p->fready += valid;
	if (valid < pending &&
		(p->feof || pg_encoding_mblen(GetDatabaseEncoding(), p->fbuf + p->fready) <= pending - valid))
		p->fbad = true;
}

/* Whether checked bytes are ready to hand out; false at the file's end. */
static bool
file_available(IngestParser *p)
{
	while (p->fstart == p->fready)
	{
		if (p->fbad)
		{
			/* the error ingest.load gives such a payload, for the whole load */
			p->fatal = true;
			(void) pg_verify_mbstr(GetDatabaseEncoding(), p->fbuf + p->fready,
								   p->fend - p->fready, false);
			elog(ERROR, "invalid input in file \"%s\" was not reported", p->input.path);
		}
		if (p->feof)
			return false;
		file_fill(p);
	}
	return true;
}

/*
 * A line "\." ends COPY's data; COPY ignores whatever follows it.  The
 * loader reads a payload or a file whole, so rows after such a line would
 * be neither loaded nor rejected: once a line is "\.", only white space may
 * follow, else the input is refused.  In csv, as in COPY, only a line that
 * begins outside quotes can be the marker: in a quoted field, "\." is data.
 * (ingest.load and ingest.load_file take no QUOTE option: the quote is the
 * escape, a plain toggle.)  Lines end as COPY ends them: "\n", "\r\n" or a
 * "\r" alone.  Fed the input as it goes by, in any pieces.
 */
static void
scan_end_marker(IngestParser *p, const char *s, Size n)
{
	Size		i;

	for (i = 0; i < n; i++)
	{
		char		c = s[i];

		if (p->marker)
		{
			if (!isspace((unsigned char) c))
			{
				p->fatal = true;
				ereport(ERROR,
						(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
						 errmsg("end-of-data marker \"\\.\" is followed by more data"),
						 errdetail("COPY would stop at the marker and ignore the rest."),
						 errhint("Remove the \"\\.\" line: %s reads the whole %s.",
								 p->caller, p->input.file ? "file" : "payload")));
			}
			continue;
		}
		if (p->csv && c == '"')
			p->in_quote = !p->in_quote;
		/* a line ends in "\n", "\r\n" or "\r" alone, as COPY reads it */
		if (c == '\n' || c == '\r')
		{
			bool		lf_of_crlf = c == '\n' && p->after_cr;

			p->after_cr = c == '\r';
			if (p->in_quote)
			{
				/* the next line continues a quoted field */
				p->mlen = 3;
				continue;
			}
			if (lf_of_crlf)
				continue;
			if (p->mlen == 2 && p->mline[0] == '\\' && p->mline[1] == '.')
				p->marker = true;
			p->mlen = 0;
			continue;
		}
		p->after_cr = false;
		if (p->mlen < 2)
			p->mline[p->mlen] = c;
		if (p->mlen < 3)
			p->mlen++;
	}
}

/* COPY's reader callback for a file: at least minread bytes but at its end. */
static int
read_file(void *outbuf, int minread, int maxread)
{
	IngestParser *p = reading;
	int			total = 0;

	Assert(p != NULL);
	while (total < minread && file_available(p))
	{
		int			n = Min(maxread - total, p->fready - p->fstart);

		memcpy((char *) outbuf + total, p->fbuf + p->fstart, n);
		if (!p->binary)
			scan_end_marker(p, p->fbuf + p->fstart, n);
		p->fstart += n;
		total += n;
	}
	return total;
}

/*
 * COPY stopped: at the file's end, or at a "\." line; then the rest of the
 * file must be white space, as for a payload.
 */
static void
file_check_rest(IngestParser *p)
{
	while (file_available(p))
	{
		scan_end_marker(p, p->fbuf + p->fstart, p->fready - p->fstart);
		p->fstart = p->fready;
	}
}

/* A file's next line into p->line, without its newline; false at the end. */
static bool
file_next_line(IngestParser *p)
{
	bool		any = false;

	if (p->line.maxlen > LINE_KEEP_BYTES)
	{
		MemoryContext old = MemoryContextSwitchTo(p->cxt);

		pfree(p->line.data);
		initStringInfo(&p->line);
		MemoryContextSwitchTo(old);
	}
	resetStringInfo(&p->line);
	while (file_available(p))
	{
		const char *start = p->fbuf + p->fstart;
		int			avail = p->fready - p->fstart;
		const char *nl = memchr(start, '\n', avail);
		int			n = nl ? (int) (nl - start) : avail;

		appendBinaryStringInfo(&p->line, start, n);
		p->fstart += n + (nl ? 1 : 0);
		any = true;
		if (nl)
			break;
	}
	return any;
}

bool
IngestFormatIsKnown(const char *format)
{
	return strcmp(format, "csv") == 0 || strcmp(format, "text") == 0 ||
		strcmp(format, "jsonl") == 0 || strcmp(format, "binary") == 0;
}

IngestParser *
IngestParserBegin(Relation rel, const char *format, bool header,
				  List *copy_options, List *attnums, const IngestInput *input,
				  ExprContext *econtext)
{
	IngestParser *p = palloc0(sizeof(IngestParser));
	TupleDesc	desc = RelationGetDescr(rel);
	int			natts = desc->natts;
	ListCell   *lc;
	int			i;

	p->rel = rel;
	p->jsonl = strcmp(format, "jsonl") == 0;
	p->binary = strcmp(format, "binary") == 0;
	p->econtext = econtext;
	p->input = *input;
	p->caller = input->file ? "ingest.load_file" : "ingest.load";
	p->cxt = CurrentMemoryContext;
	if (input->file)
	{
		p->fbuf = palloc(FILE_CHUNK);
		p->fverify = !p->binary;
		initStringInfo(&p->line);
	}
	p->ntargets = list_length(attnums);
	p->targets = palloc(sizeof(AttrNumber) * p->ntargets);
	p->target_names = palloc(sizeof(char *) * p->ntargets);
	p->targeted = palloc0(sizeof(bool) * natts);
	p->in_functions = palloc0(sizeof(FmgrInfo) * natts);
	p->typioparams = palloc0(sizeof(Oid) * natts);
	p->defaults = palloc0(sizeof(ExprState *) * natts);

	i = 0;
	foreach(lc, attnums)
	{
		AttrNumber	a = lfirst_int(lc);

		p->targets[i] = a;
		p->target_names[i] = pstrdup(NameStr(TupleDescAttr(desc, a - 1)->attname));
		p->targeted[a - 1] = true;
		i++;
	}

	for (i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Oid			func;
		Node	   *expr;

		if (att->attisdropped)
			continue;
		getTypeInputInfo(att->atttypid, &func, &p->typioparams[i]);
		fmgr_info(func, &p->in_functions[i]);

		/*
		 * Defaults (identity included) for columns the input may omit; a
		 * stored generated column is computed when the row is written.
		 */
		if (att->attgenerated)
			continue;
		expr = build_column_default(rel, i + 1);
		if (expr != NULL)
			p->defaults[i] = ExecInitExpr(expression_planner((Expr *) expr), NULL);
	}

	if (!p->jsonl)
	{
		List	   *options = copy_options;
		List	   *names = NIL;
		ParseState *pstate = make_parsestate(NULL);

		/* ingest.load() passes no COPY options: it has its own arguments */
		if (options == NIL)
		{
			options = lappend(options, makeDefElem("format", (Node *) makeString(pstrdup(format)), -1));
			if (header)
				options = lappend(options, makeDefElem("header", (Node *) makeString("true"), -1));
			/* the payload is already in the database encoding */
			if (!p->binary)
				options = lappend(options, makeDefElem("encoding",
													   (Node *) makeString(pstrdup(GetDatabaseEncodingName())), -1));
		}
		for (i = 0; i < p->ntargets; i++)
			names = lappend(names, makeString(p->target_names[i]));

		p->csv = pg_strcasecmp(format, "csv") == 0;
		if (input->data && !p->binary)
			scan_end_marker(p, input->data, input->len);

		/*
		 * Neither payload nor file: COPY FROM STDIN reads the client's COPY
		 * data.  A file goes through a callback rather than COPY's own file
		 * reading, whose errors speak of COPY, and whose bytes we could not
		 * check on the way.
		 */
		reading = p;
		p->cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false,
								  input->data ? read_payload :
								  input->file ? read_file : NULL,
								  names, options);
		reading = NULL;
		/* COPY's own context for COPY; ingest.load(_file) names itself */
		if (input->data || input->file)
		{
			p->errcallback.callback = load_error_callback;
			p->errcallback.arg = (void *) p;
		}
		else
		{
			p->errcallback.callback = CopyFromErrorCallback;
			p->errcallback.arg = (void *) p->cstate;
		}
	}
	else if (header)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("format \"jsonl\" has no header line")));
	else
	{
		p->errcallback.callback = load_error_callback;
		p->errcallback.arg = (void *) p;
	}
	return p;
}

/* The bytes of a binary row's values: its size for ingest.max_event_bytes. */
static Size
binary_row_size(IngestParser *p, LoadRow *row)
{
	TupleDesc	desc = RelationGetDescr(p->rel);
	Size		size = 0;
	int			i;

	for (i = 0; i < p->ntargets; i++)
	{
		int			a = p->targets[i] - 1;
		Form_pg_attribute att = TupleDescAttr(desc, a);

		if (!row->nulls[a])
			size += datumGetSize(row->values[a], att->attbyval, att->attlen);
	}
	return size;
}

/*
 * A binary row as readable text, for ingest.rejects: its target columns'
 * values in their text form, as a record literal.
 */
char *
IngestParserRowText(IngestParser *p, LoadRow *row)
{
	TupleDesc	desc = RelationGetDescr(p->rel);
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	for (i = 0; i < p->ntargets; i++)
	{
		int			a = p->targets[i] - 1;

		if (i > 0)
			appendStringInfoChar(&buf, ',');
		if (row->values && !row->nulls[a])
		{
			Oid			out;
			bool		varlena;

			getTypeOutputInfo(TupleDescAttr(desc, a)->atttypid, &out, &varlena);
			appendStringInfoString(&buf, quote_literal_cstr(OidOutputFunctionCall(out, row->values[a])));
		}
	}
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * Read the next row's fields into "row", allocated in the current memory
 * context.  Returns false at the end of the input.  Errors here (say an
 * unterminated quoted field) end the load: the input position is lost.
 */
bool
IngestParserNext(IngestParser *p, LoadRow *row)
{
	memset(row, 0, sizeof(LoadRow));
	row->part = -1;
	row->state = ROW_PARSED;

	if (p->jsonl)
	{
		for (;;)
		{
			const char *start;
			Size		n;

			if (p->input.file)
			{
				bool		found;

				p->errcallback.previous = error_context_stack;
				error_context_stack = &p->errcallback;
				found = file_next_line(p);
				error_context_stack = p->errcallback.previous;
				if (!found)
					return false;
				start = p->line.data;
				n = p->line.len;
			}
			else
			{
				const char *nl;

				if (p->pos >= p->input.len)
					return false;
				start = p->input.data + p->pos;
				nl = memchr(start, '\n', p->input.len - p->pos);
				n = nl ? (Size) (nl - start) : p->input.len - p->pos;
				p->pos += n + (nl ? 1 : 0);
			}
			p->lineno++;
			if (n > 0 && start[n - 1] == '\r')
				n--;
			/* blank lines separate nothing */
			if (strspn(start, " \t") >= n)
				continue;
			row->lineno = p->lineno;
			row->raw = pnstrdup(start, n);
			row->size = n;
			row->nfields = -1;
			return true;
		}
	}
	else if (p->binary)
	{
		int			natts = RelationGetDescr(p->rel)->natts;
		bool		found;

		/* Binary fields convert as they are read; defaults are filled in. */
		row->values = palloc(sizeof(Datum) * natts);
		row->nulls = palloc(sizeof(bool) * natts);
		reading = p;
		p->errcallback.previous = error_context_stack;
		error_context_stack = &p->errcallback;
		found = NextCopyFrom(p->cstate, p->econtext, row->values, row->nulls);
		error_context_stack = p->errcallback.previous;
		reading = NULL;
		if (!found)
			return false;
		row->lineno = p->cstate->cur_lineno;
		row->raw = NULL;		/* rendered as text if it is set aside */
		row->size = binary_row_size(p, row);
		row->nfields = -1;
		row->state = ROW_CONVERTED;
		return true;
	}
	else
	{
		char	  **fields;
		int			nfields;
		bool		found;
		int			i;

		reading = p;
		p->errcallback.previous = error_context_stack;
		error_context_stack = &p->errcallback;
		found = NextCopyFromRawFields(p->cstate, &fields, &nfields);
		if (!found && p->input.file)
			file_check_rest(p);
		error_context_stack = p->errcallback.previous;
		reading = NULL;
		if (!found)
			return false;

		row->lineno = p->cstate->cur_lineno;
		row->raw = pnstrdup(p->cstate->line_buf.data, p->cstate->line_buf.len);
		row->size = p->cstate->line_buf.len;
		row->nfields = nfields;
		row->fields = palloc(sizeof(char *) * Max(nfields, 1));
		for (i = 0; i < nfields; i++)
			row->fields[i] = fields[i] ? pstrdup(fields[i]) : NULL;
		return true;
	}
}

/*
 * Whether the parser can set the rest of the input aside after input it
 * could not split: only an unterminated quoted field, which runs to the end
 * of the input, so that the rest is that one malformed row.  Any other
 * error of COPY's reader (a stray carriage return, say) stops it in the
 * middle, and the rows after it would be lost: it fails the load, as it
 * fails COPY.  Not from a client's COPY stream (the rest of it cannot be
 * skipped here), nor in binary, nor after an error of the whole input (a
 * file's encoding or its reading).  JSON lines are split by this parser.
 */
bool
IngestParserCanSkipBadInput(IngestParser *p, ErrorData *edata)
{
	if (p->fatal)
		return false;
	if (p->jsonl)
		return true;
	return (p->input.data != NULL || p->input.file != NULL) && !p->binary &&
		edata->message_id != NULL &&
		strcmp(edata->message_id, "unterminated CSV quoted field") == 0;
}

/*
 * Where the parser stopped: the line it was on and the text of the row it
 * was reading (at most 1 kB of it), for rejecting malformed input.
 */
void
IngestParserPosition(IngestParser *p, uint64 *lineno, char **raw)
{
	if (p->jsonl || p->binary)
	{
		*lineno = p->jsonl ? p->lineno : p->cstate->cur_lineno;
		*raw = pstrdup("");
		return;
	}
	*lineno = p->cstate->cur_lineno;
	*raw = pnstrdup(p->cstate->line_buf.data, Min(p->cstate->line_buf.len, 1024));
}

/* Text of a JSON value as a column's input, or NULL for JSON null. */
static char *
json_field_text(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return NULL;
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvBinary:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
	return NULL;				/* keep compiler quiet */
}

/* Split a JSON line into fields by column name. */
static void
json_fields(IngestParser *p, LoadRow *row)
{
	Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
														CStringGetDatum(row->raw)));
	int			i;

	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("JSON line is not an object")));

	row->nfields = p->ntargets;
	row->fields = palloc0(sizeof(char *) * p->ntargets);
	row->use_default = palloc0(sizeof(bool) * p->ntargets);
	for (i = 0; i < p->ntargets; i++)
	{
		JsonbValue	key;
		JsonbValue *v;

		key.type = jbvString;
		key.val.string.val = p->target_names[i];
		key.val.string.len = strlen(p->target_names[i]);
		v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &key);
		if (v == NULL)
			row->use_default[i] = true;
		else
			row->fields[i] = json_field_text(v);
	}
}

/*
 * Convert a row's fields to Datums in the root table's layout; columns the
 * input does not name take their defaults.  Raises the type input error of
 * a bad field (the caller isolates it).  Allocates in the current memory
 * context and in econtext's per-tuple memory, which the caller resets per
 * batch.
 */
void
IngestParserConvert(IngestParser *p, LoadRow *row, ExprContext *econtext)
{
	TupleDesc	desc = RelationGetDescr(p->rel);
	int			natts = desc->natts;
	int			i;

	if (p->jsonl)
		json_fields(p, row);
	Assert(row->nfields == p->ntargets);

	row->values = palloc(sizeof(Datum) * natts);
	row->nulls = palloc(sizeof(bool) * natts);
	for (i = 0; i < natts; i++)
	{
		row->values[i] = (Datum) 0;
		row->nulls[i] = true;
	}

	for (i = 0; i < p->ntargets; i++)
	{
		int			a = p->targets[i] - 1;
		Form_pg_attribute att = TupleDescAttr(desc, a);

		if (row->use_default && row->use_default[i])
		{
			if (p->defaults[a])
				row->values[a] = ExecEvalExprSwitchContext(p->defaults[a], econtext,
														   &row->nulls[a]);
			continue;
		}
		row->nulls[a] = (row->fields[i] == NULL);
		row->values[a] = InputFunctionCall(&p->in_functions[a], row->fields[i],
										   p->typioparams[a], att->atttypmod);
	}

	for (i = 0; i < natts; i++)
	{
		if (p->targeted[i] || p->defaults[i] == NULL)
			continue;
		row->values[i] = ExecEvalExprSwitchContext(p->defaults[i], econtext,
												   &row->nulls[i]);
	}
	row->state = ROW_CONVERTED;
}

void
IngestParserEnd(IngestParser *p)
{
	if (p->cstate)
		EndCopyFrom(p->cstate);
	if (p->fbuf)
	{
		pfree(p->fbuf);
		pfree(p->line.data);
	}
	pfree(p);
}
