#!/bin/bash
# The version in ingest.control, META.json and the built script agree, and
# every released version has an upgrade path to the current one.
set -euo pipefail
cd "$(dirname "$0")/.."
control=$(sed -n "s/^default_version = '\(.*\)'/\1/p" ingest.control)
meta=$(python3 -c 'import json; m = json.load(open("META.json")); print(m["version"], m["provides"]["ingest"]["version"])')
[ "$meta" = "$control $control" ] || { echo "META.json ($meta) disagrees with ingest.control ($control)"; exit 1; }
[ -f "sql/ingest--$control.sql" ] || { echo "sql/ingest--$control.sql was not built"; exit 1; }
echo "version $control: control, META.json and script agree"
# Every frozen release script has an update script to a later version, and
# the current version is not frozen yet.
for f in sql/released/ingest--*.sql; do
    v=${f#sql/released/ingest--}; v=${v%.sql}
    [ "$v" != "$control" ] || { echo "$f: the current version must be built, not frozen"; exit 1; }
    compgen -G "sql/updates/ingest--$v--*.sql" >/dev/null || compgen -G "sql/ingest--$v--*.sql" >/dev/null \
        || { echo "no update script from released version $v"; exit 1; }
done
echo "released versions have update scripts"
