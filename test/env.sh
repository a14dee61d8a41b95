# Sourced by the test and demo scripts: build, install, and pick the user
# that runs PostgreSQL (initdb refuses root).  PG_MAJOR picks the major
# (default 15, Debian 12's).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
source test/cluster.sh
test/deps.sh
export PATH=/usr/lib/postgresql/${PG_MAJOR:-15}/bin:$PATH
make -s >/dev/null
if [ "$(id -u)" -eq 0 ]; then
    make -s install >/dev/null
    # Work on a copy the postgres user owns.
    work=$(mktemp -d /tmp/ingest.XXXXXX)
    cp -a "$top"/. "$work"/
    chown -R postgres: "$work"
else
    make -s install >/dev/null
    work=$top
fi
