"""What the hostile tests share: policies that fail on purpose (loaded as `--policy hostile:FACTORY` plugins; tests/
is on sys.path, subprocesses get it on PYTHONPATH), a fake policy server, a full disk, and the one-line check."""

from __future__ import annotations

import errno
import os
import signal
import threading

import numpy as np
from click.testing import CliRunner

from mobile_vla_sim.cli import main
from mobile_vla_sim.envs.expert import ExpertPolicy
from mobile_vla_sim.io import atomic_write
from mobile_vla_sim.policies.remote.wire import packb, unpackb

#: 1 scene per (easy, left/right), one episode at a time in this process, 16 px: the cheapest eval.
QUICK = ["--difficulty", "easy", "--episodes", "1", "--image-size", "16", "--workers", "1", "--envs-per-worker", "1"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(res, *words: str) -> str:
    """Exit 1 with one error line, the last, that is not the CLI's report of a bug ("unexpected ..."); only progress
    lines of work that ran may come before it. Returns the line."""
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("Error:") and not lines[-1].startswith("Error: unexpected") and \
        "Traceback" not in res.output, res.output
    assert all(" ep in " in line or line.startswith(("epoch ", "reading", "caching")) for line in lines[:-1]), \
        res.output
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    return lines[-1]


def full_disk(after: int = 0):
    """An `atomic_write` that succeeds `after` times, then fails as a full disk does (ENOSPC)."""
    calls = []

    def write(*args, **kwargs):
        calls.append(args)
        if len(calls) > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return atomic_write(*args, **kwargs)
    return write


#: The metadata a policy server sends on connect.
META = {"protocol": "mvla-sim/1", "policy": "fake", "drive": "diff", "image_size": None, "chunk_size": 1}


class FakeServer:
    """A WebSocket server that sends `metadata` on connect and answers every request with `reply(request)` (None:
    no answer): what a broken, stalled or foreign server could send."""

    def __init__(self, metadata, reply):
        from websockets.sync.server import serve

        def handler(ws):
            ws.send(packb(metadata))
            for message in ws:
                answer = reply(unpackb(message))
                if answer is not None:
                    ws.send(answer)
        self.server = serve(handler, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(10)

#: Environment variables naming the fault and the reset at which it strikes: the policy spec (and so the
#: evaluation's identity) stays the same, so the run after the fault resumes the one it hit.
FAULT, AT = "HOSTILE_FAULT", "HOSTILE_AT"


class FaultyExpert(ExpertPolicy):
    """The expert until its `HOSTILE_AT`-th reset (default 3: with one slot, two episodes have finished and been
    handed back), when `HOSTILE_FAULT` strikes: `sigterm` or `sigkill` (the process signals itself, as `kill` and
    `kill -9` would), or `raise` (every later act_batch raises, a plugin whose model fell over)."""

    name = "faulty-expert"

    def __init__(self, drive: str = "diff"):
        super().__init__(drive=drive)
        self.resets, self.broken = 0, False

    def reset(self, instruction: str, slot: int = 0) -> None:
        self.resets += 1
        fault = os.environ.get(FAULT)
        if fault and self.resets == int(os.environ.get(AT, "3")):
            if fault == "raise":
                self.broken = True
            else:
                os.kill(os.getpid(), getattr(signal, fault.upper()))
        super().reset(instruction, slot)

    def act_batch(self, obs, slots):
        if self.broken:
            raise RuntimeError("the model fell over")
        return super().act_batch(obs, slots)


def faulty(drive, device):
    return FaultyExpert(drive=drive)


#: What `garbage` returns instead of actions, for B slots of `dims` values.
OUTPUTS = {
    "wide": lambda b, dims: np.zeros((b, dims + 3), np.float32),
    "rows": lambda b, dims: np.zeros((b + 1, dims), np.float32),
    "strings": lambda b, dims: [["fast"] * dims] * b,
    "none": lambda b, dims: None,
    "dict": lambda b, dims: {"linear_x": 0.1},
    "ragged": lambda b, dims: [[0.1] * dims, [0.2]] * b,
}


class Garbage(ExpertPolicy):
    """The expert until its third reset (two episodes finished, with one slot), then `OUTPUTS[output]` instead of
    actions."""

    name = "garbage"

    def __init__(self, output: str, drive: str = "diff"):
        super().__init__(drive=drive)
        self.output, self.resets = output, 0

    def reset(self, instruction: str, slot: int = 0) -> None:
        self.resets += 1
        super().reset(instruction, slot)

    def act_batch(self, obs, slots):
        if self.resets < 3:
            return super().act_batch(obs, slots)
        return OUTPUTS[self.output](len(slots), 2 if self.drive == "diff" else 3)


def garbage(drive, device, output="wide"):
    return Garbage(output, drive=drive)


def with_secret(drive, device, token=None, api_key=None):
    """The expert, taking secrets as a hosted model's client would: they must never reach results files."""
    return ExpertPolicy(drive=drive)
