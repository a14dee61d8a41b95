#!/bin/bash
# Install what building and testing ingest needs (Debian 12), if missing.
set -euo pipefail

pkgs=(make gcc clang-14 postgresql-15 postgresql-server-dev-15
      postgresql-15-pgtap postgresql-15-partman libipc-run-perl
      libtap-parser-sourcehandler-pgtap-perl)
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
