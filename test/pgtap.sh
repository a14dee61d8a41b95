#!/bin/bash
# pgTAP through pg_prove, in a throwaway instance with ingest preloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
source test/cluster.sh
mapfile -t conf < test/regress.conf
throwaway_cluster 54391 "${conf[@]}"
createdb ingest_pgtap
psql -X -q -d ingest_pgtap -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION ingest'
pg_prove -d ingest_pgtap test/pgtap/*.sql
