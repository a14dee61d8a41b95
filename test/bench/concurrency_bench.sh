#!/bin/bash
# Concurrency benchmark: N sessions (CONCURRENCY, default 1,2,4) load
# billing-shaped batches (billing_rows in lib.sh) at the same time into one
# table, by ingest.load, by plain COPY and by staging + INSERT ... ON
# CONFLICT DO NOTHING, on two key sets:
#   disjoint  each session's keys are its own (its own transaction_id prefix
#             and seed; duplicates, 5%, only within the session's stream)
#   overlap   10% of each session's rows (every 10th row of its stream) carry
#             keys and events that every other session also loads, at the
#             same place in its stream (these rows take the places of the
#             stream's own repeats, so the duplicates are the shared rows)
# In both sets each session's batch is shuffled in a per-session order, so
# that sessions meet shared keys in different orders (the case that can
# deadlock); SHUFFLE=0 keeps every batch in stream order instead, so that
# all sessions meet the shared keys in the same order.
#
#   test/bench/concurrency_bench.sh                   # 1, 2, 4 sessions, 200k rows each
#   CONCURRENCY=1,2,4 ROWS_EACH=50000 BATCH=5000 REPEAT=1 test/bench/concurrency_bench.sh
#                                                     # a quick run
#   METHODS="ingest copy" KEYSETS=overlap CONCURRENCY=2 test/bench/concurrency_bench.sh
#
# Each session loads ROWS_EACH rows in calls of BATCH rows (fixed rows each),
# every call its own transaction, synchronous_commit = on; each run starts
# from a new empty table.  The sessions are pgbench clients (-n -M simple,
# one thread each): a script execution takes the session's next batch from
# its own sequence and loads that file, read on the server:
#   ingest  SELECT * FROM ingest.load(t, pg_read_file(batch))  (managed table)
#   copy    COPY t FROM batch  (BRIN (timestamp), B-trees (organization_id,
#           code, timestamp) and (external_customer_id, timestamp), no dedup)
#   stage   COPY into a temp table, INSERT ... SELECT ... ON CONFLICT DO
#           NOTHING, UNIQUE (organization_id, transaction_id, timestamp)
# Errors: pgbench --max-tries=1 --failures-detailed.  A call that fails with
# 40P01 (deadlock) or 40001 is counted and NOT retried: its batch is lost and
# its rows are not counted in rows/s.  Any other error aborts that session
# (pgbench's "client aborted"); aborted sessions are reported.
# rows/s = rows of committed calls over the wall time of the whole pgbench
# run (connections included, until the last session ends).  p99 is over the
# committed calls (pgbench -l per-transaction log; failed calls excluded).
# Scaling efficiency = rows/s with 2 sessions / rows/s with 1, per method
# and key set; target: ingest's at least 0.90 of plain COPY's.
#
# REPEAT (default 3) rounds of every run, the methods' order rotating from
# round to round; rows/s is the median of the rounds, failures are summed,
# and p99 is over the committed calls of all rounds.
# DEBUG_LOGS=1 also prints each run's pgbench summary and per-call log.
# As postgres in a root filesystem where root installed the build:
#   BENCH_SKIP_INSTALL=1 CONCURRENCY=1,2,4 ROWS_EACH=50000 BATCH=5000 REPEAT=1 test/bench/concurrency_bench.sh
#
# Prints markdown; writes it to test/bench/out/concurrency_bench.md too.
source "$(dirname "$0")/lib.sh"

CONCURRENCY=${CONCURRENCY:-1,2,4}
ROWS_EACH=${ROWS_EACH:-200000}
BATCH=${BATCH:-10000}
SEED=${SEED:-42}
METHODS=${METHODS:-ingest copy stage}
REPEAT=${REPEAT:-3}
SHUFFLE=${SHUFFLE:-1}
KEYSETS=${KEYSETS:-disjoint overlap}
IFS=, read -r -a sessions <<<"$CONCURRENCY"
maxn=0
for n in "${sessions[@]}"; do (( n > maxn )) && maxn=$n; done
(( BATCH % 10 == 0 )) || { echo "BATCH must be a multiple of 10" >&2; exit 2; }
batches=$(( (ROWS_EACH + BATCH - 1) / BATCH ))
rows_each=$(( batches * BATCH ))

throwaway_cluster 54394 "ingest.enabled = off" "shared_buffers = 2GB" \
    "max_wal_size = 16GB" "checkpoint_timeout = 30min" "synchronous_commit = on" \
    "max_connections = 50"
dir=$cluster_dir
export PGOPTIONS="-c client_min_messages=warning"   # not ingest.load's NOTICE per call

q -c "CREATE EXTENSION ingest"
define_billing_rows
q <<SQL
CREATE FUNCTION bench_copy(tbl text, path text) RETURNS void LANGUAGE plpgsql AS \$\$
BEGIN
    EXECUTE format('COPY %I ($cols) FROM %L CSV', tbl, path);
END \$\$;
CREATE FUNCTION bench_stage(tbl text, path text) RETURNS void LANGUAGE plpgsql AS \$\$
BEGIN
    EXECUTE format('CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT $cols FROM %I WITH NO DATA', tbl);
    EXECUTE format('COPY stage ($cols) FROM %L CSV', path);
    EXECUTE format('INSERT INTO %I ($cols) SELECT $cols FROM stage ON CONFLICT DO NOTHING', tbl);
END \$\$;
SQL

echo "== generating $maxn sessions x $batches batches of $BATCH rows, both key sets"
t0=$(now)
for ((s = 0; s < maxn; s++)); do
    for ((b = 0; b < batches; b++)); do
        lo=$((b * BATCH + 1)) hi=$(((b + 1) * BATCH))
        # disjoint: the session's own stream; overlap: every 10th row from
        # the stream all sessions share instead (ord is the row's place in
        # the batch, ord % 10 = n % 10 as BATCH is a multiple of 10)
        if [ "$SHUFFLE" = 0 ]; then order=ord; else order="hashint8extended(ord, $s)"; fi
        own="billing_rows($lo, $hi, $rows_each, $SEED + 1 + $s, 's${s}_') WITH ORDINALITY r(o, t, c, d, ts, p, v, dv, ord)"
        shared="billing_rows($lo, $hi, $rows_each, $SEED, 'sh_') WITH ORDINALITY r(o, t, c, d, ts, p, v, dv, ord)"
        q -c "COPY (SELECT o, t, c, d, ts, p, v, dv FROM $own ORDER BY $order)
                TO '$dir/disjoint_${s}_$b.csv' CSV"
        q -c "COPY (SELECT o, t, c, d, ts, p, v, dv FROM (
                      SELECT r.* FROM $own WHERE ord % 10 <> 0
                      UNION ALL
                      SELECT r.* FROM $shared WHERE ord % 10 = 0) u
                    ORDER BY $order) TO '$dir/overlap_${s}_$b.csv' CSV"
    done
done
t_gen=$(echo "$(now) - $t0" | bc)
echo "   ${t_gen}s"

# Per (method, key set, sessions), over the REPEAT rounds: rows/s of each
# round, failures summed, latencies of every committed call pooled.
declare -A RR DL FL AB OK ST
run=0
read -r -a mlist <<<"$METHODS"
for ((round = 1; round <= REPEAT; round++)); do
  for keys in $KEYSETS; do
    for n in "${sessions[@]}"; do
        # the methods' order rotates from round to round
        for ((mi = 0; mi < ${#mlist[@]}; mi++)); do
            m=${mlist[$(( (mi + round - 1) % ${#mlist[@]} ))]}
            run=$((run + 1))
            k="$m,$keys,$n"
            tbl="c_${m}_${keys}_$n"
            make_table "$tbl" "$m"
            for ((si = 0; si < n; si++)); do
                q -c "DROP SEQUENCE IF EXISTS bseq_$si" -c "CREATE SEQUENCE bseq_$si MINVALUE 0 START 0"
            done
            case $m in
                ingest) stmt="SELECT loaded FROM ingest.load('$tbl', pg_read_file('$dir/${keys}_' || :client_id || '_' || :b || '.csv'));" ;;
                copy) stmt="SELECT bench_copy('$tbl', '$dir/${keys}_' || :client_id || '_' || :b || '.csv');" ;;
                stage) stmt="SELECT bench_stage('$tbl', '$dir/${keys}_' || :client_id || '_' || :b || '.csv');" ;;
            esac
            printf '%s\n%s\n' "SELECT nextval('bseq_' || :client_id) AS b \\gset" "$stmt" > "$dir/script_$run.sql"
            mkdir -p "$dir/log_$run"
            chown -R postgres: "$dir" 2>/dev/null || true
            settle
            echo "== round $round/$REPEAT: $m, $keys keys, $n sessions"
            t0=$(now)
            set +e
            ( cd "$dir/log_$run" && as_pg pgbench -n -M simple -c "$n" -j "$n" -t "$batches" \
                  --max-tries=1 --failures-detailed -l -f "$dir/script_$run.sql" postgres ) \
                > "$dir/pgbench_$run.out" 2>&1
            rc=$?
            set -e
            t=$(echo "$(now) - $t0" | bc)
            # pgbench's summary: calls committed, failed and why
            ok=$(sed -n 's/.*actually processed: \([0-9]*\)\/.*/\1/p' "$dir/pgbench_$run.out" | head -1)
            failed=$(sed -n 's/.*number of failed transactions: \([0-9]*\).*/\1/p' "$dir/pgbench_$run.out" | head -1)
            dl=$(sed -n 's/.*deadlock failures: \([0-9]*\).*/\1/p' "$dir/pgbench_$run.out" | head -1)
            sf=$(sed -n 's/.*serialization failures: \([0-9]*\).*/\1/p' "$dir/pgbench_$run.out" | head -1)
            ok=${ok:-0} failed=${failed:-0} dl=${dl:-0} sf=${sf:-0}
            # per-call log: client call time_us script epoch us; the time is
            # "deadlock" or "serialization" for a failed call
            { cat "$dir/log_$run"/pgbench_log.* || true; } | awk '$3 ~ /^[0-9]+$/ { print $3 }' >> "$dir/lat_${m}_${keys}_$n"
            aborted=$(grep -c "client [0-9]* aborted" "$dir/pgbench_$run.out" || true)
            if [ "$rc" -ne 0 ] || [ "$aborted" -gt 0 ]; then
                echo "   pgbench exit $rc, $aborted sessions aborted:"; grep -i "error\|abort" "$dir/pgbench_$run.out" | head -5 | sed 's/^/   /'
            fi
            rps=$(rate "$((ok * BATCH))" "$t")
            stored=$(q -c "SELECT count(*) FROM $tbl")
            echo "   $rps rows/s, $ok calls committed, $failed failed ($dl deadlock, $sf serialization), $stored stored"
            RR[$k]+="${RR[$k]:+ }$rps"
            DL[$k]=$(( ${DL[$k]:-0} + dl ))
            FL[$k]=$(( ${FL[$k]:-0} + failed - dl ))
            AB[$k]=$(( ${AB[$k]:-0} + aborted ))
            OK[$k]=$(( ${OK[$k]:-0} + ok ))
            ST[$k]+="${ST[$k]:+ }$stored"
            if [ -n "${DEBUG_LOGS:-}" ]; then cat "$dir/pgbench_$run.out"; head -n 20 "$dir/log_$run"/pgbench_log.*; fi
            q -c "DROP TABLE $tbl"
        done
    done
  done
done

median() { tr ' ' '\n' <<<"$1" | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%d\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
p99() {  # nearest rank over the pooled latencies (microseconds), in ms
    sort -n "$1" | awk '{ a[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int(NR * 0.99 + 0.999999); if (i > NR) i = NR; printf "%.0f (%d calls)", a[i] / 1000, NR }'
}
declare -A R   # R[method,keys,n] = median rows/s
results=""
for keys in $KEYSETS; do
    for n in "${sessions[@]}"; do
        for m in $METHODS; do
            k="$m,$keys,$n"
            R[$k]=$(median "${RR[$k]}")
            all=""; [ "$REPEAT" -gt 1 ] && all=" (${RR[$k]// /, })"
            results+="| $keys | $m | $n | ${R[$k]}$all | ${DL[$k]} | ${FL[$k]} | ${AB[$k]} | $(p99 "$dir/lat_${m}_${keys}_$n") | ${OK[$k]} / $((n * batches * REPEAT)) | ${ST[$k]// /, } |"$'\n'
        done
    done
done

eff() {  # eff METHOD KEYS: rows/s with 2 sessions over rows/s with 1
    local a=${R[$1,$2,2]:-} b=${R[$1,$2,1]:-}
    [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }' || echo "-"
}
efftable=""
for keys in $KEYSETS; do
    ei=$(eff ingest "$keys") ec=$(eff copy "$keys") es=$(eff stage "$keys")
    rt=$(awk -v a="$ei" -v b="$ec" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.2f (target >= 0.90: %s)", a / b, (a / b >= 0.9 ? "met" : "not met") }')
    efftable+="| $keys | $ei | $ec | $es | $rt |"$'\n'
done

out=$(cat <<EOT
### Concurrent sessions

Billing-shaped batches (lib.sh billing_rows, seed $SEED), $REPEAT round(s), the methods' order rotating from round to round; $rows_each rows a session, each batch $( [ "$SHUFFLE" = 0 ] && echo "in stream order (SHUFFLE=0)" || echo "shuffled in a per-session order"), in calls of $BATCH rows, each its own transaction, synchronous_commit = on; sessions are pgbench clients, each loading its own files. PostgreSQL $(q -c "SHOW server_version"), $(nproc) cores. Data generated in ${t_gen}s.

| key sets | method | sessions | rows/s (total; median of rounds, each round) | 40P01 deadlocks | other failed calls (40001) | sessions aborted | p99 call latency ms (committed calls) | calls committed / calls | rows stored (each round) |
|---|---|---|---|---|---|---|---|---|---|
$results
A failed call (40P01 or 40001) is counted and not retried: its rows are not in rows/s (nor stored). Any other error aborts its session (pgbench), counted under "sessions aborted".

Scaling efficiency, rows/s with 2 sessions over rows/s with 1 (medians):

| key sets | ingest.load | plain COPY | staging + ON CONFLICT | ingest.load / plain COPY |
|---|---|---|---|---|
$efftable
EOT
)
echo "$out"
mkdir -p "$top/test/bench/out"
echo "$out" > "$top/test/bench/out/concurrency_bench.md"
# the figures full_bench.sh checks against the targets: scaling efficiency
# against plain COPY's (unrounded), 40P01 summed over every run of a
# method, and the configurations (key set, sessions) where ingest.load had
# more 40P01 than staging + ON CONFLICT
dls() { local k t=0; for k in "${!DL[@]}"; do [[ $k == "$1",* ]] && t=$((t + DL[$k])); done; echo $t; }
effr() {
    local a=${R[ingest,$1,2]:-} b=${R[ingest,$1,1]:-} c=${R[copy,$1,2]:-} d=${R[copy,$1,1]:-}
    [ -n "$a" ] && [ -n "$b" ] && [ -n "$c" ] && [ -n "$d" ] &&
        awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" 'BEGIN { printf "%.4f", (a / b) / (c / d) }' || echo "-"
}
dl_worse() {
    local keys n w=0
    for keys in $KEYSETS; do for n in "${sessions[@]}"; do
        (( ${DL[ingest,$keys,$n]:-0} > ${DL[stage,$keys,$n]:-0} )) && w=$((w + 1))
    done; done
    echo $w
}
cat > "$top/test/bench/out/concurrency_bench.vars" <<EOT
conc_eff_disjoint=$(effr disjoint)
conc_eff_overlap=$(effr overlap)
conc_eff_ingest="$(eff ingest disjoint) $(eff ingest overlap)"
conc_eff_copy="$(eff copy disjoint) $(eff copy overlap)"
conc_deadlocks_ingest=$(dls ingest)
conc_deadlocks_stage=$(dls stage)
conc_deadlocks_worse=$(dl_worse)
conc_aborted="$(for k in "${!AB[@]}"; do echo "${AB[$k]}"; done | awk '{ t += $1 } END { print t + 0 }')"
conc_shuffle=$SHUFFLE
EOT
