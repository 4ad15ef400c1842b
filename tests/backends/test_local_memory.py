import pytest

from tuckbox.backends.local import LocalBackend
from tuckbox.backends.memory import MemoryBackend
from tuckbox.testing.conformance import CONFORMANCE_CHECKS


@pytest.fixture(params=["local", "memory"])
def fresh_backend(request, tmp_path):
    b = LocalBackend(str(tmp_path / "repo")) if request.param == "local" else MemoryBackend()
    b.create()
    yield b
    b.close()


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, fresh_backend):
    check(fresh_backend)
