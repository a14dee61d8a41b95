# ingest: PGXS build, tests and demo.

# Builds in the source tree (make) or in another directory (make -C build
# -f ../Makefile VPATH=.., as Debian's pg_buildext does).  Source files are
# named from $(srcdir), which PGXS sets ("." in-tree); the generated scripts
# and objects go to the current directory.  A VPATH build needs a source
# tree without build products, as PostgreSQL's own does.

EXTENSION  = ingest
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(srcdir)/ingest.control)

MODULE_big = ingest
OBJS = \
	src/ingest.o \
	src/registry.o \
	src/launcher.o \
	src/worker.o \
	src/maintenance.o \
	src/tablelock.o \
	src/toplevel.o \
	src/utility_hook.o \
	src/load.o \
	src/loader.o \
	src/loadretry.o \
	src/copyparse.o \
	src/dedup.o \
	src/partwriter.o \
	src/copyhook.o \
	src/rollupfeed.o \
	src/managed.o \
	src/asowner.o \
	src/caller.o \
	src/changes.o \
	src/tableddl.o \
	src/datarestore.o \
	src/partbounds.o \
	src/cmdstack.o \
	src/fold.o \
	src/loadstats.o \
	src/usage.o \
	src/indexdecl.o \
	src/rollupmerge.o \
	src/citus.o \
	src/citusload.o

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
	sql/ingest/60_rollups.sql \
	sql/ingest/70_citus.sql
SQL_FRAGMENTS = sql/ingest/00_schema.sql $(SQL_CODE) sql/ingest/90_install.sql

# The update script from the last release: its data migration before and
# after the current code.  On release, freeze the built script into
# sql/updates/ and start a new directory.
PREVVERSION = 0.2.0
UPDATE_DIR = sql/updates/$(PREVVERSION)--$(EXTVERSION)
UPDATE_SCRIPT = sql/$(EXTENSION)--$(PREVVERSION)--$(EXTVERSION).sql

DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql $(UPDATE_SCRIPT)
# Released versions' install scripts, frozen, and the upgrade scripts.
# PGXS installs DATA from $(srcdir), so the names are relative to it.
DATA = $(patsubst $(srcdir)/%,%,$(wildcard $(srcdir)/sql/released/$(EXTENSION)--*.sql) \
	$(wildcard $(srcdir)/sql/updates/$(EXTENSION)--*--*.sql))
EXTRA_CLEAN = $(DATA_built) .deps $(EXTENSION)-$(EXTVERSION).zip

# pg_regress (sql/*.sql against expected/*.out) and the isolation specs.
# make installcheck runs them against a running server, which must be
# configured as test/regress.conf says (README, "Packaging and installing");
# regresscheck and isolationcheck run them in a temporary instance with it.
REGRESS = $(patsubst $(srcdir)/sql/%.sql,%,$(sort $(wildcard $(srcdir)/sql/[0-9]*.sql)))
REGRESS_OPTS = --load-extension=ingest
ISOLATION = $(patsubst $(srcdir)/test/specs/%.spec,%,$(sort $(wildcard $(srcdir)/test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=$(srcdir)/test --load-extension=ingest
TEMP_INSTANCE_OPTS = --temp-config=$(srcdir)/test/regress.conf
# The TAP tests make their own clusters: make tapcheck runs them, not
# installcheck (TAP_TESTS is left unset for that).  prove runs in $(srcdir).
PROVE_TESTS = $(patsubst $(srcdir)/%,%,$(sort $(wildcard $(srcdir)/test/t/*.pl)))
# The Citus suite (test/citus.sh builds and installs Citus first).
CITUS_TESTS = $(patsubst $(srcdir)/%,%,$(sort $(wildcard $(srcdir)/test/citus/t/*.pl)))

# Objects follow the headers they include.
override autodepend = yes

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

ifeq ($(filter $(MAJORVERSION),15 16 17 18),)
$(error ingest is built for PostgreSQL 15 to 18, found $(MAJORVERSION))
endif

# The generated scripts are made in the build directory (the fragments are
# found through VPATH); objects too, so it needs src/ and sql/.
sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_FRAGMENTS) | build-dirs
	cat $^ > $@

$(UPDATE_SCRIPT): $(UPDATE_DIR)/before.sql $(SQL_CODE) $(UPDATE_DIR)/after.sql | build-dirs
	cat $^ > $@

$(OBJS) $(OBJS:.o=.bc): | build-dirs
build-dirs:
	@mkdir -p src sql

.PHONY: test test-all demo deps regresscheck isolationcheck tapcheck citus-tapcheck dist build-dirs
# The suites one by one, against the installed build, each in a temporary
# instance (run-all.sh calls them).
regresscheck:
	$(pg_regress_installcheck) $(REGRESS_OPTS) --temp-instance=tmp_check \
		$(TEMP_INSTANCE_OPTS) $(REGRESS)
isolationcheck:
ifneq ($(ISOLATION),)
	$(pg_isolation_regress_installcheck) $(ISOLATION_OPTS) \
		--temp-instance=tmp_check_iso $(TEMP_INSTANCE_OPTS) $(ISOLATION)
endif
tapcheck:
	$(prove_installcheck)
citus-tapcheck: PROVE_TESTS = $(CITUS_TESTS)
citus-tapcheck:
	$(prove_installcheck)

# Everything, from a fresh machine, as root or as a user who can build.
test:
	$(srcdir)/test/run-all.sh
# Every suite on 15 here, then on 17 and 18 in Debian root filesystems built
# once and cached (test/versions/; needs root and Debian's archive).
test-all:
	$(srcdir)/test/versions/test-all.sh
demo:
	$(srcdir)/test/demo.sh
deps:
	$(srcdir)/test/deps.sh

# The PGXN distribution: the committed tree (HEAD) as a zip whose files are
# under $(EXTENSION)-$(EXTVERSION)/.
DIST = $(EXTENSION)-$(EXTVERSION)
dist:
	git -C $(srcdir) archive --format=zip --prefix=$(DIST)/ -o $(CURDIR)/$(DIST).zip HEAD
	@echo "$(DIST).zip"
