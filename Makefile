# ingest: PGXS build, tests and demo.

EXTENSION  = ingest
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" ingest.control)

MODULE_big = ingest
OBJS = \
	src/ingest.o \
	src/registry.o \
	src/launcher.o \
	src/worker.o \
	src/maintenance.o \
	src/toplevel.o \
	src/utility_hook.o \
	src/load.o \
	src/loader.o \
	src/copyparse.o \
	src/dedup.o \
	src/partwriter.o \
	src/copyhook.o \
	src/rollupfeed.o \
	src/managed.o \
	src/changes.o \
	src/tableddl.o \
	src/cmdstack.o \
	src/fold.o \
	src/loadstats.o \
	src/usage.o \
	src/indexdecl.o

# The library acts on the SQL objects of its own version only.
PG_CPPFLAGS = -DINGEST_VERSION=\"$(EXTVERSION)\"

# The install script is the concatenation of these fragments, in this order.
# 00_schema.sql and 90_install.sql make the objects that hold data and run
# only at install; the others are code (CREATE OR REPLACE), replayed by the
# update script to the current version.
SQL_CODE = \
	sql/ingest/10_partitions.sql \
	sql/ingest/20_tables.sql \
	sql/ingest/25_side_tables.sql \
	sql/ingest/30_maintenance.sql \
	sql/ingest/40_load.sql \
	sql/ingest/50_indexes.sql \
	sql/ingest/60_rollups.sql
SQL_FRAGMENTS = sql/ingest/00_schema.sql $(SQL_CODE) sql/ingest/90_install.sql

# The update script from the last release: its data migration before and
# after the current code.  On release, freeze the built script into
# sql/updates/ and start a new directory.
PREVVERSION = 0.2.0
UPDATE_DIR = sql/updates/$(PREVVERSION)--$(EXTVERSION)
UPDATE_SCRIPT = sql/$(EXTENSION)--$(PREVVERSION)--$(EXTVERSION).sql

DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql $(UPDATE_SCRIPT)
# Released versions' install scripts, frozen, and the upgrade scripts.
DATA = $(wildcard sql/released/$(EXTENSION)--*.sql) \
	$(wildcard sql/updates/$(EXTENSION)--*--*.sql)
EXTRA_CLEAN = $(DATA_built) .deps

# pg_regress: sql/*.sql against expected/*.out in a temporary instance.
REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/[0-9]*.sql)))
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=test/regress.conf \
	--load-extension=ingest
ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --temp-instance=tmp_check_iso \
	--temp-config=test/regress.conf --load-extension=ingest
TAP_TESTS = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

# Objects follow the headers they include.
override autodepend = yes

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

ifeq ($(filter $(MAJORVERSION),15 16 17 18),)
$(error ingest is built for PostgreSQL 15 to 18, found $(MAJORVERSION))
endif

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_FRAGMENTS)
	cat $^ > $@

$(UPDATE_SCRIPT): $(UPDATE_DIR)/before.sql $(SQL_CODE) $(UPDATE_DIR)/after.sql
	cat $^ > $@

.PHONY: test test-all demo deps regresscheck isolationcheck tapcheck
# The suites one by one, against the installed build (run-all.sh calls them).
regresscheck:
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)
isolationcheck:
ifneq ($(ISOLATION),)
	$(pg_isolation_regress_installcheck) $(ISOLATION_OPTS) $(ISOLATION)
endif
tapcheck:
	$(prove_installcheck)

# Everything, from a fresh machine, as root or as a user who can build.
test:
	test/run-all.sh
# Every suite on 15 here, then on 17 and 18 in Debian root filesystems built
# once and cached (test/versions/; needs root and Debian's archive).
test-all:
	test/versions/test-all.sh
demo:
	test/demo.sh
deps:
	test/deps.sh
