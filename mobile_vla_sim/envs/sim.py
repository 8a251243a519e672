"""The PyBullet world of one env: corridor, boxes, bottle, clutter and a differential-drive robot.

Each `BulletWorld` owns its own DIRECT client (never the module-global one), so several envs can live in
one process. The world is rebuilt with `resetSimulation` on every reset: that costs a few ms and makes an
episode depend on its scenario only (no contact caches or ids carried over), which gives bit-identical
replays across processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import math
import os
import sys
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import numpy as np


def _libc_fflush() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library handle (e.g. Windows): the chatter just stays visible
        pass


@contextlib.contextmanager
def _quiet_c_output():
    """Silence file descriptors 1 and 2 while pybullet's C code prints its chatter ("pybullet build time",
    "argv[0]=") on import and connect, which would otherwise break into progress bars and CLI output."""
    try:
        saved = [os.dup(fd) for fd in (1, 2)]
    except OSError:  # no such descriptors (some embedded interpreters): nothing to silence
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(devnull, fd)
        yield
    finally:
        _libc_fflush()  # C stdio may buffer the chatter: flush it into /dev/null before the descriptors come back
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


with _quiet_c_output():
    import pybullet as p
import pybullet_data
from pybullet_utils import bullet_client

from mobile_vla_sim.envs.config import CAMERAS, RENDERERS, CameraSpec
from mobile_vla_sim.envs.scenario import TARGET_RADIUS, Scenario, Target

ASSETS = files("mobile_vla_sim.assets")
PHYSICS_HZ = 120
#: Seconds one env step drives the robot (the real robot's key pulse).
CONTROL_PERIOD = 0.4
#: In pulse mode: seconds of braking after each pulse before the image is taken.
BRAKE_TIME = 0.15
#: Contacts are polled every this many substeps (30 Hz): cheap, and a robot cannot tunnel through a box at 0.5 m/s.
CONTACT_EVERY = 4

WHEEL_RADIUS = 0.05
WHEEL_BASE = 0.29          # distance between the wheel centres (m)
WHEEL_FORCE = 3.0          # motor torque limit per wheel (N m)
#: Half width of the robot footprint (wheels included) and the radius of the circle enclosing it (m).
ROBOT_HALF_WIDTH = 0.16
ROBOT_RADIUS = math.hypot(0.15, ROBOT_HALF_WIDTH)

CAMERA_FORWARD = 0.12      # m ahead of the wheel axle (on the mast); height, pitch and FOV: `EnvConfig.camera`

BOTTLE_RADIUS, BOTTLE_HEIGHT = TARGET_RADIUS["bottle"], 0.22
#: The other target kinds: height (m), body colour, rim colour (or None): a laundry basket (the real project's "gray
#: basket"), a cooking pot ("brown pot"), a mug; sizes assumed (`scenario.TARGET_RADIUS`).
TARGET_SHAPES = {"basket": (0.3, (0.55, 0.55, 0.56), (0.38, 0.38, 0.4)),
                 "pot": (0.16, (0.42, 0.26, 0.14), (0.3, 0.18, 0.1)),
                 "cup": (0.1, (0.92, 0.92, 0.9), None)}
#: Scenario fields that only change how the built world is rendered (`BulletWorld.restyle`).
VIEW_FIELDS = ("light_direction", "light_ambient", "light_diffuse", "camera_height", "camera_pitch", "camera_yaw")
_WALL_HALF_HEIGHT = 0.5


class BulletWorld:
    """Builds a scenario, drives the robot for one control period, and renders camera/top-down images.

    `renderer="egl"` renders with OpenGL through pybullet's EGL plugin: fast on a GPU, but its shading and
    textures differ from TinyRenderer (compare policies on one renderer), and pybullet crashes with two live
    EGL clients in one process, so at most one EGL world may exist per process (one per vector-env worker).
    """

    _live_egl = 0

    def __init__(self, resolution: tuple[int, int] = (224, 224), renderer: str = "tiny", drive: str = "diff",
                 camera: CameraSpec = CAMERAS["default"]):
        if renderer not in RENDERERS:
            raise ValueError(f"unknown renderer {renderer!r}: use 'tiny' (CPU) or 'egl' (OpenGL, fast on a GPU)")
        if renderer == "egl" and BulletWorld._live_egl:
            raise ValueError("only one renderer='egl' env can be open per process: close it first, "
                             "or run one env per worker process (AsyncVectorEnv)")
        self.width, self.height = (int(v) for v in resolution)
        self.drive = drive
        with _quiet_c_output():
            self.client = bullet_client.BulletClient(connection_mode=p.DIRECT)
        self._renderer, self._egl = p.ER_TINY_RENDERER, False
        if renderer == "egl":
            spec = importlib.util.find_spec("eglRenderer")
            if spec is None or spec.origin is None:
                self.close()
                raise ValueError("renderer='egl' needs pybullet's eglRenderer plugin; use renderer='tiny'")
            with _quiet_c_output():  # the plugin prints its OpenGL vendor/version lines
                self.client.loadPlugin(spec.origin, "_eglRendererPlugin")
            self._renderer = p.ER_BULLET_HARDWARE_OPENGL
            self._egl = True
            BulletWorld._live_egl += 1
        self.set_camera(camera)
        self.scenario: Scenario | None = None
        #: Body ids of the scene's surfaces a look colours (floor, wall, box, bottle), set by `build`.
        self.parts: dict[str, list[int]] = {}
        self.robot = -1
        self.wheels: list[int] = []
        self._obstacles: frozenset[int] = frozenset()

    def set_camera(self, camera: CameraSpec) -> None:
        """Use camera model `camera` (mount, pitch, field of view) from the next frame on."""
        self.camera = camera
        self.camera_projection = self.client.computeProjectionMatrixFOV(camera.vertical_fov, self.width / self.height,
                                                                        0.03, 12.0)

    # ---- scene -------------------------------------------------------------------------------
    def build(self, scenario: Scenario) -> None:
        """Replace the whole world with `scenario` and put the robot at its start pose, at rest."""
        c = self.client
        c.resetSimulation()
        c.setPhysicsEngineParameter(fixedTimeStep=1.0 / PHYSICS_HZ, deterministicOverlappingPairs=1)
        c.setGravity(0, 0, -9.81)
        self.scenario = scenario
        floor = self._floor(scenario)
        x0, x1 = scenario.x_bounds
        wall_tex = self._texture(scenario.wall_texture)
        walls = []
        length = (x1 - x0) / 2 + 0.6
        for side in (-1.0, 1.0):
            walls.append(self._box((x0 + x1) / 2, side * (scenario.half_width + 0.025), _WALL_HALF_HEIGHT,
                                   (length, 0.025, _WALL_HALF_HEIGHT), scenario.wall_rgb, wall_tex))
        # The corridor's far end, just past the arena bound, so the camera never looks into the void.
        walls.append(self._box(x1 + 0.3, 0.0, _WALL_HALF_HEIGHT, (0.025, scenario.half_width, _WALL_HALF_HEIGHT),
                               scenario.wall_rgb, wall_tex))
        box_tex = self._texture(scenario.box_texture)
        boxes = [self._box(b.x, b.y, b.hz, (b.hx, b.hy, b.hz), b.rgb, box_tex) for b in scenario.boxes]
        targets = [self._target(t, scenario) for t in (scenario.target, *scenario.decoys)]
        self.parts = {"floor": [floor], "wall": walls, "box": boxes, "target": targets}
        obstacles = [*walls, *boxes, *targets]
        for d in scenario.distractors:
            if d.shape == "cube":
                obstacles.append(self._box(d.x, d.y, d.height / 2, (d.radius, d.radius, d.height / 2), d.rgb))
            else:
                obstacles.append(self._cylinder(d.x, d.y, d.radius, d.height, d.rgb, collide=True))
        self._obstacles = frozenset(obstacles)
        self._spawn_robot(scenario.start)

    def _floor(self, s: Scenario) -> int:
        c = self.client
        # pybullet_data's 30 m quad repeats its texture every 2 m; an in-memory mesh would crash the EGL plugin.
        vis = c.createVisualShape(p.GEOM_MESH, fileName=str(Path(pybullet_data.getDataPath()) / "plane.obj"),
                                  rgbaColor=[*s.floor_rgb, 1])
        floor = c.createMultiBody(0, c.createCollisionShape(p.GEOM_PLANE), vis)
        c.changeVisualShape(floor, -1, textureUniqueId=self._texture(s.floor_texture))
        c.changeDynamics(floor, -1, lateralFriction=1.0)
        return floor

    def _texture(self, name: str | None) -> int:
        return -1 if name is None else self.client.loadTexture(str(ASSETS / "textures" / name))

    def _box(self, x, y, z, half, rgb, texture: int = -1) -> int:
        c = self.client
        body = c.createMultiBody(0, c.createCollisionShape(p.GEOM_BOX, halfExtents=half),
                                 c.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=[*rgb, 1]),
                                 basePosition=[x, y, z])
        if texture >= 0:
            c.changeVisualShape(body, -1, textureUniqueId=texture)
        return body

    def _cylinder(self, x, y, radius, height, rgb, collide: bool, z0: float = 0.0, texture: int = -1) -> int:
        c = self.client
        col = c.createCollisionShape(p.GEOM_CYLINDER, radius=radius, height=height) if collide else -1
        vis = c.createVisualShape(p.GEOM_CYLINDER, radius=radius, length=height, rgbaColor=[*rgb, 1])
        body = c.createMultiBody(0, col, vis, basePosition=[x, y, z0 + height / 2])
        if texture >= 0:
            c.changeVisualShape(body, -1, textureUniqueId=texture)
        return body

    def _target(self, target: Target, s: Scenario) -> int:
        """The target object of its kind (`scenario.TARGET_KINDS`); returns the body that collides. A bottle takes
        the scene's bottle colour and texture (a look may give it a label)."""
        x, y = target.x, target.y
        if target.kind == "bottle":  # a dark PET bottle with a green cap (the cap is visual only)
            self._cylinder(x, y, 0.014, 0.025, (0.1, 0.6, 0.15), collide=False, z0=BOTTLE_HEIGHT)
            return self._cylinder(x, y, BOTTLE_RADIUS, BOTTLE_HEIGHT, s.bottle_rgb, collide=True,
                                  texture=self._texture(s.bottle_texture))
        radius, (height, rgb, rim) = TARGET_RADIUS[target.kind], TARGET_SHAPES[target.kind]
        if rim is not None:  # a darker rim ring on top (visual only), so the object reads as a container
            self._cylinder(x, y, radius * 1.04, 0.02, rim, collide=False, z0=height)
        return self._cylinder(x, y, radius, height, rgb, collide=True)

    def _spawn_robot(self, start: tuple[float, float, float]) -> None:
        c = self.client
        x, y, yaw = start
        self.robot = c.loadURDF(str(ASSETS / "robot.urdf"), [x, y, WHEEL_RADIUS + 1e-3],
                                c.getQuaternionFromEuler([0, 0, yaw]))
        names = {c.getJointInfo(self.robot, j)[1].decode(): j for j in range(c.getNumJoints(self.robot))}
        self.wheels = [names["left_wheel_joint"], names["right_wheel_joint"]]
        for caster in ("front_caster_joint", "rear_caster_joint"):
            c.changeDynamics(self.robot, names[caster], lateralFriction=0.0, rollingFriction=0.0, spinningFriction=0.0)
        # Omni mode moves the base directly, so there the wheels neither grip nor drive instead of fighting it.
        omni = self.drive == "omni"
        for w in self.wheels:
            c.changeDynamics(self.robot, w, lateralFriction=0.0 if omni else 1.0)
        force = 0.0 if omni else WHEEL_FORCE
        c.setJointMotorControlArray(self.robot, self.wheels, p.VELOCITY_CONTROL, targetVelocities=[0, 0],
                                    forces=[force, force])
        for _ in range(PHYSICS_HZ // 10):  # settle on the casters
            c.stepSimulation()

    def restyle(self, scenario: Scenario) -> bool:
        """Take `scenario`'s light and camera offsets without a rebuild if it equals the built scene in everything
        else (they only change how frames are rendered); return whether it did (if not, `build` it)."""
        if self.scenario is None:
            return False
        if replace(scenario, **{f: getattr(self.scenario, f) for f in VIEW_FIELDS}) != self.scenario:
            return False
        self.scenario = scenario
        return True

    # ---- motion ------------------------------------------------------------------------------
    def drive_for(self, command: np.ndarray, duration: float, brake_time: float = 0.0) -> bool:
        """Apply `[linear_x, linear_y, angular_z]` for `duration` s, then brake for `brake_time` s.

        diff: wheel velocity targets from the unicycle model (linear_y is ignored), motors do the rest.
        omni: the base velocity is set every substep (a holonomic base has no simpler physical model here),
        so contacts still stop it but wheel slip is not modelled. Returns whether the robot touched an obstacle.
        """
        collided = self._run(command, int(round(duration * PHYSICS_HZ)))
        if brake_time > 0:
            collided |= self._run(np.zeros(3), int(round(brake_time * PHYSICS_HZ)))
        return collided

    def _run(self, command: np.ndarray, substeps: int) -> bool:
        c = self.client
        vx, vy, wz = (float(v) for v in command)
        if self.drive == "diff":
            self.set_wheel_speeds(vx, wz)
        collided = False
        for k in range(substeps):
            if self.drive == "omni":
                yaw = self.pose()[2]
                cy, sy = math.cos(yaw), math.sin(yaw)
                vz = c.getBaseVelocity(self.robot)[0][2]
                c.resetBaseVelocity(self.robot, [cy * vx - sy * vy, sy * vx + cy * vy, vz], [0, 0, wz])
            c.stepSimulation()
            if (k + 1) % CONTACT_EVERY == 0 or k == substeps - 1:
                collided = collided or self.touching()
        return collided

    def set_wheel_speeds(self, linear_x: float, angular_z: float) -> None:
        """Wheel velocity targets from the unicycle model; the motors (torque-limited) do the rest."""
        half = angular_z * WHEEL_BASE / 2
        self.client.setJointMotorControlArray(
            self.robot, self.wheels, p.VELOCITY_CONTROL, forces=[WHEEL_FORCE, WHEEL_FORCE],
            targetVelocities=[(linear_x - half) / WHEEL_RADIUS, (linear_x + half) / WHEEL_RADIUS])

    def touching(self) -> bool:
        """Whether the robot is in contact with a wall, box, the bottle or clutter right now."""
        return any(cp[2] in self._obstacles for cp in self.client.getContactPoints(bodyA=self.robot))

    def pose(self) -> tuple[float, float, float]:
        """Robot (x, y, yaw) in the world frame."""
        pos, orn = self.client.getBasePositionAndOrientation(self.robot)
        qx, qy, qz, qw = orn
        return pos[0], pos[1], math.atan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))

    def velocity(self) -> tuple[float, float, float]:
        """Robot (forward, left, yaw rate) velocity in its own frame."""
        lin, ang = self.client.getBaseVelocity(self.robot)
        yaw = self.pose()[2]
        cy, sy = math.cos(yaw), math.sin(yaw)
        return cy * lin[0] + sy * lin[1], -sy * lin[0] + cy * lin[1], ang[2]

    # ---- images ------------------------------------------------------------------------------
    def camera_view(self) -> list[float]:
        """View matrix of the robot's forward camera at the current pose (mast offset, pitch, per-episode jitter)."""
        s = self.scenario
        x, y, yaw = self.pose()
        yaw_c, pitch = yaw + s.camera_yaw, self.camera.pitch + s.camera_pitch
        eye = [x + CAMERA_FORWARD * math.cos(yaw), y + CAMERA_FORWARD * math.sin(yaw),
               self.camera.mount_height + s.camera_height]
        target = [eye[0] + math.cos(pitch) * math.cos(yaw_c), eye[1] + math.cos(pitch) * math.sin(yaw_c),
                  eye[2] + math.sin(pitch)]
        return self.client.computeViewMatrix(eye, target, [0, 0, 1])

    def camera_image(self) -> np.ndarray:
        """The robot's forward camera, uint8 RGB (height, width, 3)."""
        return self._render(self.width, self.height, self.camera_view(), self.camera_projection)

    def topdown_image(self, width: int = 320, height: int = 240) -> np.ndarray:
        """A bird's-eye view of the whole arena (x to the right, +y = left of the robot up), for videos."""
        s = self.scenario
        x0, x1 = s.x_bounds
        span = max((x1 - x0) * height / width, 2 * s.half_width + 0.3)
        fov = 50.0
        eye_z = span / 2 / math.tan(math.radians(fov / 2)) + 0.3
        cx = (x0 + x1) / 2
        view = self.client.computeViewMatrix([cx, 0, eye_z], [cx, 0, 0], [0, 1, 0])
        proj = self.client.computeProjectionMatrixFOV(fov, width / height, 0.1, eye_z + 1)
        return self._render(width, height, view, proj)

    def _render(self, width: int, height: int, view, proj) -> np.ndarray:
        rgba = self.raw_render(width, height, view, proj)
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()

    def camera_image_labelled(self) -> tuple[np.ndarray, np.ndarray]:
        """The forward camera's RGB image (as `camera_image`) and, per pixel, the id of the body seen there (-1:
        none), e.g. to tell which pixels show a surface of `parts`."""
        rgba, labels = self.raw_render(self.width, self.height, self.camera_view(), self.camera_projection,
                                       labels=True)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(self.height, self.width, 4)[:, :, :3].copy()
        return rgb, np.asarray(labels, dtype=np.int32).reshape(self.height, self.width)

    def raw_render(self, width: int, height: int, view, proj, labels: bool = False):
        """PyBullet's own getCameraImage call with the scene's lighting (RGBA as PyBullet returns it; with `labels`,
        also its segmentation mask of body ids)."""
        s = self.scenario
        # The EGL plugin prints its OpenGL vendor on renders after a scene change; TinyRenderer is silent.
        with _quiet_c_output() if self._egl else contextlib.nullcontext():
            out = self.client.getCameraImage(
                width, height, view, proj, lightDirection=s.light_direction, lightAmbientCoeff=s.light_ambient,
                lightDiffuseCoeff=s.light_diffuse, lightSpecularCoeff=0.05, shadow=0, renderer=self._renderer,
                flags=0 if labels else p.ER_NO_SEGMENTATION_MASK)  # 0: the mask holds body ids
        return (out[2], out[4]) if labels else out[2]

    def close(self) -> None:
        if self.client is not None:
            with _quiet_c_output() if self._egl else contextlib.nullcontext():  # EGL says goodbye on disconnect
                self.client.disconnect()
            self.client = None
            if self._egl:
                BulletWorld._live_egl -= 1
