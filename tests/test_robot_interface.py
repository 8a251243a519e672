"""The real robot's interface in the sim: direction actions, the keys expert, the camera, colour order, deployment."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from mobile_vla_sim.config import build
from mobile_vla_sim.envs.actions import KEY_VALUE, KEYS, key_action, snap_to_keys
from mobile_vla_sim.envs.config import CAMERAS, EnvConfig, make_env
from mobile_vla_sim.envs.expert import ExpertPolicy, KeysExpert
from mobile_vla_sim.errors import ConfigError, DatasetError, PolicyLoadError
from mobile_vla_sim.eval.run import EvalConfig
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.policies.deploy import (DeployConfig, DeployedPolicy, convert_colors, deploy_policy,
                                            normalize_frames, postprocess, resize_frames)

OMNI_DIRECTION = dict(drive="omni", action_mode="direction")


def _poses(cfg: EnvConfig, actions, seed: int = 3) -> np.ndarray:
    env = make_env(cfg)
    env.reset(seed=seed, options={"task": "left"})
    poses = [env.step(a)[4]["robot_pose"] for a in actions]
    env.close()
    return np.array(poses)


# --- robot and actions ---------------------------------------------------------------------------------------------
def test_direction_mode_ignores_magnitude_and_zero_stops():
    cfg = EnvConfig(image_size=16, **OMNI_DIRECTION)
    big = _poses(cfg, [(1.15, 0.5, 0.0), (0.0, -1.15, 0.0)])
    small = _poses(cfg, [(0.23, 0.1, 0.0), (0.0, -0.01, 0.0)])
    np.testing.assert_allclose(big, small, atol=1e-9)
    step = np.hypot(*(big[0, :2] - _poses(cfg, [(0.0, 0.0, 0.0)])[0, :2]))
    assert step == pytest.approx(cfg.direction_speed * 0.4, rel=0.02)  # one key: a 0.4 s move at the set speed
    still = _poses(cfg, [(0.0, 0.0, 0.0), (0.0, 0.0, 0.0)])
    np.testing.assert_allclose(still[0], still[1], atol=1e-6)
    spun = _poses(cfg, [(0.0, 0.0, 0.05)]), _poses(cfg, [(0.0, 0.0, 1.15)])
    np.testing.assert_allclose(*spun, atol=1e-9)  # a constant turn rate whatever the value


def test_direction_mode_needs_omni_and_velocity_mode_still_scales():
    with pytest.raises(ConfigError, match="--drive omni"):
        EnvConfig(action_mode="direction", drive="diff")
    with pytest.raises(ConfigError, match="--drive omni"):  # unset, the drive resolves to diff
        EnvConfig(action_mode="direction").resolved()
    velocity = EnvConfig(image_size=16, drive="omni")
    fast, slow = _poses(velocity, [(0.4, 0.0, 0.0)]), _poses(velocity, [(0.2, 0.0, 0.0)])
    start = _poses(velocity, [(0.0, 0.0, 0.0)])
    assert fast[0, 0] - start[0, 0] == pytest.approx(2 * (slow[0, 0] - start[0, 0]), rel=0.05)


def test_key_table_and_snapping():
    assert KEYS["q"] == (1.15, 1.15, 0.0) and KEYS["w"] == (1.15, 0.0, 0.0) and KEYS["d"] == (0.0, -1.15, 0.0)
    assert KEYS["e"] == (1.15, -1.15, 0.0) and KEYS["a"] == (0.0, 1.15, 0.0) and KEYS["stop"] == (0.0, 0.0, 0.0)
    snapped = snap_to_keys([[0.9, 0.2, 0.0], [0.5, 0.45, 0.0], [-0.1, -0.9, -0.3], [0.0, 0.0, 0.0]])
    expected = np.array([KEYS["w"], KEYS["q"], (0.0, -KEY_VALUE, -KEY_VALUE), KEYS["stop"]], np.float32)
    np.testing.assert_array_equal(snapped, expected)


# --- keys expert ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_keys_expert_succeeds_with_real_keys_and_real_length(difficulty):
    cfg = EnvConfig(image_size=16, difficulty=difficulty, **OMNI_DIRECTION)
    env, expert = make_env(cfg), KeysExpert.for_env(cfg)
    labels = {tuple(key_action(k)) for k in ("w", "q", "e", "a", "d")}
    for seed in range(3):
        for task in ("left", "right"):
            obs, _ = env.reset(seed=seed, options={"task": task})
            expert.reset()
            done, steps = False, 0
            while not done:
                action = expert.act(obs)
                assert tuple(action) in labels, expert.last_key
                obs, _, terminated, truncated, info = env.step(action)
                done, steps = terminated or truncated, steps + 1
            assert info["success"], (difficulty, seed, task)
            assert steps + 1 >= 18  # episode_start + at least the real 17 keys
    env.close()


def test_keys_expert_needs_the_real_interface():
    with pytest.raises(ValueError, match="omni"):
        KeysExpert.for_env(EnvConfig(drive="omni"))
    from mobile_vla_sim.datasets.generate import GenerateConfig

    with pytest.raises(DatasetError, match="--action-mode direction"):
        build(GenerateConfig, dict(expert_actions="keys", drive="omni"))


# --- camera --------------------------------------------------------------------------------------------------------
def test_camera_resolution_and_real_preset():
    assert EnvConfig(image_size=32).resolution == (32, 32)
    assert EnvConfig(camera="real").resolution == (1280, 720)
    assert EnvConfig(camera="real", image_width=64).resolution == (64, 36)
    assert EnvConfig(image_width=48, image_height=27).resolution == (48, 27)
    assert CAMERAS["real"].vertical_fov == pytest.approx(80.7, abs=0.1)  # 120 deg diagonal at 16:9
    env = make_env(EnvConfig(camera="real", image_width=64))
    obs, _ = env.reset(seed=0)
    assert env.observation_space["image"].shape == obs["image"].shape == (36, 64, 3)
    env.close()
    with pytest.raises(ConfigError, match="--image-width"):
        EnvConfig(image_width=2000)


# --- colour order --------------------------------------------------------------------------------------------------
def _generate(out: Path, **knobs) -> Path:
    from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset

    generate_dataset(build(GenerateConfig, dict(episodes=2, out=out, difficulty="medium", image_size=24, workers=1,
                                                noise_std=0.0, **knobs)), progress=False)
    return out


def test_bgr_dataset_is_the_rgb_one_with_channels_swapped(tmp_path):
    rgb, bgr = _generate(tmp_path / "rgb"), _generate(tmp_path / "bgr", color_order="bgr")
    for a, b in zip(sorted(rgb.glob("*.h5")), sorted(bgr.glob("*.h5"))):
        with h5py.File(a) as fa, h5py.File(b) as fb:
            assert fa.attrs["color_order"] == "RGB" and fb.attrs["color_order"] == "BGR"
            ia, ib = fa["images"][()], fb["images"][()]
            assert not np.array_equal(ia, ib)
            np.testing.assert_array_equal(ia[..., ::-1], ib)


def test_real_robot_dataset_reads_with_a_real_layout_loader(tmp_path):
    out = _generate(tmp_path / "real", drive="omni", action_mode="direction", expert_actions="keys", camera="real",
                    image_width=64, color_order="bgr")
    name_re = re.compile(r"^episode_\d{8}_\d{6}_(\d+box_hori_(left|right))_(core|variant)_(close|medium|far)")
    files = sorted(out.glob("*.h5"))
    assert len(files) == 2
    for path in files:
        assert name_re.match(path.name)
        with h5py.File(path) as f:  # what the real loader reads, nothing of ours
            images, actions = f["images"][()], f["actions"][()]
            assert images.dtype == np.uint8 and images.shape[1:] == (36, 64, 3)
            assert f["images"].compression == "gzip"
            assert actions.dtype == np.float32 and actions.shape == (len(images), 3)
            events = [e.decode() if isinstance(e, bytes) else e for e in f["action_event_types"][()]]
            assert events[0] == "episode_start" and set(events[1:]) == {"start_action"}
            assert f["language_instruction"].dtype == np.dtype("S256") and f["language_instruction"].shape == (1,)
            for attr in ("episode_name", "total_duration", "num_frames", "action_chunk_size", "obstacle_layout_type",
                         "time_period", "collection_datetime"):
                assert attr in f.attrs
            assert f.attrs["num_frames"] == len(images) >= 18 and f.attrs["color_order"] == "BGR"
            assert f.attrs["total_duration"] == pytest.approx(0.55 * (len(images) - 1))
        np.testing.assert_array_equal(actions[0], 0)
        assert set(np.unique(actions[:, 0])) <= {0.0, np.float32(1.15)}
        assert set(np.unique(actions[:, 1])) <= {0.0, np.float32(1.15), np.float32(-1.15)}
        assert not actions[:, 2].any()
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["config"]["expert_actions"] == "keys" and manifest["success_rate"] == 1.0


# --- deployment adapter ----------------------------------------------------------------------------------------------
class _Recorder(Policy):
    """A policy that records what it is handed and returns a known chunk of 3 omni actions per call."""

    name, drive, takes_normalised_pixels = "recorder", "omni", True

    def __init__(self):
        self.images, self.instructions, self.calls = [], [], 0

    def reset(self, instruction, slot=0):
        self.instructions.append(instruction)

    def act_batch(self, obs, slots):
        self.calls += 1
        self.images.append(obs["image"])
        chunk = np.array([[0.1, 0.2, 0.0], [0.2, -0.01, 0.3], [0.3, 0.0, 0.0]], np.float32)
        return np.repeat(chunk[None], len(slots), axis=0)

    def close(self):
        pass


def test_frame_stages_on_known_input():
    frame = np.zeros((1, 4, 8, 3), np.uint8)
    frame[..., 0] = 200  # red
    frame[:, :, :2] = 10  # dark left edge
    assert convert_colors(frame, "rgb", "bgr")[0, 0, 4, 2] == 200
    assert convert_colors(frame, "bgr", "camera") is frame and convert_colors(frame, "bgr", "bgr") is frame
    squash, crop = resize_frames(frame, "squash", 4), resize_frames(frame, "center-crop", 4)
    assert squash.shape == crop.shape == (1, 4, 4, 3) and squash.dtype == np.uint8
    assert squash[0, 0, 0, 0] < 200 and crop[0, 0, 0, 0] == 200  # the squash keeps the dark edge, the crop cuts it
    assert resize_frames(frame, "none", 4) is frame
    assert normalize_frames(frame, "policy") is frame
    np.testing.assert_allclose(normalize_frames(frame, "none")[0, 0, 4], [200, 0, 0])
    np.testing.assert_allclose(normalize_frames(frame, "unit")[0, 0, 4], [200 / 255, 0, 0], rtol=1e-6)
    clip = normalize_frames(frame, "clip")[0, 0, 4]
    np.testing.assert_allclose(clip, [(200 / 255 - 0.48145466) / 0.26862954, -0.4578275 / 0.26130258,
                                      -0.40821073 / 0.27577711], rtol=1e-5)


def test_action_stages_in_order():
    cfg = DeployConfig(scale=0.5, gain=4.0, clamp=1.5, deadzone=0.15, flip_sign=("linear_x",))
    # x: 0.5*4=2 -> clamp 1.5 -> flip -1.5; y: 0.05*2=0.1 -> deadzone 0; z: -0.3*2=-0.6 stays
    np.testing.assert_allclose(postprocess(np.array([[1.0, 0.05, -0.3]]), cfg, "omni"), [[-1.5, 0.0, -0.6]])
    snapped = postprocess(np.array([[0.3, 0.25, 0.0]]), DeployConfig(snap_keys=True), "omni")
    np.testing.assert_array_equal(snapped, [key_action("q")])
    np.testing.assert_allclose(postprocess(np.array([[0.2, -0.7]]), DeployConfig(flip_sign=("angular_z",)), "diff"),
                               [[0.2, 0.7]])  # diff layout: (linear_x, angular_z)


def test_adapter_chunks_instruction_and_defaults():
    inner = _Recorder()
    assert deploy_policy(inner, DeployConfig()) is inner  # the default changes nothing, not even the object
    policy = DeployedPolicy(inner, DeployConfig(execute_chunk=2, instruction="go", color_order="bgr"), "rgb")
    policy.reset("Navigate around obstacles ... on the left", slot=0)
    assert inner.instructions == ["go"]
    obs = {"image": np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)}
    got = [policy.act_batch(obs, [0]) for _ in range(4)]
    assert inner.calls == 2  # two actions of each chunk run before the next inference
    np.testing.assert_allclose(np.concatenate(got), [[0.1, 0.2, 0.0], [0.2, -0.01, 0.3]] * 2)
    np.testing.assert_array_equal(inner.images[0], obs["image"][..., ::-1])
    with pytest.raises(PolicyLoadError, match="window"):
        DeployedPolicy(inner, DeployConfig(window=2))
    with pytest.raises(PolicyLoadError, match="uint8"):
        DeployedPolicy(type("P", (Policy,), {"name": "p", "drive": "omni", "inputs": ("image",),
                                             "act_batch": lambda self, obs, slots: None})(),
                       DeployConfig(normalize="clip"))
    expert = DeployedPolicy(ExpertPolicy("omni"), DeployConfig(normalize="clip"))  # reads no image: nothing to do
    assert expert.inputs == ("state",)


@pytest.mark.slow  # slow on 2 cores; CI runs it (.ci/run runs the slow tests)
def test_deploy_file_loads_and_is_recorded(tmp_path):
    from mobile_vla_sim.eval.run import evaluate

    example = build(EvalConfig, {"policy": "expert",
                                 "deploy": Path(__file__).parent.parent / "examples" / "deploy_jan2026.yaml"}).deploy
    assert (example.window, example.execute_chunk, example.flip_sign) == (2, 10, ("linear_x",))
    assert (example.resize, example.normalize, example.color_order, example.scale * example.gain) == \
        ("squash", "none", "bgr", 30.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("flip_sign: [forward]\n")
    with pytest.raises(ConfigError, match="--deploy .*forward"):
        build(EvalConfig, {"policy": "expert", "deploy": bad})
    flip = tmp_path / "flip.yaml"
    flip.write_text("flip_sign: [linear_x]\n")
    common = dict(policy="expert", difficulty="easy", task="left", episodes=2, env=EnvConfig(image_size=16,
                                                                                                 drive="omni"))
    plain = evaluate(EvalConfig(out=tmp_path / "plain", **common), progress=False)
    flipped = evaluate(EvalConfig(out=tmp_path / "flip", deploy=DeployConfig.from_yaml(flip), **common),
                       progress=False)
    with pytest.raises(ConfigError, match="DeployConfig.from_yaml"):
        EvalConfig(policy="expert", deploy=flip)
    assert all(r.success for r in plain.records) and not any(r.success for r in flipped.records)
    recorded = json.loads((tmp_path / "flip" / "results.json").read_text())["config"]
    assert recorded["deploy"]["flip_sign"] == ["linear_x"]


def test_deploy_mismatch_changes_a_trained_policy(tiny_checkpoints, tiny_dataset):
    """A window or colour-order mismatch in the deployment changes what a trained tiny VLA policy does."""
    from mobile_vla_sim.datasets.reader import EpisodeDataset
    from mobile_vla_sim.policies.registry import load_policy

    episode = EpisodeDataset(tiny_dataset, split="all")[0]
    frames = episode.images[:6]

    def actions(cfg: DeployConfig) -> np.ndarray:
        policy = deploy_policy(load_policy(str(tiny_checkpoints["frozen"])), cfg)
        policy.reset(episode.instruction, slot=0)
        out = [policy.act_batch({"image": f[None]}, [0])[0] for f in frames]
        policy.close()
        return np.array(out)

    base = actions(DeployConfig())
    # CLIP normalisation done by the adapter is the policy's own step (up to float rounding and resize order)
    rounding = np.abs(actions(DeployConfig(normalize="clip")) - base).max()
    assert rounding < 1e-3
    for mismatch in (DeployConfig(window=2), DeployConfig(color_order="bgr"), DeployConfig(normalize="none")):
        assert np.abs(actions(mismatch) - base).max() > max(10 * rounding, 1e-3), mismatch
