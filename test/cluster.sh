# Sourced by the test, demo and benchmark scripts.

# Run a command as the user that runs PostgreSQL (initdb refuses root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- env PATH="$PATH" "$@"
    else
        "$@"
    fi
}

# throwaway_cluster PORT [postgresql.conf line ...]
# Start a cluster with ingest preloaded in a new directory, $cluster_dir;
# it is stopped and removed when the script exits.  PGHOST, PGPORT and
# PGUSER point at it.
throwaway_cluster() {
    local port=$1
    shift
    cluster_dir=$(mktemp -d /tmp/ingest-cluster.XXXXXX)
    [ "$(id -u)" -eq 0 ] && chown postgres: "$cluster_dir"
    trap 'as_pg pg_ctl -D "$cluster_dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$cluster_dir"' EXIT
    as_pg initdb -D "$cluster_dir/data" -A trust -U postgres >/dev/null
    {
        echo "shared_preload_libraries = 'ingest'"
        echo "port = $port"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$cluster_dir'"
        printf '%s\n' "$@"
    } | as_pg tee -a "$cluster_dir/data/postgresql.conf" >/dev/null
    as_pg pg_ctl -D "$cluster_dir/data" -l "$cluster_dir/log" -w start >/dev/null
    export PGHOST=$cluster_dir PGPORT=$port PGUSER=postgres
}
