#!/bin/bash
# Install what building and testing ingest needs (Debian 12), if missing.
# PG_MAJOR picks another major (test/versions/ installs it in a chroot).
set -euo pipefail

v=${PG_MAJOR:-15}
pkgs=(make gcc git python3 postgresql-$v postgresql-server-dev-$v
      postgresql-$v-pgtap postgresql-$v-partman libipc-run-perl
      libtap-parser-sourcehandler-pgtap-perl)
# The .deb is built and installed by root only (test/check-deb.sh).
[ "$(id -u)" -ne 0 ] || pkgs+=(build-essential debhelper dpkg-dev postgresql-server-dev-all)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "ingest: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
fi
echo "ingest: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
