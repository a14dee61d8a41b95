#!/bin/bash
# Packaging, on a built and installed tree (run-all.sh runs it as the
# postgres user):
# - the versions in ingest.control, META.json, debian/changelog and the
#   built script agree, and every released version has an update path;
# - make dist makes the PGXN zip: the committed files under ingest-<v>/,
#   META.json valid against the PGXN Meta Spec (test/check-meta.py), and
#   it builds;
# - a VPATH build (make -C build -f ../Makefile VPATH=..) installs every
#   script, and a server running from that installation (a temporary
#   install, as PostgreSQL's own make check makes) creates the extension;
# - make installcheck passes against a running server set up as the README
#   says.
# The .deb is test/check-deb.sh (it needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
source test/cluster.sh
export PATH=/usr/lib/postgresql/${PG_MAJOR:-15}/bin:$PATH

control=$(sed -n "s/^default_version = '\(.*\)'/\1/p" ingest.control)
meta=$(python3 -c 'import json; m = json.load(open("META.json")); print(m["version"], m["provides"]["ingest"]["version"])')
[ "$meta" = "$control $control" ] || { echo "META.json ($meta) disagrees with ingest.control ($control)"; exit 1; }
deb=$(sed -n '1s/^ingest (\([^-)]*\)-[^)]*).*/\1/p' debian/changelog)
[ "$deb" = "$control" ] || { echo "debian/changelog ($deb) disagrees with ingest.control ($control)"; exit 1; }
[ -f "sql/ingest--$control.sql" ] || { echo "sql/ingest--$control.sql was not built"; exit 1; }
echo "version $control: control, META.json, debian/changelog and script agree"
# Every frozen release script has an update script to a later version, and
# the current version is not frozen yet.
for f in sql/released/ingest--*.sql; do
    v=${f#sql/released/ingest--}; v=${v%.sql}
    [ "$v" != "$control" ] || { echo "$f: the current version must be built, not frozen"; exit 1; }
    compgen -G "sql/updates/ingest--$v--*.sql" >/dev/null || compgen -G "sql/ingest--$v--*.sql" >/dev/null \
        || { echo "no update script from released version $v"; exit 1; }
done
echo "released versions have update scripts"

tmp=$(mktemp -d /tmp/ingest-pkg.XXXXXX)
pgdata=
cleanup() {
    [ -z "$pgdata" ] || "$inst$bindir/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
dist=ingest-$control

# make dist archives HEAD.  This tree is a copy without its repository (or
# one the postgres user may not read), so commit the same files (those
# .gitignore does not name: no build products) to a new repository.
mkdir "$tmp/repo"
tar -C "$top" --exclude=./.git -cf - . | tar -C "$tmp/repo" -xf -
git -C "$tmp/repo" init -q
git -C "$tmp/repo" add -A
git -C "$tmp/repo" -c user.name=ingest -c user.email=dev@ingest.invalid commit -qm dist
make -s -C "$tmp/repo" dist >/dev/null
# Exactly the committed files, each under ingest-<v>/; the manifest list is
# a floor that a .gitignore or export-ignore mistake cannot slip under.
git -C "$tmp/repo" ls-files > "$tmp/files"
python3 - "$tmp/repo/$dist.zip" "$dist" "$tmp/files" "$tmp" <<'EOF'
import sys, zipfile
zpath, prefix, files, out = sys.argv[1:]
z = zipfile.ZipFile(zpath)
names = [n for n in z.namelist() if not n.endswith("/")]
bad = [n for n in names if not n.startswith(prefix + "/")]
assert not bad, f"outside {prefix}/: {bad[:5]}"
got = {n[len(prefix) + 1:] for n in names}
want = set(open(files).read().split())
assert got == want, f"zip has {sorted(got - want)[:5]} extra, {sorted(want - got)[:5]} missing"
for f in ["META.json", "Makefile", "ingest.control", "LICENSE", "README.md",
          "src/ingest.c", "sql/ingest/00_schema.sql", "sql/ingest/90_install.sql",
          "sql/released/ingest--0.2.0.sql", "sql/updates/0.2.0--0.3.0/before.sql",
          "debian/control.in", "debian/rules", "test/run-all.sh"]:
    assert f in got, f"{f} missing from the zip"
assert not [n for n in got if n.endswith((".o", ".so", ".bc"))
            or n.startswith("sql/ingest--")], "build products in the zip"
# Two unpacked copies: one built in place, one the source of a VPATH build.
for d in ("dist", "vsrc"):
    z.extractall(f"{out}/{d}")
print(f"{zpath.rsplit('/', 1)[1]}: {len(got)} files under {prefix}/")
EOF

# META.json of the distribution follows the spec, and the checker rejects
# what the spec forbids (so that it can fail).
python3 test/check-meta.py "$tmp/dist/$dist"
mutate() {
    python3 - "$tmp/dist/$dist/META.json" "$tmp/bad/META.json" "$1" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
exec(sys.argv[3])
json.dump(m, open(sys.argv[2], "w"))
EOF
    if python3 test/check-meta.py "$tmp/bad" >/dev/null; then
        echo "check-meta.py accepted a META.json with: $1"; exit 1
    fi
}
mkdir "$tmp/bad"
cp "$tmp/dist/$dist/LICENSE" "$tmp/dist/$dist/README.md" "$tmp/dist/$dist/ingest.control" "$tmp/bad/"
mutate 'm["provides"]["ingest"]["file"] = "sql/ingest--0.3.0.sql"'
mutate 'del m["maintainer"]'
mutate 'm["version"] = "0.3"'
mutate 'm["release_status"] = "beta"'
mutate 'm["license"] = "postgres"'
mutate 'm["prereqs"]["runtime"]["requires"]["PostgreSQL"] = ">= 15"'
mutate 'del m["provides"]["ingest"]["version"]'
mutate 'm["resources"]["repository"] = {"type": "git"}'
mutate 'm["meta-spec"]["version"] = "2.0.0"'
mutate 'm["colour"] = "blue"'
echo "META.json: valid PGXN Meta Spec 1.0.0 (10 invalid variants rejected)"

# The distribution builds in place.
make -s -C "$tmp/dist/$dist" >/dev/null
[ -s "$tmp/dist/$dist/sql/ingest--$control.sql" ] && [ -f "$tmp/dist/$dist/ingest.so" ] \
    || { echo "$dist.zip: make built no script or library"; exit 1; }
echo "$dist.zip builds"

# VPATH: objects and scripts made in build/, the source left clean, and
# make install puts every script in place (into a DESTDIR).
vsrc=$tmp/vsrc/$dist
mkdir "$vsrc/build"
make -s -C "$vsrc/build" -f ../Makefile VPATH=.. >/dev/null
inst=$tmp/inst
make -s -C "$vsrc/build" -f ../Makefile VPATH=.. install DESTDIR="$inst" >/dev/null
left=$(cd "$vsrc" && find . -path ./build -prune -o \( -name '*.o' -o -name '*.so' -o -name 'ingest--*.sql' \) -print \
       | grep -v '^./sql/\(released\|updates\)/' || true)
[ -z "$left" ] || { echo "VPATH build wrote into the source tree: $left"; exit 1; }
bindir=$(pg_config --bindir) pkglibdir=$(pg_config --pkglibdir) sharedir=$(pg_config --sharedir)
expected=$( { echo ingest.control; echo "ingest--$control.sql"
              (cd "$vsrc" && ls sql/released/ sql/updates/ | grep '^ingest--.*\.sql$')
              ls "$vsrc/build/sql" | grep '^ingest--.*--.*\.sql$'; } | sort -u)
got=$(ls "$inst$sharedir/extension" | sort)
[ "$got" = "$expected" ] || { echo "VPATH install: extension files"; diff <(echo "$expected") <(echo "$got"); exit 1; }
[ -f "$inst$pkglibdir/ingest.so" ] || { echo "VPATH install: no ingest.so"; exit 1; }
for f in "ingest--$control.sql" "$(ls "$vsrc/build/sql" | grep -- '--.*--')"; do
    cmp "$inst$sharedir/extension/$f" "$tmp/dist/$dist/sql/$f" \
        || { echo "VPATH build: $f differs from the in-tree build's"; exit 1; }
done
echo "VPATH build installs: $(echo $got)"

# A server that runs from that installation: the installed PostgreSQL's
# programs copied, its other files linked, the way PostgreSQL's make check
# runs from a temporary install (paths are found relative to the program).
mkdir -p "$inst$bindir"
for b in postgres initdb pg_ctl; do cp "$bindir/$b" "$inst$bindir/"; done
for f in "$pkglibdir"/* "$sharedir"/* "$sharedir"/extension/*; do
    [ -e "$inst$f" ] || ln -s "$f" "$inst$f"
done
pgdata=$tmp/data
"$inst$bindir/initdb" -D "$pgdata" -A trust -U postgres >/dev/null
printf '%s\n' "shared_preload_libraries = 'ingest'" "listen_addresses = ''" \
    "unix_socket_directories = '$tmp'" "port = 54391" >> "$pgdata/postgresql.conf"
"$inst$bindir/pg_ctl" -D "$pgdata" -l "$tmp/server.log" -w start >/dev/null
q() { psql -X -h "$tmp" -p 54391 -U postgres -d postgres -v ON_ERROR_STOP=1 -Atq "$@"; }
r=$(q <<EOF
SELECT setting FROM pg_config() WHERE name = 'PKGLIBDIR';
SELECT count(*) > 0 FROM regexp_split_to_table(pg_read_file('/proc/self/maps'), E'\n') l
 WHERE l LIKE '%$inst$pkglibdir/ingest.so';
CREATE EXTENSION ingest;
SELECT extversion FROM pg_extension WHERE extname = 'ingest';
SELECT path FROM pg_extension_update_paths('ingest') WHERE source = '0.1.0' AND target = '$control';
SELECT ingest.create_event_table('vpath_events') IS NOT NULL;
SELECT loaded FROM ingest.load('vpath_events',
  '00000000-0000-0000-0000-000000000001,tx-1,cust-1,api_call,' || now() || ',{},1,');
EOF
)
want="$inst$pkglibdir
t
$control
0.1.0--0.2.0--$control
t
1"
[ "$r" = "$want" ] || { echo "server from the VPATH install:"; diff <(echo "$want") <(echo "$r"); exit 1; }
"$inst$bindir/pg_ctl" -D "$pgdata" -m fast stop >/dev/null
pgdata=
echo "VPATH install: server loads its ingest.so, CREATE EXTENSION $control, update path 0.1.0 to $control, load"

# make installcheck against a running server configured as the README says:
# ingest preloaded and test/regress.conf's settings.  The databases it
# leaves show the suites ran against that server.
(
    mapfile -t conf < <(grep -v '^\s*\(#\|$\)' test/regress.conf)
    throwaway_cluster 54392 "${conf[@]}"
    make -s installcheck > "$tmp/installcheck.out" 2>&1 || { cat "$tmp/installcheck.out"; exit 1; }
    # Its summary lines (their form depends on the major): display only.
    grep -E '\+\+\+|tests passed' "$tmp/installcheck.out" || true
    n=$(psql -X -Atc "SELECT count(*) FROM pg_database WHERE datname IN ('contrib_regression', 'isolation_regression')" postgres)
    [ "$n" = 2 ] || { echo "make installcheck did not use the running server"; exit 1; }
)
echo "make installcheck passes against a running server"
