# Sourced by the benchmarks: build, install, and helpers.
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"

# psql against the throwaway cluster, quiet and unaligned
q() { as_pg psql -X -q -t -A -d postgres -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%d", n / t }'; }
# Before each timed method: no autovacuum still busy with an earlier
# method's tables, no dirty pages of it left to write.
settle() {
    for ((i = 0; i < 300; i++)); do
        [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" = 0 ] && break
        sleep 1
    done
    q -c "CHECKPOINT"
}
