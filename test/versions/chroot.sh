#!/bin/bash
# Sourced by test/versions/run.sh: build, cache and enter a Debian root
# filesystem that ships a given PostgreSQL major.  Needs root, debootstrap
# and Debian's archive.
#
# Root filesystems live under $INGEST_CHROOT_CACHE (default
# /var/cache/ingest-chroots), one directory per suite.  A stamp file written
# last marks a finished build; a directory without it is rebuilt from
# scratch.  A second stamp records the package list installed, so adding a
# package installs just that package.

chroot_cache=${INGEST_CHROOT_CACHE:-/var/cache/ingest-chroots}
chroot_mirror=${INGEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# The Debian suite that ships a PostgreSQL major (its default version).
chroot_suite_for() {
    case $1 in
        15) echo bookworm ;;
        17) echo trixie ;;
        18) echo sid ;;
        *) echo "no Debian suite known for PostgreSQL $1" >&2; return 1 ;;
    esac
}

# What building and every suite need, for major $1; the last line builds
# the .deb (test/check-deb.sh) and the PGXN zip (test/check-packaging.sh).
chroot_packages() {
    local v=$1
    echo make gcc perl python3 \
        postgresql-$v postgresql-server-dev-$v \
        postgresql-$v-pgtap postgresql-$v-partman \
        libipc-run-perl libtap-parser-sourcehandler-pgtap-perl \
        git build-essential debhelper dpkg-dev postgresql-server-dev-all
}

# chroot_ensure MAJOR: sets $chroot_root to a finished root filesystem.
chroot_ensure() {
    local v=$1 suite dir pkgs
    suite=$(chroot_suite_for "$v") || return 1
    dir=$chroot_cache/$suite
    pkgs=$(chroot_packages "$v")
    mkdir -p "$chroot_cache"
    # One builder per suite at a time.
    exec {chroot_lock}>"$chroot_cache/$suite.lock"
    flock "$chroot_lock"

    if [ ! -f "$dir/.ingest-bootstrap" ]; then
        command -v debootstrap >/dev/null || {
            echo "ingest: installing debootstrap"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
        }
        # A partial build is redone from scratch, never resumed.
        chroot_umount_all "$dir"
        rm -rf --one-file-system "$dir"
        echo "ingest: debootstrap $suite into $dir"
        debootstrap --variant=minbase "$suite" "$dir" "$chroot_mirror" \
            > "$chroot_cache/$suite.debootstrap.log" 2>&1 || {
            tail -20 "$chroot_cache/$suite.debootstrap.log" >&2
            return 1
        }
        # No daemons start at install, and no default cluster is created.
        printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"
        chmod +x "$dir/usr/sbin/policy-rc.d"
        mkdir -p "$dir/etc/postgresql-common"
        echo "create_main_cluster = false" > "$dir/etc/postgresql-common/createcluster.conf"
        date -u +%FT%TZ > "$dir/.ingest-bootstrap"
    fi

    if [ "$(cat "$dir/.ingest-packages" 2>/dev/null)" != "$pkgs" ]; then
        echo "ingest: installing into $suite: $pkgs"
        cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
        # Sid's Release files expire within days; a mirror or snapshot a
        # little behind the clock must still do.
        printf 'Acquire::Check-Valid-Until "false";\n' \
            > "$dir/etc/apt/apt.conf.d/99ingest"
        chroot_mount "$dir"
        local rc=0
        chroot "$dir" env DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
            sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $pkgs && apt-get clean" \
            > "$chroot_cache/$suite.apt.log" 2>&1 || rc=$?
        chroot_umount_all "$dir"
        if [ $rc -ne 0 ]; then
            tail -20 "$chroot_cache/$suite.apt.log" >&2
            return 1
        fi
        echo "$pkgs" > "$dir/.ingest-packages"
    fi
    flock -u "$chroot_lock"
    chroot_root=$dir
}

# Mount what PostgreSQL needs inside: /proc, /dev, /dev/pts and a private
# /dev/shm.  Callers unmount with chroot_umount_all (from a trap).  The
# binds are made private so that neither the /dev/shm mount nor any
# unmount propagates to the host's /dev (on hosts where / is shared).
chroot_mount() {
    local dir=$1
    mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
    mountpoint -q "$dir/dev" || { mount --bind /dev "$dir/dev" && mount --make-private "$dir/dev"; }
    mountpoint -q "$dir/dev/pts" || { mount --bind /dev/pts "$dir/dev/pts" && mount --make-private "$dir/dev/pts"; }
    mountpoint -q "$dir/dev/shm" || mount -t tmpfs -o mode=1777 shm "$dir/dev/shm"
}

chroot_umount_all() {
    local dir=$1 m
    [ -d "$dir" ] || return 0
    for m in dev/shm dev/pts dev proc; do
        if mountpoint -q "$dir/$m" 2>/dev/null; then
            umount "$dir/$m" 2>/dev/null || umount -l "$dir/$m"
        fi
    done
}
