# Sourced by the scripts that drive the binary in dev mode with a pinned
# Python tool (contract-test, verify-events, mcp-test): the two steps they share.

# pinned_venv DIR PACKAGE VERSION: a virtualenv at DIR holding PACKAGE==VERSION,
# installed on first use.
pinned_venv() {
    local venv=$1 package=$2 version=$3
    if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$package') != '$version')" 2>/dev/null; then
        echo "== installing $package $version into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$package==$version"
    fi
}

# start_dev_server BINARY DATA [VARIABLE=VALUE...]: `serve --dev` on a free
# port with its data directory DATA and its log in DATA/server.log, with the
# settings given; sets `server` (its pid), `base` (its URL) and `token` (the
# dev tenant's, valid 2 h). Exits when it does not come up.
start_dev_server() {
    local binary=$1 data=$2
    shift 2
    env ACTIOND_LISTEN=127.0.0.1:0 "$@" "$binary" serve --dev --data-dir "$data" >"$data/server.log" 2>&1 &
    server=$!
    base=
    # Dev mode prints its address once the sandbox sender is registered.
    for _ in $(seq 300); do
        base=$(sed -n 's/^actiond is running in dev mode at //p' "$data/server.log")
        [ -n "$base" ] && break
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$base" ] || { echo "the server did not start" >&2; cat "$data/server.log" >&2; exit 1; }
    token=$("$binary" token --dev --data-dir "$data" --tenant dev --ttl 2h)
}
