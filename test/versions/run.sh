#!/bin/bash
# test/versions/run.sh MAJOR...: run every suite (test/run-all.sh) on each
# PostgreSQL major in a cached Debian root filesystem (see chroot.sh), on a
# copy of this source tree.  Prints one summary line per major and exits
# non-zero if any failed.  Needs root.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
source "$here/chroot.sh"
source "$here/report.sh"

[ $# -gt 0 ] || { echo "usage: $0 MAJOR..." >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "test/versions/run.sh: needs root (debootstrap, chroot, mount)" >&2; exit 1; }

# A file per major with its full output, and a summary line printed at the end.
logdir=${INGEST_VERSIONS_LOG:-$top/log/versions}
mkdir -p "$logdir"
summary=()
status=0
mounted=

cleanup() {
    [ -n "$mounted" ] && chroot_umount_all "$mounted"
    mounted=
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

run_major() {
    local v=$1 t0 src log rc
    t0=$SECONDS
    log=$logdir/pg$v.log
    if ! chroot_ensure "$v"; then
        summary+=("PostgreSQL $v: root filesystem could not be built")
        return 1
    fi
    local t_setup=$((SECONDS - t0))
    # A fresh copy of the tree, without build products of the host's major,
    # and an empty /tmp (run-all.sh leaves its copies of the tree there).
    src=${chroot_root:?}/ingest
    rm -rf --one-file-system "$src"
    find "$chroot_root/tmp" -mindepth 1 -xdev -delete 2>/dev/null
    mkdir -p "$src"
    (cd "$top" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 cp --parents -t "$src" 2>/dev/null) \
        || tar -C "$top" --exclude=.git --exclude='*.o' --exclude='*.bc' \
            --exclude='*.so' --exclude='tmp_check*' --exclude=log -cf - . | tar -C "$src" -xf -
    # the Citus source for test/citus.sh, at ../shared/vendor from /ingest
    rm -rf --one-file-system "$chroot_root/shared"
    for f in "$top"/../shared/vendor/citus-*.tar.gz; do
        [ -f "$f" ] && mkdir -p "$chroot_root/shared/vendor" && cp "$f" "$chroot_root/shared/vendor/"
    done
    chroot_mount "$chroot_root"
    mounted=$chroot_root
    echo "=== PostgreSQL $v ($(chroot_suite_for "$v"), log in $log)"
    # run-all.sh builds and installs as root inside, then runs the suites
    # as the postgres user.
    chroot "$chroot_root" env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
        HOME=/root LANG=C.UTF-8 PG_MAJOR="$v" \
        /ingest/test/run-all.sh > "$log" 2>&1
    rc=$?
    cleanup
    local line
    line=$(report_line "$log")
    [ -n "$line" ] || line="did not finish (exit $rc)"
    [ $rc -eq 0 ] || { report_failures "$log"; tail -5 "$log" | sed 's/^/    /'; }
    summary+=("PostgreSQL $v: $line (setup $t_setup s, total $((SECONDS - t0)) s)")
    return $rc
}

for v in "$@"; do
    run_major "$v" || status=1
done
printf '%s\n' "${summary[@]}"
exit $status
