#!/bin/bash
# The Debian package, the Debian way: dpkg-buildpackage -us -uc -b of a
# clean copy of this tree (debian/rules: dh --with pgxs, i.e. pg_buildext
# building out of tree for PG_MAJOR), dpkg -i, a fresh cluster, CREATE
# EXTENSION and a CSV load; then dpkg --purge and make install again, and
# the installed ingest files must be byte for byte those make install had
# put there before.  Needs root (run-all.sh runs it as root, after the
# other suites, on a tree it has built and installed).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
source test/cluster.sh
v=${PG_MAJOR:-15}
export PATH=/usr/lib/postgresql/$v/bin:$PATH
pkg=postgresql-$v-ingest

[ "$(id -u)" -eq 0 ] || { echo "check-deb.sh: needs root (dpkg -i)"; exit 1; }
for c in dpkg-buildpackage dh pg_buildext; do
    command -v "$c" >/dev/null || { echo "check-deb.sh: no $c (test/deps.sh installs it, as root)"; exit 1; }
done
# Never purge a package someone installed on purpose.
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
    echo "check-deb.sh: $pkg is installed here already; not touching it"; exit 1
fi

sharedir=$(pg_config --sharedir) pkglibdir=$(pg_config --pkglibdir)
# What make install put in place: every ingest file, with its checksum.
installed() {
    find "$sharedir/extension" "$pkglibdir" \( -name 'ingest.*' -o -name 'ingest--*' \
        -o -path "$pkglibdir/bitcode/ingest/*" \) -type f -print0 | sort -z | xargs -0 sha256sum
}
before=$(installed)
[ -n "$before" ] || { echo "check-deb.sh: make install of this tree first"; exit 1; }

tmp=$(mktemp -d /tmp/ingest-deb.XXXXXX)
chown postgres: "$tmp"
restore() {
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
        dpkg --purge "$pkg" >/dev/null 2>&1
    fi
    make -s -C "$top" install >/dev/null
    rm -rf "$tmp"
}
trap restore EXIT

# A clean copy: pg_buildext builds with VPATH, which needs a source tree
# without build products.  debian/control is made for this major only.
mkdir "$tmp/ingest"
tar -C "$top" --exclude=./.git -cf - . | tar -C "$tmp/ingest" -xf -
make -s -C "$tmp/ingest" clean >/dev/null
export PG_SUPPORTED_VERSIONS=$v
(cd "$tmp/ingest" && pg_buildext updatecontrol && dpkg-buildpackage -us -uc -b) > "$tmp/build.log" 2>&1 \
    || { tail -40 "$tmp/build.log"; echo "dpkg-buildpackage failed"; exit 1; }
deb=$(ls "$tmp"/"${pkg}"_*.deb)
echo "built $(basename "$deb") ($(stat -c %s "$deb") bytes)"

# The package holds what make install installs, under the same names (the
# list from a staged install: files left by older builds may lie around).
make -s -C "$top" install DESTDIR="$tmp/staged" >/dev/null
wanted=$(cd "$tmp/staged" && find . -type f | sed 's|^\.||' \
         | grep -E "^($sharedir/extension|$pkglibdir)/" | sort)
pkgfiles=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\.||' \
           | grep -E "^($sharedir/extension|$pkglibdir)/.*[^/]$" | sort)
[ "$pkgfiles" = "$wanted" ] \
    || { echo "$pkg files differ from make install's:"; diff <(echo "$wanted") <(echo "$pkgfiles"); exit 1; }

dpkg -i "$deb" > "$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; exit 1; }
# The scripts it installed are this tree's.
for f in $(dpkg -L "$pkg" | grep "^$sharedir/extension/"); do
    b=$(basename "$f")
    src=
    for d in "$top" "$top/sql" "$top/sql/released" "$top/sql/updates"; do
        [ -f "$d/$b" ] && src=$d/$b
    done
    [ -n "$src" ] && cmp -s "$f" "$src" || { echo "$f is not this tree's $b"; exit 1; }
done
echo "dpkg -i $pkg: $(dpkg -L "$pkg" | grep -c "^$sharedir/extension/") files in extension/, as in the tree; Depends: $(dpkg-query -W -f='${Depends}' "$pkg")"

(
    throwaway_cluster 54393
    r=$(psql -X -v ON_ERROR_STOP=1 -Atq -d postgres <<'EOF'
CREATE EXTENSION ingest;
SELECT extversion FROM pg_extension WHERE extname = 'ingest';
SELECT ingest.create_event_table('deb_events') IS NOT NULL;
SELECT loaded, duplicates, rejected, conflicts FROM ingest.load('deb_events', format(
  E'organization_id,transaction_id,external_customer_id,code,timestamp,value\n'
   '00000000-0000-0000-0000-000000000001,tx-1,cust-1,api_call,%1$s,1\n'
   '00000000-0000-0000-0000-000000000001,tx-2,cust-1,api_call,%1$s,2\n'
   '00000000-0000-0000-0000-000000000001,tx-1,cust-1,api_call,%1$s,1\n',
  now()), header => true,
  columns => '{organization_id,transaction_id,external_customer_id,code,timestamp,value}');
SELECT count(*), sum(value) FROM deb_events;
EOF
)
    want="$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$top/ingest.control")
t
2|1|0|0
2|3"
    [ "$r" = "$want" ] || { echo "with $pkg installed:"; diff <(echo "$want") <(echo "$r"); exit 1; }
)
echo "fresh cluster: CREATE EXTENSION ingest, ingest.load of a CSV: 2 loaded, 1 duplicate"

dpkg --purge "$pkg" > "$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; exit 1; }
make -s -C "$top" install >/dev/null
after=$(installed)
[ "$after" = "$before" ] || { echo "after dpkg --purge and make install:"; diff <(echo "$before") <(echo "$after"); exit 1; }
trap 'rm -rf "$tmp"' EXIT
echo "dpkg --purge $pkg, make install: the installed ingest files are make install's again"
