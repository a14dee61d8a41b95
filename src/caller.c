/*-------------------------------------------------------------------------
 *
 * caller.c
 *	  Who called into ingest.
 *
 * The management functions (ingest.configure, add_index, ...) are SECURITY
 * DEFINER: they run as the extension's owner and first check that their
 * caller owns the table.  Inside them the caller is the outer user, the
 * role the login or SET ROLE chose.  That is the role whose code called
 * them only when no other role's code runs in between: a SECURITY DEFINER
 * function of another role, or a maintenance operation acting as a table's
 * owner (ANALYZE, VACUUM, REINDEX, REFRESH, CREATE INDEX, autovacuum, all
 * under SECURITY_RESTRICTED_OPERATION) evaluating that role's expressions,
 * would act with the session's rights.  So a call is refused when the
 * role whose code makes it lacks the rights of the session's role, checked
 * where the call is set up (its EXECUTE check, as that role).  ingest's
 * own nested calls run as the extension's owner, who has them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_proc.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "loader.h"

static object_access_hook_type prev_object_access_hook = NULL;

/*
 * Refuse when the code running now (the current user's) lacks the rights
 * of the role ingest would take for the caller.
 */
static void
check_caller(void)
{
	Oid			current = GetUserId();
	Oid			outer = GetOuterUserId();

	if (current == outer || has_privs_of_role(current, outer))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("cannot call ingest's management functions as role \"%s\" on behalf of role \"%s\"",
					GetUserNameFromId(current, false), GetUserNameFromId(outer, false)),
			 errdetail("Code of role \"%s\" is running (a SECURITY DEFINER function, or a maintenance operation such as ANALYZE acting as a table's owner); ingest would act with the session role's rights.",
					   GetUserNameFromId(current, false)),
			 errhint("Call them as the role that owns the table (SET ROLE).")));
}

/*
 * Is this one of ingest's management functions: SECURITY DEFINER, in schema
 * ingest, acting on the caller's rights?  (ingest_side's rollup_backlog,
 * behind the monitoring view, only counts.)
 */
static bool
is_management_function(Oid fn)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	bool		ours = false;

	if (!HeapTupleIsValid(tup))
		return false;
	if (((Form_pg_proc) GETSTRUCT(tup))->prosecdef)
	{
		char	   *nsp = get_namespace_name(((Form_pg_proc) GETSTRUCT(tup))->pronamespace);

		ours = nsp != NULL && strcmp(nsp, "ingest") == 0;
	}
	ReleaseSysCache(tup);
	return ours;
}

/* Every function call is set up with an EXECUTE check, as the caller. */
static void
caller_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					 int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access == OAT_FUNCTION_EXECUTE && GetUserId() != GetOuterUserId() &&
		is_management_function(objectId))
		check_caller();
}

void
IngestInstallCallerHook(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = caller_object_access;
}

/* The role that called the management function running now. */
Oid
IngestCaller(void)
{
	return GetOuterUserId();
}

PG_FUNCTION_INFO_V1(ingest_caller);

/* ingest_internal.caller(): the role that called the management function. */
Datum
ingest_caller(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(IngestCaller());
}
