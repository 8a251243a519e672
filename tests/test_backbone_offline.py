"""A hub backbone that is not cached fails in seconds without network, with the fix, instead of ~50 s of retries."""

from __future__ import annotations

import socket
import time

import pytest

from mobile_vla_sim.errors import BackboneNotFoundError
from mobile_vla_sim.policies.backbone import HUB_CHECK_TIMEOUT_S, load_backbone

UNCACHED = "mobile-vla-sim-tests/not-cached-kosmos-2"


@pytest.fixture
def silent_hub(monkeypatch):
    """A local 'hub' that accepts connections and never answers: the worst case of a dead network."""
    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    yield
    server.close()


def test_unreachable_hub_fails_fast_with_the_fix(silent_hub):
    start = time.monotonic()
    with pytest.raises(BackboneNotFoundError, match=r"cannot be reached .*local directory.*--backbone tiny") as err:
        load_backbone(UNCACHED)
    assert time.monotonic() - start < 10 and HUB_CHECK_TIMEOUT_S < 10
    assert UNCACHED in str(err.value) and "\n" not in str(err.value)


def test_hf_hub_offline_is_respected(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # never contacted; refused if it were
    start = time.monotonic()
    with pytest.raises(BackboneNotFoundError, match="HF_HUB_OFFLINE is set"):
        load_backbone(UNCACHED)
    assert time.monotonic() - start < 10


def test_incomplete_local_directory(tmp_path):
    (tmp_path / "kosmos").mkdir()
    (tmp_path / "kosmos" / "config.json").write_text("{}")
    with pytest.raises(BackboneNotFoundError, match="is incomplete .*save it again"):
        load_backbone(str(tmp_path / "kosmos"))
