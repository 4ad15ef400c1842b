#!/usr/bin/env bash
# A private Tahoe-LAFS grid for the tests: one introducer, three storage nodes
# and one client node, 2-of-3 encoding, everything on 127.0.0.1 only.
#
#   scripts/servers/tahoe.sh start   # idempotent; fast when already running
#   scripts/servers/tahoe.sh stop
#
# State lives in .test-servers/tahoe/ (git-ignored). When the grid is ready
# this writes .test-servers/tahoe.env with TAHOE_URL (the client's web API) and
# TAHOE_DIRCAP (a root directory write-cap: a secret, never print it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${TUCKBOX_TEST_SERVERS_DIR:-$ROOT/.test-servers}"
VENV="$STATE/tahoe-venv"
GRID="$STATE/tahoe"
ENV_FILE="$STATE/tahoe.env"
TAHOE_VERSION="1.20.0"
NODES=(introducer storage1 storage2 storage3 client)

die() { echo "tahoe.sh: $*" >&2; exit 1; }
fail() { stop_nodes; die "$@"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

install() {
    if [ -x "$VENV/bin/tahoe" ] && [ -f "$VENV/.tahoe-$TAHOE_VERSION" ]; then
        return
    fi
    echo "tahoe.sh: installing tahoe-lafs==$TAHOE_VERSION into $VENV (takes a minute)" >&2
    python3 -m venv "$VENV" || die "cannot create a venv at $VENV (is python3-venv installed?)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "tahoe-lafs==$TAHOE_VERSION" >"$STATE/tahoe-install.log" 2>&1 \
        || die "pip install tahoe-lafs==$TAHOE_VERSION failed; see $STATE/tahoe-install.log"
    touch "$VENV/.tahoe-$TAHOE_VERSION"
}

alive() { # node name -> 0 if its recorded pid runs
    local pidfile="$GRID/$1.pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

client_url() { cat "$GRID/client/node.url" 2>/dev/null | sed 's:/*$::'; }

connected_servers() { # prints how many storage servers the client is connected to
    local url; url="$(client_url)"
    [ -n "$url" ] || { echo 0; return; }
    python3 - "$url/?t=json" <<'EOF' 2>/dev/null || echo 0
import json, sys, urllib.request
try:
    d = json.load(urllib.request.urlopen(sys.argv[1], timeout=5))
except Exception:
    print(0); sys.exit()
print(sum(1 for s in d.get("servers", []) if str(s.get("connection_status", "")).lower().startswith("connected")))
EOF
}

healthy() {
    [ -f "$ENV_FILE" ] || return 1
    for n in "${NODES[@]}"; do alive "$n" || return 1; done
    [ "$(connected_servers)" -ge 3 ]
}

# Every node also starts a "log tub" that tahoe binds to all interfaces with no
# setting to change it; this launcher makes such wildcard binds use 127.0.0.1.
write_launcher() {
    cat >"$GRID/run-loopback.py.tmp" <<'EOF'
import socket
import sys

from allmydata.util import iputil


class _LoopbackSocket(socket.socket):
    def bind(self, address):
        if isinstance(address, tuple) and address[0] in ("", "0.0.0.0"):
            address = ("127.0.0.1",) + tuple(address[1:])
        return super().bind(address)


class _SocketModule:
    socket = _LoopbackSocket

    def __getattr__(self, name):
        return getattr(socket, name)


iputil.socket = _SocketModule()

from allmydata.scripts.runner import run  # noqa: E402

sys.argv[0] = "tahoe"
sys.exit(run())
EOF
    mv "$GRID/run-loopback.py.tmp" "$GRID/run-loopback.py"
}

run_node() { # name
    local n="$1" dir="$GRID/$1"
    rm -f "$dir/running.process" "$dir/twistd.pid"
    nohup "$VENV/bin/python" "$GRID/run-loopback.py" run --allow-stdin-close "$dir" </dev/null >"$GRID/$n.log" 2>&1 &
    echo $! >"$GRID/$n.pid"
}

set_cfg() { # file section key value: set key in [section] (section must exist)
    python3 - "$@" <<'EOF'
import configparser, sys
path, section, key, value = sys.argv[1:5]
cp = configparser.RawConfigParser()
cp.read(path)
if not cp.has_section(section):
    cp.add_section(section)
cp.set(section, key, value)
with open(path, "w") as f:
    cp.write(f)
EOF
}

create_grid() {
    local T="$VENV/bin/tahoe" port
    rm -rf "$GRID"
    mkdir -p "$GRID"
    write_launcher
    port="$(free_port)"
    "$T" create-introducer --port="tcp:$port:interface=127.0.0.1" --location="tcp:127.0.0.1:$port" \
        "$GRID/introducer" >/dev/null || fail "tahoe create-introducer failed"
    run_node introducer
    for _ in $(seq 1 100); do
        [ -s "$GRID/introducer/private/introducer.furl" ] && break
        alive introducer || fail "the introducer exited; see $GRID/introducer.log"
        sleep 0.2
    done
    [ -s "$GRID/introducer/private/introducer.furl" ] || fail "the introducer wrote no FURL in 20 s; see $GRID/introducer.log"
    local furl; furl="$(cat "$GRID/introducer/private/introducer.furl")"
    local common=(--introducer="$furl" --shares-needed=2 --shares-happy=3 --shares-total=3)
    for i in 1 2 3; do
        port="$(free_port)"
        "$T" create-node "${common[@]}" --nickname="storage$i" --webport=none \
            --port="tcp:$port:interface=127.0.0.1" --location="tcp:127.0.0.1:$port" \
            "$GRID/storage$i" >/dev/null || fail "tahoe create-node storage$i failed"
        set_cfg "$GRID/storage$i/tahoe.cfg" storage reserved_space 100M
    done
    port="$(free_port)"
    "$T" create-client "${common[@]}" --nickname=client --webport="tcp:$port:interface=127.0.0.1" \
        "$GRID/client" >/dev/null || fail "tahoe create-client failed"
}

ports_free() { # 0 if every port the grid's configs name can be bound now
    python3 - "$GRID" <<'EOF'
import configparser, re, socket, sys
for node in ("introducer", "storage1", "storage2", "storage3", "client"):
    cp = configparser.RawConfigParser()
    cp.read(f"{sys.argv[1]}/{node}/tahoe.cfg")
    for key in ("tub.port", "web.port"):
        m = re.match(r"tcp:(\d+)", cp.get("node", key, fallback="") or "")
        if not m:
            continue
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as twisted does
        try:
            s.bind(("127.0.0.1", int(m.group(1))))
        except OSError:
            sys.exit(1)
        finally:
            s.close()
EOF
}

launch() { # start every node of an existing grid and wait for the client to see 3 servers
    local n
    write_launcher
    for n in "${NODES[@]}"; do alive "$n" || run_node "$n"; done
    for _ in $(seq 1 240); do
        for n in "${NODES[@]}"; do
            alive "$n" || { echo "tahoe.sh: node $n exited at start; see $GRID/$n.log" >&2; stop_nodes; return 1; }
        done
        [ "$(connected_servers)" -ge 3 ] && return 0
        sleep 0.5
    done
    echo "tahoe.sh: the client did not see 3 storage servers within 120 s; see the logs in $GRID" >&2
    stop_nodes
    return 1
}

start() {
    mkdir -p "$STATE"
    install
    if healthy; then
        return 0
    fi
    rm -f "$ENV_FILE"
    stop_nodes
    local t0=$SECONDS
    if [ -f "$GRID/client/tahoe.cfg" ] && [ -f "$GRID/introducer/private/introducer.furl" ]; then
        # restart the existing grid; if that fails (say a recorded port is taken now), make a new one
        if ! ports_free || ! launch; then
            echo "tahoe.sh: making a new grid" >&2
            create_grid
            launch || die "the new grid did not come up either"
        fi
    else
        create_grid
        launch || die "the grid did not come up"
    fi
    local url; url="$(client_url)"
    if [ ! -s "$GRID/root.cap" ]; then
        local cap
        cap="$(python3 -c 'import sys, urllib.request as u; print(u.urlopen(u.Request(sys.argv[1], method="POST"), timeout=60).read().decode())' "$url/uri?t=mkdir")" \
            || die "creating the root directory failed; see $GRID/client.log"
        case "$cap" in URI:DIR2:*) ;; *) die "unexpected answer when creating the root directory" ;; esac
        (umask 077; printf '%s\n' "$cap" >"$GRID/root.cap")
    fi
    (umask 077; printf 'TAHOE_URL=%s\nTAHOE_DIRCAP=%s\n' "$url" "$(cat "$GRID/root.cap")" >"$ENV_FILE.tmp")
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    echo "tahoe.sh: grid ready at $url in $((SECONDS - t0)) s" >&2
}

stop_nodes() {
    local n pid
    for n in "${NODES[@]}"; do
        if alive "$n"; then
            pid="$(cat "$GRID/$n.pid")"
            kill "$pid" 2>/dev/null || true
        fi
    done
    for n in "${NODES[@]}"; do
        if [ -f "$GRID/$n.pid" ]; then
            pid="$(cat "$GRID/$n.pid")"
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$GRID/$n.pid"
        fi
    done
}

stop() {
    rm -f "$ENV_FILE"
    [ -d "$GRID" ] && stop_nodes
    return 0
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 {start|stop}" >&2; exit 2 ;;
esac
