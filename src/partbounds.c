/*-------------------------------------------------------------------------
 *
 * partbounds.c
 *	  The range bounds of a partition on "timestamp", as values.
 *
 * Read from the partition bound node itself, never from its text: the
 * text of a timestamptz constant is written in the session's DateStyle and
 * TimeZone, and an abbreviation in it ("05:30:00 IST" under SQL style) may
 * read back as another zone's (IST is Israel's in the default set).  The
 * view ingest_internal.bounds, which everything that asks where days begin
 * reads, and the DDL hook's pruning of a partition's rows use these.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "ingest.h"

/*
 * The timestamptz value of one side of a range bound (a list of one
 * PartitionRangeDatum, for a partition key of one column): false for
 * MINVALUE, MAXVALUE, another type or several columns.
 */
bool
IngestRangeBound(List *datums, TimestampTz *value)
{
	PartitionRangeDatum *d;
	Const	   *c;

	if (list_length(datums) != 1)
		return false;
	d = linitial_node(PartitionRangeDatum, datums);
	if (d->kind != PARTITION_RANGE_DATUM_VALUE || !IsA(d->value, Const))
		return false;
	c = (Const *) d->value;
	if (c->constisnull || c->consttype != TIMESTAMPTZOID)
		return false;
	*value = DatumGetTimestampTz(c->constvalue);
	return true;
}

PG_FUNCTION_INFO_V1(ingest_partition_bounds);

/*
 * ingest_side.partition_bounds(relation oid): its lower and upper bounds
 * (NULL where IngestRangeBound has none) and whether it is the default
 * partition; all NULL for a relation that is no partition, or is gone.
 * It reads pg_class.relpartbound itself: no caller hands it a node tree.
 */
Datum
ingest_partition_bounds(PG_FUNCTION_ARGS)
{
	HeapTuple	tup;
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {true, true, true};
	Datum		bound;
	bool		isnull;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(PG_GETARG_OID(0)));
	if (HeapTupleIsValid(tup))
	{
		bound = SysCacheGetAttr(RELOID, tup, Anum_pg_class_relpartbound, &isnull);
		if (!isnull)
		{
			PartitionBoundSpec *spec = castNode(PartitionBoundSpec,
												stringToNode(TextDatumGetCString(bound)));
			TimestampTz ts;

			values[2] = BoolGetDatum(spec->is_default);
			nulls[2] = false;
			if (!spec->is_default && spec->strategy == PARTITION_STRATEGY_RANGE)
			{
				if (IngestRangeBound(spec->lowerdatums, &ts))
				{
					values[0] = TimestampTzGetDatum(ts);
					nulls[0] = false;
				}
				if (IngestRangeBound(spec->upperdatums, &ts))
				{
					values[1] = TimestampTzGetDatum(ts);
					nulls[1] = false;
				}
			}
		}
		ReleaseSysCache(tup);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
