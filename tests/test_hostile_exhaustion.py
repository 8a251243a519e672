"""Nothing exhausted: the policy server bounds prompts and images and isolates one client's bad request from the
others of its batch; YAML alias bombs, huge windows and resize sizes, and an sb3 zip bomb are refused in bounded
time and memory, with one line."""

from __future__ import annotations

import struct
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from websockets.sync.client import connect

from hostile import one_line_error, run
from mobile_vla_sim.config import MAX_YAML_NODES, read_yaml
from mobile_vla_sim.errors import ConfigError, PolicyLoadError
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.policies.remote.wire import MAX_PROMPT_CHARS, TOKEN_ENV, packb, unpackb
from mobile_vla_sim.serving.server import ServeConfig, ServerThread

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
PROMPT = "Navigate around obstacles and reach the front of the beverage bottle on the left"


class Picky(Policy):
    """A served policy that fails on some inputs: a reset with "poison" in the prompt, act_batch on 32-pixel-wide
    images. It names no image size, so the server accepts any size within its bounds. Records what reached it."""

    name = "picky"

    def __init__(self):
        self.prompts: list[str] = []
        self.shapes: list[tuple] = []

    def reset(self, instruction, slot=0):
        self.prompts.append(instruction)
        if "poison" in instruction:
            raise ValueError("cannot parse this instruction")

    def act_batch(self, obs, slots):
        self.shapes.append(obs["image"].shape)
        if obs["image"].shape[2] == 32:
            raise RuntimeError("this model breaks on 32-pixel-wide images")
        return np.full((len(slots), 2), 0.25, np.float32)


def request(step, episode="e", width=48, height=48, prompt=PROMPT):
    return packb({"image": np.zeros((height, width, 3), np.uint8), "prompt": prompt, "episode_id": episode,
                  "step": step})


@pytest.fixture
def picky_server(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    policy = Picky()
    with ServerThread(ServeConfig(policy="picky", port=0, max_wait_ms=300.0), policy=policy) as srv:
        yield srv, policy


def test_server_bounds_prompt_and_image_before_the_policy_runs(picky_server):
    srv, policy = picky_server
    huge_prompt = " ".join(["left"] * 20_000)  # ~100 KB, under the message limit: the prompt limit refuses it
    with connect(srv.url, proxy=None) as ws:
        unpackb(ws.recv())
        for message, words in ((request(0, prompt=huge_prompt), ["'prompt' has 99,999 characters",
                                                                  f"{MAX_PROMPT_CHARS:,}"]),
                               (request(0, width=4000, height=1), ["'image' is 4000x1", "16..1280"])):
            start = time.perf_counter()
            ws.send(message)
            reply = ws.recv(timeout=10)
            assert isinstance(reply, str) and "\n" not in reply and time.perf_counter() - start < 5, reply
            for word in words:
                assert word in reply, (word, reply)
        ws.send(request(0))
        assert unpackb(ws.recv(timeout=10))["actions"].shape == (1, 2)  # still serving
    assert policy.prompts == [PROMPT] and policy.shapes == [(1, 48, 48, 3)]  # nothing oversized reached the policy


def test_one_clients_bad_request_never_fails_anothers_in_the_same_batch(picky_server):
    srv, policy = picky_server
    with connect(srv.url, proxy=None) as bad, connect(srv.url, proxy=None) as good:
        unpackb(bad.recv()), unpackb(good.recv())
        bad.send(request(0, "b", prompt=f"{PROMPT} poison"))  # its reset fails
        good.send(request(0, "g"))
        assert "could not start episode 'b'" in bad.recv(timeout=10)
        reply = unpackb(good.recv(timeout=10))
        assert reply["server_timing"]["batch_size"] == 2 and reply["actions"].tolist() == [[0.25, 0.25]]
        bad.send(request(1, "b"))  # its episode was dropped: it must start again
        assert "was not started" in bad.recv(timeout=10)
        bad.send(request(0, "b2", width=32))  # well-formed, but the policy fails on it
        good.send(request(1, "g"))
        assert "the policy failed on this request (RuntimeError: this model breaks" in bad.recv(timeout=10)
        reply = unpackb(good.recv(timeout=10))
        assert reply["server_timing"]["batch_size"] == 2 and reply["actions"].tolist() == [[0.25, 0.25]]


def _bomb(levels: int = 9) -> str:
    """A YAML "billion laughs": 9 levels of 9 aliases each expand to 9^9 (387 million) strings."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_yaml_alias_bombs_are_refused_fast_with_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb())
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"expands to more than {MAX_YAML_NODES:,} values"):
        read_yaml(bomb, "config file", "")
    seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 2 and peak < 20 * 2**20, (seconds, peak)
    selfref = tmp_path / "selfref.yaml"
    selfref.write_text("lora_targets: &t [q_proj, *t]\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("episodes: " + "[" * 20_000 + "]" * 20_000 + "\n")
    one_line_error(run("generate", "--config", bomb, "--print-config"), "config file", "aliases")
    one_line_error(run("train", "--config", selfref, "--data", tmp_path, "--out", tmp_path / "x.ckpt"), "aliases")
    one_line_error(run("generate", "--config", deep, "--print-config"), "nested too deeply")
    one_line_error(run("eval", "--policy", "expert", "--deploy", bomb, "--out", tmp_path / "o"), "--deploy", "aliases")
    one_line_error(run("probe", "--policy", "expert", "--suite", bomb, "--out", tmp_path / "p"), "--suite", "aliases")
    one_line_error(run("study", bomb), "study spec", "aliases")
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    one_line_error(run("generate", "--config", big, "--print-config"), "more than a config file's")
    ok = tmp_path / "anchors.yaml"  # anchors and merge keys a person writes are fine
    ok.write_text("base: &b {episodes: 3}\n<<: *b\nseed: 2\n")
    assert read_yaml(ok, "config file", "")["episodes"] == 3


@pytest.mark.parametrize("where, text, words", [
    ("deploy", "window: 100000\n", ["--window must be in 1..256, got 100000"]),
    ("deploy", "resize: squash\nresize_to: 100000\n", ["--resize-to must be in 8..1280, got 100000"]),
    ("deploy", "execute_chunk: 100000\n", ["--execute-chunk must be in 1..256"]),
    ("train", "window: 100000\n", ["--window must be in 1..256"]),
    ("train", "chunk: 100000\n", ["--chunk must be in 1..256"]),
])
def test_windows_and_sizes_are_bounded(tmp_path, where, text, words):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    if where == "deploy":
        res = run("eval", "--policy", "expert", "--deploy", path, "--out", tmp_path / "o")
    else:
        res = run("train", "--config", path, "--data", tmp_path, "--backbone", "tiny", "--out", tmp_path / "x.ckpt")
    one_line_error(res, *words)


def _zip_with_declared_size(path, name: str, declared: int) -> None:
    """A small sb3-like zip whose `name` entry declares `declared` uncompressed bytes, as a bomb's header does."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("policy.pth", b"\0" * 64)
        z.writestr("data", b"{}")
    raw = bytearray(path.read_bytes())
    offset = raw.find(b"PK\x01\x02")  # central directory entries: the sizes zipfile reports
    while offset != -1:
        name_len = struct.unpack_from("<H", raw, offset + 28)[0]
        if raw[offset + 46:offset + 46 + name_len] == name.encode():
            struct.pack_into("<I", raw, offset + 24, declared)
        offset = raw.find(b"PK\x01\x02", offset + 4)
    path.write_bytes(bytes(raw))


def test_sb3_zip_bomb_is_refused_before_inflating(tmp_path):
    import torch  # noqa: F401  (imported before measuring: the loader's own imports are not the bomb)

    from mobile_vla_sim.policies.baselines import SB3Policy

    declared = tmp_path / "declared.zip"
    _zip_with_declared_size(declared, "policy.pth", 2_400_000_000)
    ratio = tmp_path / "ratio.zip"
    with zipfile.ZipFile(ratio, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("policy.pth", b"\0" * (8 * 2**20))  # 8 MiB of zeros: ~1000x compression
        z.writestr("data", b"{}")
    for path, words in ((declared, "inflates to 2,400,000,000 bytes"), (ratio, "inflates to 8,388,608 bytes")):
        tracemalloc.start()
        with pytest.raises(PolicyLoadError, match="refused unread") as err:
            SB3Policy(path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert words in str(err.value) and "\n" not in str(err.value) and peak < 4 * 2**20, peak
