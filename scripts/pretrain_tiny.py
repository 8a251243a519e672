"""Pretrain the tiny Kosmos-2 in the sim on image-text matching, never on actions: the `tiny-pretrained` backbone.

A random-init tiny backbone frozen under a VLA head is nearly blind: its 64 latent queries attend almost uniformly,
so where things are in the image barely reaches the features (a linear probe does no better than the majority
class). The real model came pretrained on image-text data; this gives the tiny stand-in the same kind of start from
the sim alone. Frames rendered along noisy expert drives (the expert only moves the camera; its actions are never
stored or learned) are described from the privileged scene in short clauses ("a box on the left", "the box is near",
"the bottle is hidden", "facing straight"), and the model learns to match each image to the right clause among the
alternatives of each fact: CLIP-style, the mean of its image tokens against the text decoder's encoding of each
clause (`<s> clause </s>`).

Bit-for-bit reproducible on one machine and software stack (fixed seeds, deterministic algorithms, fixed thread
count). Run `python -m scripts.pretrain_tiny` (from the repository root) to rebuild the package's weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mobile_vla_sim.envs import ENV_ID
from mobile_vla_sim.envs.difficulty import DIFFICULTIES
from mobile_vla_sim.envs.expert import ScriptedExpert
from mobile_vla_sim.envs.scenario import Scenario
from mobile_vla_sim.envs.config import CAMERAS
from mobile_vla_sim.envs.sim import BOTTLE_HEIGHT, BOTTLE_RADIUS, CAMERA_FORWARD
from mobile_vla_sim.errors import ConfigError
from mobile_vla_sim.policies.backbone import Backbone, load_backbone
from mobile_vla_sim.policies.tiny_kosmos import (PRETRAINED_FORMAT, PRETRAINED_META, PRETRAINED_WEIGHTS,
                                                 TINY_IMAGE_SIZE, vocab_fingerprint)

#: Half the camera's 90° field of view, as a tangent: a point is in view if |left / forward| is below it.
_HALF_FOV_TAN = 1.0
#: A box or the bottle within this bearing (rad) of the optical axis is "ahead", beyond it "on the left/right".
AHEAD_BEARING = math.radians(10)
#: Heading relative to the corridor axis (rad) beyond which the camera is "facing left/right".
FACING_YAW = 0.25
#: Box distance classes (m, from the camera to the box's near face): near below the first, far from the second.
#: Chosen so the three classes are about equally frequent among frames with a box in view.
DISTANCE_EDGES = (0.7, 0.95)
_BOTTLE_POINTS_Z = (BOTTLE_HEIGHT + 0.02, 0.7 * BOTTLE_HEIGHT, 0.35 * BOTTLE_HEIGHT)  # cap, upper and lower body


@dataclass(frozen=True)
class SceneFacts:
    """What the camera sees, from the privileged scene: the text to match and the probe's labels."""

    box_side: str  # left | ahead | right | none (the nearest box in view, by bearing)
    box_distance: str  # near | medium | far | none
    bottle: str  # left | ahead | right | hidden
    facing: str  # left | straight | right (camera heading relative to the corridor)

    def clauses(self) -> dict[str, str]:
        """Fact -> its clause; `box_distance` only when a box is in view."""
        return {fact: CLAUSES[fact][value] for fact, value in vars(self).items() if value in CLAUSES[fact]}

    def caption(self) -> str:
        return ". ".join(self.clauses().values()) + "."


#: Every fact's values and their clauses: the texts an image is matched against.
CLAUSES: dict[str, dict[str, str]] = {
    "box_side": {"none": "no box ahead", "left": "a box on the left", "ahead": "a box ahead",
                 "right": "a box on the right"},
    "box_distance": {"near": "the box is near", "medium": "the box is at medium distance", "far": "the box is far"},
    "bottle": {"hidden": "the bottle is hidden", "left": "the bottle is on the left", "ahead": "the bottle is ahead",
               "right": "the bottle is on the right"},
    "facing": {"left": "facing left", "straight": "facing straight", "right": "facing right"},
}


def _side(left: float, forward: float) -> str:
    bearing = math.atan2(left, forward)
    return "ahead" if abs(bearing) < AHEAD_BEARING else ("left" if bearing > 0 else "right")


def _segment_hits_box(p: np.ndarray, q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether the 3-D segment p-q crosses the axis-aligned box [lo, hi] (slab test)."""
    t0, t1, d = 0.0, 1.0, q - p
    for k in range(3):
        if abs(d[k]) < 1e-12:
            if not lo[k] <= p[k] <= hi[k]:
                return False
            continue
        a, b = (lo[k] - p[k]) / d[k], (hi[k] - p[k]) / d[k]
        t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
        if t0 > t1:
            return False
    return True


def scene_facts(scenario: Scenario, pose) -> SceneFacts:
    """Facts about the forward camera's view at `pose` (x, y, yaw), from the scene geometry and the camera model."""
    x, y, yaw = (float(v) for v in pose)
    camera = CAMERAS["default"]  # pretraining renders the default square camera
    yaw_c, pitch = yaw + scenario.camera_yaw, camera.pitch + scenario.camera_pitch
    eye = np.array([x + CAMERA_FORWARD * math.cos(yaw), y + CAMERA_FORWARD * math.sin(yaw),
                    camera.mount_height + scenario.camera_height])
    fwd = np.array([math.cos(pitch) * math.cos(yaw_c), math.cos(pitch) * math.sin(yaw_c), math.sin(pitch)])
    left = np.array([-math.sin(yaw_c), math.cos(yaw_c), 0.0])
    up = np.cross(fwd, left)

    def camera_frame(point) -> tuple[float, float, float]:
        rel = np.asarray(point, dtype=float) - eye
        return float(rel @ fwd), float(rel @ left), float(rel @ up)

    def in_view(point, radius: float = 0.0) -> bool:
        f, l, u = camera_frame(point)
        return f > 0.05 and abs(l) - radius < _HALF_FOV_TAN * f and abs(u) < _HALF_FOV_TAN * f

    boxes = [b for b in scenario.boxes if in_view((b.x, b.y, b.hz))]
    box_side, box_distance = "none", "none"
    if boxes:
        nearest = min(boxes, key=lambda b: camera_frame((b.x, b.y, b.hz))[0])
        f, l, _ = camera_frame((nearest.x, nearest.y, nearest.hz))
        box_side = _side(l, f)
        gap = max(abs(eye[0] - nearest.x) - nearest.hx, abs(eye[1] - nearest.y) - nearest.hy, 0.0)
        box_distance = "near" if gap < DISTANCE_EDGES[0] else ("medium" if gap < DISTANCE_EDGES[1] else "far")
    solids = [(np.array([b.x - b.hx, b.y - b.hy, 0.0]), np.array([b.x + b.hx, b.y + b.hy, 2 * b.hz]))
              for b in scenario.boxes]
    bx, by = scenario.target.x, scenario.target.y
    seen = [p for p in (np.array([bx, by, z]) for z in _BOTTLE_POINTS_Z)
            if in_view(p, BOTTLE_RADIUS) and not any(_segment_hits_box(eye, p, lo, hi) for lo, hi in solids)]
    bottle = "hidden"
    if seen:
        f, l, _ = camera_frame(seen[0])
        bottle = _side(l, f)
    heading = math.remainder(yaw_c, 2 * math.pi)
    facing = "straight" if abs(heading) < FACING_YAW else ("left" if heading > 0 else "right")
    return SceneFacts(box_side, box_distance, bottle, facing)


def render_frames(seeds, difficulties=tuple(DIFFICULTIES), image_size: int = TINY_IMAGE_SIZE,
                  noise_std: float = 0.3) -> tuple[np.ndarray, list[SceneFacts]]:
    """Camera frames (N, S, S, 3) uint8 and their facts, along noisy expert drives for every (seed, difficulty).

    The side to pass the boxes on alternates with the seed; the expert's `noise_std` spreads the poses around its
    path. Its actions only move the camera and are discarded.
    """
    images, facts = [], []
    for difficulty in difficulties:
        env = gymnasium.make(ENV_ID, difficulty=difficulty, image_size=image_size)
        try:
            for seed in seeds:
                expert = ScriptedExpert(noise_std=noise_std, seed=int(seed))
                obs, info = env.reset(seed=int(seed), options={"task": ("left", "right")[int(seed) % 2]})
                expert.reset()
                done = False
                while True:
                    images.append(obs["image"])
                    facts.append(scene_facts(env.unwrapped.scenario, info["robot_pose"]))
                    if done:
                        break
                    obs, _, terminated, truncated, info = env.step(expert.act(obs))
                    done = terminated or truncated
        finally:
            env.close()
    return np.stack(images), facts


@dataclass
class PretrainConfig:
    """Defaults are those of the shipped weights."""

    episodes: int = field(default=60, metadata={"help": "expert drives per difficulty (scene seeds 0..episodes-1)"})
    steps: int = field(default=1600, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=64, metadata={"help": "frames per step"})
    lr: float = field(default=3e-3, metadata={"help": "peak AdamW learning rate (linear warm-up, cosine decay)"})
    no_box_weight: float = field(default=0.25, metadata={
        "help": "sampling weight of frames with no box in view (most frames come after the box is passed)"})
    distance_weight: float = field(default=3.0, metadata={
        "help": "loss weight of the box-distance fact (the others weigh 1): distance is the hardest to see"})
    seed: int = field(default=0, metadata={"help": "seed of the frame sampling"})
    threads: int = field(default=1, metadata={
        "help": "torch CPU threads; results are bit-exact for one count (1 is fastest on a busy machine)"})
    out: Path = field(default=Path(__file__).resolve().parents[1] / "mobile_vla_sim" / "assets",
                      metadata={"help": "folder for the weights and their JSON record"})

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for key in ("episodes", "steps", "batch_size", "threads"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(self, key)}")
        if not 0 < self.no_box_weight <= 1 or not 0 < self.lr < 1:
            raise ConfigError(f"--no-box-weight must be in (0, 1] and --lr in (0, 1), "
                              f"got {self.no_box_weight} and {self.lr}")
        if not self.distance_weight > 0:
            raise ConfigError(f"--distance-weight must be > 0, got {self.distance_weight}")


def pooled_image_features(backbone: Backbone, images: np.ndarray) -> torch.Tensor:
    """Mean of the 64 context vectors (N, D): what a head reads from the image with no spatial preference."""
    return backbone.image_features(backbone.pixel_values(images)).mean(dim=1)


def _encode_texts(backbone: Backbone, texts: list[str]) -> torch.Tensor:
    """The text decoder's last-layer state at `</s>` of `<s> text </s>` (no image), one row per text."""
    tok = backbone.processor.tokenizer
    rows = [[tok.bos_token_id, *tok(t)["input_ids"], tok.eos_token_id] for t in texts]
    ids = torch.full((len(rows), max(map(len, rows))), tok.pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
    mask = (ids != tok.pad_token_id).long()
    hidden = backbone.model.text_model(input_ids=ids, attention_mask=mask).last_hidden_state
    return hidden[torch.arange(len(rows)), mask.sum(dim=1) - 1]


def fact_labels(facts: list[SceneFacts]) -> dict[str, torch.Tensor]:
    """Per fact, the index of each frame's value in CLAUSES (-100 where the fact does not apply)."""
    return {fact: torch.tensor([list(values).index(getattr(f, fact)) if getattr(f, fact) in values else -100
                                for f in facts]) for fact, values in CLAUSES.items()}


def matching_loss(backbone: Backbone, images: np.ndarray, labels: dict[str, torch.Tensor],
                  log_scale: torch.Tensor, distance_weight: float = 1.0) -> torch.Tensor:
    """Sum over facts of the cross-entropy of matching each image to its clause among that fact's clauses, the
    box distance's weighted by `distance_weight`."""
    image = F.normalize(pooled_image_features(backbone, images), dim=-1)
    text = F.normalize(_encode_texts(backbone, [t for values in CLAUSES.values() for t in values.values()]), dim=-1)
    logits = log_scale.exp() * image @ text.T
    loss, start = logits.new_zeros(()), 0
    for fact, values in CLAUSES.items():
        weight = distance_weight if fact == "box_distance" else 1.0
        loss = loss + weight * F.cross_entropy(logits[:, start:start + len(values)], labels[fact], ignore_index=-100)
        start += len(values)
    return loss


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pretrain(cfg: PretrainConfig, log=print) -> Path:
    """Render, describe, train; write `<out>/tiny_pretrained.safetensors` and its JSON record. Returns the weights."""
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    images, facts = render_frames(range(cfg.episodes))
    render_s = time.perf_counter() - start
    log(f"rendered {len(images)} frames in {render_s:.0f} s")
    backbone = load_backbone("tiny")
    backbone.model.train()
    labels = fact_labels(facts)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))  # CLIP's learnable temperature
    opt = torch.optim.AdamW([*backbone.model.parameters(), log_scale], lr=cfg.lr, weight_decay=0.0)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    gen = torch.Generator().manual_seed(cfg.seed)
    weights = torch.tensor([1.0 if f.box_side != "none" else cfg.no_box_weight for f in facts])
    losses = []
    for step in range(cfg.steps):
        batch = torch.multinomial(weights, cfg.batch_size, replacement=True, generator=gen)
        loss = matching_loss(backbone, images[batch.numpy()], {k: v[batch] for k, v in labels.items()}, log_scale,
                             cfg.distance_weight)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(backbone.model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == cfg.steps:
            log(f"step {step + 1}/{cfg.steps} matching loss {np.mean(losses[-100:]):.4f} "
                f"({time.perf_counter() - start:.0f} s)")
    return _save(backbone, cfg, {"frames": len(images), "render_seconds": round(render_s, 1),
                                 "seconds": round(time.perf_counter() - start, 1),
                                 "final_loss": round(float(np.mean(losses[-100:])), 4)})


def command(cfg: PretrainConfig) -> str:
    """The shell command that rebuilds these weights: the module plus every option that differs from the default."""
    default = PretrainConfig()
    options = [f"--{key.replace('_', '-')}={value}" for key, value in asdict(cfg).items()
               if value != getattr(default, key)]
    return shlex.join(["python", "-m", "scripts.pretrain_tiny", *options])


def _save(backbone: Backbone, cfg: PretrainConfig, stats: dict) -> Path:
    cfg.out.mkdir(parents=True, exist_ok=True)
    weights = cfg.out / PRETRAINED_WEIGHTS
    tensors = {k: v.detach().contiguous() for k, v in backbone.model.state_dict().items()}
    # One metadata entry: safetensors writes several in hash-map order, which would change the file's bytes per run.
    header = json.dumps({"format": PRETRAINED_FORMAT, "vocab": vocab_fingerprint(backbone.processor.tokenizer)})
    save_file(tensors, str(weights), metadata={"mobile_vla_sim": header})
    record = {"command": command(cfg), "sha256": _sha256(weights), "torch": torch.__version__,
              "objective": "image-text matching of scene clauses; no action labels",
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k != "out"},
              **stats}
    (cfg.out / PRETRAINED_META).write_text(json.dumps(record, indent=2) + "\n")
    return weights


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in PretrainConfig.__dataclass_fields__.values():
        parser.add_argument("--" + f.name.replace("_", "-"), type=Path if f.name == "out" else type(f.default),
                            default=f.default, help=f.metadata["help"])
    pretrain(PretrainConfig(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
