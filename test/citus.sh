#!/bin/bash
# The Citus suite (test/citus/t/*.pl): a coordinator and two workers on this
# machine.  Citus is not packaged by Debian: it is built from the source
# tarball in ../shared/vendor/ (or $INGEST_CITUS_TARBALL), once per machine
# and major, cached under $INGEST_CITUS_CACHE, and installed from the cache.
# Skips, saying why, where the tarball is absent, the major is one that
# Citus release does not support, or installing needs root.
#
# Runs in test/run-all.sh's copy of the tree ($work); PG_MAJOR picks the major.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
source "$here/cluster.sh"
v=${PG_MAJOR:-15}
export PATH=/usr/lib/postgresql/$v/bin:$PATH

skip() { echo "Citus suite skipped: $*"; exit 0; }

tarball=${INGEST_CITUS_TARBALL:-}
if [ -z "$tarball" ]; then
    # run-all.sh works on a copy; the source tree it came from knows ../shared
    for d in "${INGEST_SOURCE_DIR:-}" "$top"; do
        [ -n "$d" ] || continue
        for f in "$d"/../shared/vendor/citus-*.tar.gz; do
            [ -f "$f" ] && tarball=$f
        done
        [ -n "$tarball" ] && break
    done
fi
[ -n "$tarball" ] && [ -f "$tarball" ] \
    || skip "no Citus source tarball (../shared/vendor/citus-*.tar.gz or INGEST_CITUS_TARBALL)"
citus=$(basename "$tarball" .tar.gz)
case "$citus:$v" in
    citus-13.0.*:1[567]) ;;
    citus-13.0.*:*) skip "$citus supports PostgreSQL 15 to 17, not $v" ;;
esac

libdir=$(pg_config --pkglibdir)
if [ ! -f "$libdir/citus.so" ] || [ "$(cat "$libdir/citus.ingest-stamp" 2>/dev/null)" != "$citus" ]; then
    [ "$(id -u)" -eq 0 ] || skip "Citus is not installed and installing it needs root"
    cache=${INGEST_CITUS_CACHE:-/var/cache/ingest-citus}/$citus-pg$v
    if [ ! -f "$cache/.built" ]; then
        echo "building $citus for PostgreSQL $v into $cache"
        deps=(libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libselinux1-dev
              libxslt1-dev libpam0g-dev libreadline-dev libicu-dev autoconf flex bison)
        missing=()
        for p in "${deps[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
                || missing+=("$p")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" >/dev/null
        fi
        rm -rf "$cache"
        mkdir -p "$cache"
        build=$(mktemp -d /tmp/citus-build.XXXXXX)
        tar -C "$build" -xzf "$tarball"
        (cd "$build"/citus-* \
            && ./configure --without-libcurl PG_CONFIG="$(command -v pg_config)" >"$cache/build.log" 2>&1 \
            && make -j"$(nproc)" >>"$cache/build.log" 2>&1 \
            && make install DESTDIR="$cache/root" >>"$cache/build.log" 2>&1) \
            || { tail -20 "$cache/build.log"; rm -rf "$build"; exit 1; }
        rm -rf "$build"
        touch "$cache/.built"
    fi
    cp -a "$cache/root/." /
    echo "$citus" > "$libdir/citus.ingest-stamp"
fi

cd "$top"
as_pg make -s citus-tapcheck PROVE_FLAGS="--timer"
