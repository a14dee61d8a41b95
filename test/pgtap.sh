#!/bin/bash
# pgTAP through pg_prove, in a throwaway instance with ingest preloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/ingest-pgtap.XXXXXX)
trap 'pg_ctl -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
initdb -D "$dir/data" -A trust -U postgres >/dev/null
cat test/regress.conf >> "$dir/data/postgresql.conf"
cat >> "$dir/data/postgresql.conf" <<EOC
port = 54391
listen_addresses = ''
unix_socket_directories = '$dir'
EOC
pg_ctl -D "$dir/data" -l "$dir/log" -w start >/dev/null
export PGHOST=$dir PGPORT=54391 PGUSER=postgres
createdb ingest_pgtap
psql -X -q -d ingest_pgtap -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION ingest'
pg_prove -d ingest_pgtap test/pgtap/*.sql
