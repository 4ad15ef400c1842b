#!/usr/bin/env bash
# Install the tools the benchmark compares tuckbox against. Idempotent.
#
#   bash bench/setup.sh                 # restic + borg from Debian 12 (restic 0.14.0, borg 1.2.4)
#   BENCH_BORG=pip bash bench/setup.sh  # additionally build borgbackup==1.4.5 into bench/work/venv
#                                       # (bench/run.py then uses bench/work/venv/bin/borg)
#
# restic 0.14.0 from Debian 12 is the reference the project's targets were measured against.
# Needs root (apt-get). tuckbox itself comes from the project's .venv (pip install -e .).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RESTIC_DEB_VERSION="0.14.0-1+b5"
BORG_DEB_VERSION="1.2.4-1"
BORG_PIP_VERSION="1.4.5"

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

installed_version() { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null | awk '/install ok installed/ {print $4}'; }

need=()
[ "$(installed_version restic)" = "$RESTIC_DEB_VERSION" ] || need+=("restic=$RESTIC_DEB_VERSION")
[ "$(installed_version borgbackup)" = "$BORG_DEB_VERSION" ] || need+=("borgbackup=$BORG_DEB_VERSION")
if [ "${#need[@]}" -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    sudo_ apt-get update -qq
    if ! sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; then
        echo "setup: pinned versions unavailable; installing the distribution's restic and borgbackup" >&2
        sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends restic borgbackup
    fi
fi

if [ "${BENCH_BORG:-deb}" = "pip" ]; then
    venv="$here/work/venv"
    if ! "$venv/bin/borg" --version 2>/dev/null | grep -qx "borg $BORG_PIP_VERSION"; then
        echo "setup: building borgbackup==$BORG_PIP_VERSION into $venv"
        sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            build-essential pkg-config python3-dev python3-venv \
            libacl1-dev libssl-dev liblz4-dev libzstd-dev libxxhash-dev
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "borgbackup==$BORG_PIP_VERSION"
    fi
    "$venv/bin/borg" --version
fi

restic version
borg --version
echo "setup: ok"
