"""The wire format, shared by the server and the client: openpi's msgpack + NumPy messages.

Arrays travel as `{b"__ndarray__": True, b"data": raw bytes, b"dtype": "<f4", b"shape": [...]}` exactly as
openpi-client's `msgpack_numpy` writes them, so its `WebsocketClientPolicy` talks to our server unchanged.
Decoding never unpickles: object and void dtypes are refused.

Session: on connect the server sends `server_metadata`. Each request is a dict with `image` (uint8 H x W x 3),
`prompt`, `episode_id`, `step` (0 starts the episode, resetting its history) and any other observation arrays
(e.g. `state` for privileged baselines); the reply is `{"actions": float32 (K, dims), "episode_id", "step",
"server_timing"}`, or a text frame with a one-line error (openpi's client raises it as a RuntimeError).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from mobile_vla_sim.envs.config import MAX_IMAGE_SIZE
from mobile_vla_sim.errors import ProtocolError
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.version import __version__

PROTOCOL = "mvla-sim/1"
#: Largest message either side accepts (a 1080p RGB frame is 6 MiB).
MAX_MESSAGE_BYTES = 16 * 2**20
#: Longest prompt accepted, in characters: real instructions are under 100, and a policy's tokenizer and attention
#: grow with the prompt (one 20,000-word prompt grew a server to 24 GB).
MAX_PROMPT_CHARS = 1000
#: Image sides accepted when the served policy names no image size (else exactly its size): the env's range (the
#: real camera's 1280 px at most); a (1, 4000, 3) image took 41 s and 5.5 GB in a policy's resize.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 16, MAX_IMAGE_SIZE
#: Array kinds an observation may have: bool, integers, floats (floats must be finite).
_OBS_KINDS = "biuf"
#: Header the token travels in, as openpi-client sends its `api_key`: `Authorization: Api-Key TOKEN`.
AUTH_HEADER, AUTH_SCHEME = "Authorization", "Api-Key"
#: Environment variable holding the token when none is given (server and client): kept out of `ps` listings.
TOKEN_ENV = "MVLA_POLICY_TOKEN"
#: Request keys that are not observation arrays.
CONTROL_KEYS = ("prompt", "episode_id", "step")
ACTION_NAMES = {"diff": ["linear_x", "angular_z"], "omni": ["linear_x", "linear_y", "angular_z"]}
_REFUSED_KINDS = ("V", "O")


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in _REFUSED_KINDS:
            raise TypeError(f"cannot send a {obj.dtype} array")
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__}")


def _decode(obj: dict) -> Any:
    if b"__ndarray__" in obj or b"__npgeneric__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind in _REFUSED_KINDS:
            raise ValueError(f"refused array dtype {dtype}")
        if b"__npgeneric__" in obj:
            return dtype.type(obj[b"data"])
        return np.frombuffer(obj[b"data"], dtype=dtype).reshape(obj[b"shape"])
    return obj


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes) -> Any:
    """Decode one message; anything malformed is a `ProtocolError`."""
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError("expected a binary msgpack frame, got text")
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except Exception as err:  # msgpack raises several kinds on garbage; numpy on bad dtype/shape
        raise ProtocolError(f"not a msgpack-numpy message ({type(err).__name__}: {err})") from None


@dataclass
class Request:
    """One validated inference request."""

    episode_id: str
    step: int
    prompt: str | None
    obs: dict[str, np.ndarray]


def parse_request(msg: Any, image_size: int | None = None, inputs: tuple[str, ...] | None = None) -> Request:
    """Check one decoded request against the protocol and the served policy (its `image_size` and the observation
    `inputs` it reads), so that nothing a policy cannot take reaches it: the message says which field is wrong and
    what it must be. With `inputs`, only those observation arrays are kept."""
    if not isinstance(msg, dict):
        raise ProtocolError(f"a request is a map with image, prompt, episode_id and step, got {type(msg).__name__}")
    image = msg.get("image")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ProtocolError(f"'image' must be a uint8 H x W x 3 RGB array, got {got}")
    if image_size is not None and image.shape[:2] != (image_size, image_size):
        raise ProtocolError(f"'image' is {image.shape[1]}x{image.shape[0]} but the policy expects "
                            f"{image_size}x{image_size}; resize on the client")
    if not all(MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE for side in image.shape[:2]):
        raise ProtocolError(f"'image' is {image.shape[1]}x{image.shape[0]}; each side must be "
                            f"{MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} pixels: resize on the client")
    episode_id, step, prompt = msg.get("episode_id"), msg.get("step"), msg.get("prompt")
    if isinstance(episode_id, int) and not isinstance(episode_id, bool):
        episode_id = str(episode_id)
    if not isinstance(episode_id, str) or not episode_id:
        raise ProtocolError("'episode_id' must be a non-empty string (or int) naming the episode")
    if isinstance(step, np.integer):
        step = int(step)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ProtocolError(f"'step' must be an int >= 0 (0 starts the episode), got {step!r}")
    if prompt is not None and not isinstance(prompt, str):
        raise ProtocolError(f"'prompt' must be a string, got {type(prompt).__name__}")
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise ProtocolError(f"'prompt' has {len(prompt):,} characters, more than the {MAX_PROMPT_CHARS:,} accepted; "
                            "send the instruction sentence only")
    if step == 0 and not prompt:
        raise ProtocolError("step 0 starts an episode and needs its 'prompt' (the instruction)")
    obs = {k: v for k, v in msg.items() if isinstance(v, np.ndarray) and k not in CONTROL_KEYS}
    if inputs is not None:
        missing = [k for k in inputs if k not in obs]
        if missing:
            raise ProtocolError(f"the policy reads {', '.join(map(repr, inputs))} but the request lacks "
                                f"{', '.join(map(repr, missing))}; send every observation array it reads")
        obs = {k: obs[k] for k in inputs}
    for key, value in obs.items():
        if value.dtype.kind not in _OBS_KINDS or value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ProtocolError(f"{key!r} must be an array of finite numbers, got {value.dtype}"
                                f"{' with NaN or inf' if value.dtype.kind == 'f' else ''}")
    return Request(episode_id=episode_id, step=step, prompt=prompt, obs=obs)


def server_metadata(policy: Policy, max_batch: int) -> dict[str, Any]:
    """What a client needs before its first request: the action layout and the expected image."""
    return {"protocol": PROTOCOL, "package": "mobile-vla-sim", "version": __version__, **policy.metadata,
            "action_names": ACTION_NAMES.get(policy.drive, []), "action_dims": len(ACTION_NAMES.get(policy.drive, [])),
            "color_order": "RGB", "max_batch": max_batch}
