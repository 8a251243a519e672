"""API, spaces, determinism and option handling of MobileVLA/Nav-v0."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import mobile_vla_sim  # noqa: F401  (registers the env)
from mobile_vla_sim.envs import DIFFICULTIES, difficulty_table_markdown, get_family
from mobile_vla_sim.envs.tasks.detour import DIFFICULTIES as DETOUR_LEVELS, INSTRUCTION_SETS

DETOUR = get_family("detour")
instruction_for = DETOUR.instruction
from mobile_vla_sim.envs.actions import LAYOUT_DIMS, MAX_ANGULAR, MAX_LINEAR, from_action3, to_action3
from mobile_vla_sim.envs.state import STATE_DIM, decode_state

SIZE = 48
INFO_KEYS = {"instruction", "task", "difficulty", "scenario", "success", "collision", "wrong_side", "out_of_bounds",
             "distance_to_goal", "path_length", "shortest_path_length", "robot_pose", "action_nan", "action_clipped"}
# A fixed, scripted action sequence (forward, turn, veer) for trajectory comparisons.
ACTIONS = [np.array(a, np.float32) for a in ([0.5, 0.0], [0.4, 1.0], [0.5, -0.5], [0.3, 0.2], [0.5, 0.0])]


def make(**kw) -> gym.Env:
    kw.setdefault("image_size", SIZE)
    return gym.make("MobileVLA/Nav-v0", **kw)


def rollout_digest(env: gym.Env, seed: int, task: str = "left") -> str:
    """Hash of every image, state and pose of a fixed-action episode: equal digests = bit-identical runs."""
    h = hashlib.sha256()
    obs, info = env.reset(seed=seed, options={"task": task})
    for a in [None, *ACTIONS]:
        if a is not None:
            obs, _, terminated, truncated, info = env.step(a)
        h.update(obs["image"].tobytes())
        h.update(obs["state"].tobytes())
        h.update(np.asarray(info["robot_pose"]).tobytes())
    return h.hexdigest()


def test_make_spaces_and_info():
    env = make(difficulty="medium")
    assert env.action_space.shape == (2,)
    np.testing.assert_allclose(env.action_space.high, [MAX_LINEAR, MAX_ANGULAR])
    assert env.observation_space["image"].shape == (SIZE, SIZE, 3)
    assert env.observation_space["state"].shape == (STATE_DIM,)
    obs, info = env.reset(seed=0)
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (SIZE, SIZE, 3)
    assert obs["image"].std() > 5, "camera image should show a scene, not a blank frame"
    assert INFO_KEYS <= set(info)
    assert info["instruction"] == env.unwrapped.instruction == instruction_for(info["task"])
    assert info["scenario"] == f"1box_hori_{info['task']}"
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert INFO_KEYS <= set(info) and np.isfinite(reward)
    env.close()


def test_gymnasium_and_sb3_check_env():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make(render_mode="rgb_array", difficulty="hard")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the physical-unit action space triggers a "normalise it" advice only
        check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(env.unwrapped, warn=False)
    frame = env.unwrapped.render()
    assert frame.ndim == 3 and frame.dtype == np.uint8 and frame.std() > 5
    env.close()


def test_same_seed_same_pixels_and_trajectory():
    a, b = make(difficulty="hard"), make(difficulty="hard")
    a.reset(seed=99)  # a history must not matter: the episode is a function of its seed only
    assert rollout_digest(a, 7) == rollout_digest(b, 7)
    assert rollout_digest(a, 7) != rollout_digest(a, 8)
    a.close(), b.close()


def test_determinism_across_processes():
    env = make(difficulty="hard", camera_noise=4.0)
    here = rollout_digest(env, 3)
    env.close()
    code = ("import sys; sys.path.insert(0, 'tests'); from test_env import make, rollout_digest; "
            "print(rollout_digest(make(difficulty='hard', camera_noise=4.0), 3))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert out.stdout.strip().splitlines()[-1] == here


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_left_and_right_share_the_scene(difficulty):
    env = make(difficulty=difficulty)
    obs_l, _ = env.reset(seed=11, options={"task": "left"})
    scene_l = env.unwrapped.scenario
    obs_r, _ = env.reset(seed=11, options={"task": "right"})
    assert env.unwrapped.scenario == scene_l
    np.testing.assert_array_equal(obs_l["image"], obs_r["image"])
    np.testing.assert_array_equal(obs_l["state"][:-2], obs_r["state"][:-2])  # only the task one-hot differs
    assert decode_state(obs_l["state"])["task"] == "left" and decode_state(obs_r["state"])["task"] == "right"
    env.reset(seed=12, options={"task": "left"})
    assert env.unwrapped.scenario != scene_l
    env.close()


def test_difficulty_levels_differ_as_documented():
    env = make()
    for name, d in DETOUR_LEVELS.items():
        env.reset(seed=0, options={"difficulty": name})
        s = env.unwrapped.scenario
        assert len(s.boxes) == d.n_boxes and env.unwrapped.max_steps == d.max_steps
        assert d.n_distractors[0] <= len(s.distractors) <= d.n_distractors[1]
        assert s.variant == ("core" if name == "easy" else "variant")
        assert DETOUR.scenario_name(s, "right") == f"{d.n_boxes}box_hori_right"
    env.close()
    table = difficulty_table_markdown(DETOUR_LEVELS)
    assert "actuation_noise" in table and "| easy | medium | hard |" in table
    page = Path(__file__).resolve().parents[1] / "docs" / "environment.md"
    assert table.strip() in page.read_text(), "docs/environment.md's difficulty table is stale: paste " \
        "difficulty_table_markdown(DETOUR_LEVELS)"


def test_nan_and_clipping_flagged():
    env = make()
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([np.nan, 0.0], np.float32))
    assert info["action_nan"] and not info["action_clipped"]
    assert info["path_length"] < 0.01  # NaN became a zero command
    _, _, _, _, info = env.step(np.array([5.0, 0.0], np.float32))
    assert info["action_clipped"] and not info["action_nan"]
    assert 0.15 < info["path_length"] < 0.25  # clipped to 0.5 m/s for 0.4 s
    with pytest.raises(ValueError, match="action has 2 values"):
        env.step(np.zeros(3, np.float32))
    env.close()


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown difficulty"):
        make(difficulty="extreme")
    with pytest.raises(ValueError, match="unknown drive"):
        make(drive="tank")
    with pytest.raises(ValueError, match="unknown control"):
        make(control="teleport")
    env = make()
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(seed=0, options={"speed": 2})
    with pytest.raises(ValueError, match="unknown task"):
        env.reset(seed=0, options={"task": "up"})
    env.close()


def test_omni_drive_strafes_left():
    env = make(drive="omni")
    assert env.action_space.shape == (3,)
    env.reset(seed=0)
    y0 = env.unwrapped._world.pose()[1]
    for _ in range(2):
        _, _, _, _, info = env.step(np.array([0.0, 0.5, 0.0], np.float32))
    assert info["robot_pose"][1] - y0 == pytest.approx(0.4, abs=0.05)  # 2 x 0.4 s x 0.5 m/s, +y is left
    env.close()


def test_pulse_control_stops_before_the_frame():
    cont, pulse = make(), make(control="pulse")
    for env in (cont, pulse):
        env.reset(seed=0)
    v_cont = decode_state(cont.step(np.array([0.5, 0.0], np.float32))[0]["state"])["velocity"][0]
    v_pulse = decode_state(pulse.step(np.array([0.5, 0.0], np.float32))[0]["state"])["velocity"][0]
    assert v_cont == pytest.approx(0.5, abs=0.05) and abs(v_pulse) < 0.02
    cont.close(), pulse.close()


def test_action_latency_scale_and_camera_noise():
    env = make(action_latency=1, action_scale=0.5)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0.5, 0.0], np.float32))
    assert info["path_length"] < 0.01  # the first command is still in the pipe
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert 0.07 < info["path_length"] < 0.13  # now the scaled command (0.25 m/s) ran
    clean = make().reset(seed=0)[0]["image"]
    noisy = make(camera_noise=8.0).reset(seed=0)[0]["image"]
    assert 4 < np.abs(noisy.astype(int) - clean).mean() < 10
    env.close()


def test_truncation_at_max_steps():
    env = make(max_steps=3)
    env.reset(seed=0)
    for k in range(3):
        _, _, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert truncated and not terminated and not info["success"]
    env.close()


def test_action_layouts_and_instructions():
    a3 = to_action3([0.3, -0.7], "diff")
    np.testing.assert_array_equal(a3, np.array([0.3, 0.0, -0.7], np.float32))
    np.testing.assert_array_equal(from_action3(a3, "diff"), np.array([0.3, -0.7], np.float32))
    np.testing.assert_array_equal(from_action3(np.ones((4, 3)), "omni").shape, (4, 3))
    assert LAYOUT_DIMS == {"diff": (0, 2), "omni": (0, 1, 2)}
    with pytest.raises(ValueError, match="2 values"):
        to_action3([1.0, 2.0, 3.0], "diff")
    assert instruction_for("left") == "Navigate around obstacles and reach the front of the beverage bottle on the left"
    assert instruction_for("right", "cup") == "Navigate around the obstacle on the right side and reach the cup"
    assert {"bottle", "cup"} <= set(INSTRUCTION_SETS)
    with pytest.raises(ValueError, match="template"):
        instruction_for("left", "nonsense")


def test_decode_state_recovers_world_geometry():
    env = make(difficulty="hard")
    obs, info = env.reset(seed=4, options={"task": "right"})
    s, scene = decode_state(obs["state"]), env.unwrapped.scenario
    np.testing.assert_allclose([s["x"], s["y"], s["yaw"]], info["robot_pose"], atol=1e-5)
    np.testing.assert_allclose(s["goal"], scene.goal, atol=1e-4)
    np.testing.assert_allclose(s["boxes"], [[b.x, b.y, b.hx, b.hy] for b in scene.boxes], atol=1e-4)
    assert s["task"] == "right"
    with pytest.raises(ValueError, match="state vector"):
        decode_state(np.zeros(5))
    env.close()


def test_egl_renderer_in_a_subprocess():
    """EGL (OpenGL) rendering works and a second live EGL env is refused instead of crashing pybullet."""
    code = """
import gymnasium as gym, numpy as np, mobile_vla_sim
env = gym.make("MobileVLA/Nav-v0", image_size=32, renderer="egl")
obs, _ = env.reset(seed=0)
assert obs["image"].shape == (32, 32, 3) and obs["image"].std() > 5
try:
    gym.make("MobileVLA/Nav-v0", image_size=32, renderer="egl")
except ValueError as err:
    print("REFUSED", err)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REFUSED only one renderer='egl' env" in out.stdout
