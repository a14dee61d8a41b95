#!/bin/bash
# test/versions/bench.sh MAJOR [BENCH]: run a benchmark (default
# test/bench/load_bench.sh, with the caller's ROWS, GROWTH, CHUNK...) on a
# PostgreSQL major in its cached Debian root filesystem (chroot.sh), on a
# copy of this tree; its table lands in test/bench/out/<name>-pg<MAJOR>.md.
# Needs root.  For 15 on this machine, run the benchmark directly.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
source "$here/chroot.sh"

v=${1:?usage: $0 MAJOR [BENCH]}
bench=${2:-test/bench/load_bench.sh}
name=$(basename "$bench" .sh)
[ "$(id -u)" -eq 0 ] || { echo "$0: needs root" >&2; exit 1; }
chroot_ensure "$v" || exit 1
root=$chroot_root
trap 'chroot_umount_all "$root"' EXIT
rm -rf --one-file-system "$root/ingest"
mkdir -p "$root/ingest"
tar -C "$top" --exclude=.git --exclude='*.o' --exclude='*.bc' --exclude='*.so' \
    --exclude='tmp_check*' --exclude=log --exclude=test/bench/out -cf - . | tar -C "$root/ingest" -xf -
chroot_mount "$root"
# the benchmarks do their arithmetic with bc
[ -x "$root/usr/bin/bc" ] || chroot "$root" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends bc >/dev/null
chroot "$root" env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root LANG=C.UTF-8 \
    PG_MAJOR="$v" ROWS="${ROWS:-}" GROWTH="${GROWTH:-}" CHUNK="${CHUNK:-}" WINDOW="${WINDOW:-}" \
    bash -c "cd /ingest && $bench"
rc=$?
mkdir -p "$top/test/bench/out"
cp "$root/ingest/test/bench/out/$name.md" "$top/test/bench/out/$name-pg$v.md" 2>/dev/null
exit $rc
