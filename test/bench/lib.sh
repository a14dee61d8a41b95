# Sourced by the benchmarks: build, install, and helpers.
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"

# psql against the throwaway cluster, quiet and unaligned
q() { as_pg psql -X -q -t -A -d postgres -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%d", n / t }'; }
