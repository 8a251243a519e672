"""The sim scene of a real start view, and its render in any candidate look.

A file the sim wrote names its scene exactly (its `seed` and `difficulty` attributes: the env's own reset gives it
back). A real file names only the number of boxes, the side and the distance class, so its scene is a canonical one:
the layout of the first difficulty with that many boxes, drawn from a seed hashed from the file name, with the look of
a jitter-free (easy) scene, no clutter, the robot at the nominal start, and the first box at the named distance. The
scenes are sampled in the plain look; each candidate look is then applied exactly as the env applies it
(`LookConfig.apply` and `EnvConfig.camera_spec`), so a fitted look renders in `eval` as it did here.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np

from mobile_vla_sim.calibrate.colours import SURFACES, Split
from mobile_vla_sim.calibrate.real import RealStart, resize, resize_float
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.look import LookConfig, jitter
from mobile_vla_sim.envs.scenario import Scenario
from mobile_vla_sim.envs.tasks.detour import DIFFICULTIES, DISTANCE_M
from mobile_vla_sim.errors import ConfigError, DatasetError

#: Env knobs that shift or perturb the scene after the look (robustness probes): a calibration fits the look alone.
PROBE_KNOBS = {"light_scale": 1.0, "camera_height_shift": 0.0, "camera_pitch_shift": 0.0, "extra_distractors": 0}


def check_env(env: EnvConfig) -> None:
    """Refuse robustness-probe shifts in the env a look is fitted for (they would be fitted into the look)."""
    set_probes = [k for k, default in PROBE_KNOBS.items() if getattr(env, k) != default]
    if set_probes:
        raise ConfigError(f"calibrate fits the look of the clean env; leave the robustness probes "
                          f"{', '.join('--' + k.replace('_', '-') for k in set_probes)} at their defaults")


def start_scenes(starts: list[RealStart], env: EnvConfig) -> list[Scenario]:
    """The plain-look sim scene of each real start (see the module docstring)."""
    from mobile_vla_sim.envs.nav_env import NavEnv

    sampler = NavEnv(replace(env, look=LookConfig(), image_width=16, image_height=16))
    try:
        return [_scene(start, sampler) for start in starts]
    finally:
        sampler.close()


def _sampled(sampler, seed: int, difficulty: str, side: str) -> Scenario:
    sampler.reset(seed=seed, options={"difficulty": difficulty, "task": side})
    return sampler.scenario


def _scene(start: RealStart, sampler) -> Scenario:
    if start.seed is not None and start.difficulty is not None:
        return _sampled(sampler, start.seed, start.difficulty, start.side)
    layouts = [d.name for d in DIFFICULTIES.values() if d.n_boxes == start.n_boxes]
    if not layouts:
        counts = sorted({d.n_boxes for d in DIFFICULTIES.values()})
        raise DatasetError(f"{start.name}: the sim builds scenes of {' or '.join(map(str, counts))} boxes, not "
                           f"{start.n_boxes}; leave such episodes out of --real")
    seed = zlib.crc32(start.name.encode())
    scene = _sampled(sampler, seed, layouts[0], start.side)
    plain = _sampled(sampler, seed, min(DIFFICULTIES.values(), key=_jitter).name, start.side)
    scene = replace(scene, floor_texture=plain.floor_texture, wall_texture=plain.wall_texture,
                    floor_rgb=plain.floor_rgb, wall_rgb=plain.wall_rgb, light_direction=plain.light_direction,
                    light_ambient=plain.light_ambient, light_diffuse=plain.light_diffuse,
                    camera_height=0.0, camera_pitch=0.0, camera_yaw=0.0, distractors=(), start=(0.0, 0.0, 0.0),
                    boxes=tuple(replace(b, rgb=plain.boxes[0].rgb) for b in scene.boxes))
    if start.distance is None:
        return scene
    dx = DISTANCE_M[start.distance] - DISTANCE_M[scene.distance]
    return replace(scene, distance=start.distance, boxes=tuple(replace(b, x=b.x + dx) for b in scene.boxes),
                   target=replace(scene.target, x=scene.target.x + dx))


def _jitter(d) -> float:
    return d.color_jitter + d.light_jitter + d.camera_height_noise + d.camera_angle_noise + d.random_textures


#: Renders are made this many times larger and resized down as the real frames are: TinyRenderer does not
#: antialias, so a render at the compared size has jagged edges and shimmering textures that a resized camera frame
#: has not, a difference no knob could remove.
SUPERSAMPLE = 2


class StartRenderer:
    """Renders the start view of `scenes` in any look of `env`, resized to `size` (width, height).

    One PyBullet world per scene (one in all with the EGL renderer, which allows one per process), so a look that
    changes only the camera or the light re-renders without rebuilding (`BulletWorld.restyle`).
    """

    def __init__(self, scenes: list[Scenario], size: tuple[int, int], env: EnvConfig):
        from mobile_vla_sim.envs.sim import BulletWorld

        self.scenes, self.env, self.size = scenes, env, size
        render_size = (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE)
        count = 1 if env.renderer == "egl" else len(scenes)
        self.worlds = [BulletWorld(render_size, env.renderer, env.drive, env.camera_spec) for _ in range(count)]

    def _staged(self, look: LookConfig, white: tuple[str, ...] = ()):
        """Each scene's world with the scene in `look` (the surfaces of colour knobs `white` white), camera set."""
        camera = replace(self.env, look=look).camera_spec
        for i, scene in enumerate(self.scenes):
            world = self.worlds[i % len(self.worlds)]
            scene = look.apply(scene)
            if white:
                scene = _whitened(scene, white)
            if not world.restyle(scene):
                world.build(scene)
            world.set_camera(camera)
            yield world

    def render(self, look: LookConfig) -> list[np.ndarray]:
        """RGB uint8 start frames of every scene in `look` (the env's path: `EnvConfig.camera_spec`, `apply`)."""
        return [resize(world.camera_image(), self.size) for world in self._staged(look)]

    def render_split(self, look: LookConfig, colour_knobs: tuple[str, ...]) -> list[Split]:
        """Each scene in `look` with the surfaces of `colour_knobs` (e.g. `floor_rgb`) white, split into one layer
        per body of those surfaces and one for the rest, with each body's colour jitter (`calibrate.colours`)."""
        splits = []
        for scene, world in zip(self.scenes, self._staged(look, colour_knobs)):
            image, labels = world.camera_image_labelled()
            offsets = jitter(scene)
            masks, surface, body_offsets = [], [], []
            for k, knob in enumerate(colour_knobs):
                bodies = world.parts[SURFACES[knob]]
                shared = len(offsets[knob]) == 1  # the walls' three bodies share one colour
                for body, offset in zip(bodies, offsets[knob] * len(bodies) if shared else offsets[knob]):
                    masks.append(labels == body)
                    surface.append(k)
                    body_offsets.append(offset)
            masks.append(~np.any(masks, axis=0) if masks else np.ones(labels.shape, bool))
            layers = np.stack([image * m[..., None] for m in masks]).astype(np.float32)
            splits.append(Split(resize_float(layers, self.size), np.array(surface, int),
                                np.array(body_offsets, float).reshape(-1, 3)))
        return splits

    def close(self) -> None:
        for world in self.worlds:
            world.close()


def _whitened(scene: Scenario, colour_knobs: tuple[str, ...]) -> Scenario:
    white = (1.0, 1.0, 1.0)
    changes: dict = {k: white for k in colour_knobs if k != "box_rgb"}
    if "box_rgb" in colour_knobs:
        changes["boxes"] = tuple(replace(b, rgb=white) for b in scene.boxes)
    return replace(scene, **changes)
