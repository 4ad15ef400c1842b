"""Access to the real test servers started by scripts/servers/*.sh.

Each server script writes ``.test-servers/<name>.env`` (KEY=VALUE lines) at the
top of the checkout when its server is ready. ``server_env(name)`` returns that
mapping; when the file is missing the test fails under CI (``CI=true`` or
``TUCKBOX_REQUIRE_SERVERS=1``) and is skipped otherwise, so a developer can run
the fast tests without the servers but CI can never silently skip them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
STATE_DIR = Path(os.environ.get("TUCKBOX_TEST_SERVERS_DIR", ROOT / ".test-servers"))


def servers_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("TUCKBOX_REQUIRE_SERVERS") == "1"


def server_env(name: str) -> dict[str, str]:
    path = STATE_DIR / f"{name}.env"
    if not path.exists():
        msg = f"test server '{name}' is not running (no {path}); start it with scripts/servers/{name}.sh start"
        if servers_required():
            pytest.fail(msg)
        pytest.skip(msg)
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env
