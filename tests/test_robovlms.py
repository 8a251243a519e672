"""The real project's PyTorch Lightning checkpoints in (checked against a reference forward pass written here from
the documented architecture) and this package's out (exported, then evaluated: the same episodes byte for byte); a
pickle payload inside a `.ckpt` never runs."""

from __future__ import annotations

import os
import sys
import types
from collections import OrderedDict

import huggingface_hub
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from mobile_vla_sim.cli import main
from mobile_vla_sim.errors import CheckpointError, PolicyLoadError
from mobile_vla_sim.policies.checkpoint import load_policy_checkpoint, read_checkpoint_config
from mobile_vla_sim.policies.config import CLIP_MEAN, CLIP_STD
from mobile_vla_sim.policies.registry import load_policy
from mobile_vla_sim.policies.robovlms import read_lightning, training_config
from mobile_vla_sim.policies.tiny_kosmos import build_tiny_kosmos

LEFT = "Navigate around obstacles and reach the front of the beverage bottle on the left"
RIGHT = LEFT.replace("left", "right")
WINDOW, CHUNK, HIDDEN, LAYERS = 4, 3, 32, 2
LORA_R, LORA_ALPHA, LORA_TARGETS = 4, 8, ["q_proj", "v_proj", "fc1", "dense"]


class AttributeDict(dict):
    """Lightning's hyper-parameter container, pickled under Lightning's own name (Lightning is not installed)."""


AttributeDict.__module__ = "lightning.fabric.utilities.data"


@pytest.fixture
def lightning_names(monkeypatch):
    """Let pickle find `AttributeDict` under Lightning's module path while a test writes a checkpoint."""
    for name in ("lightning", "lightning.fabric", "lightning.fabric.utilities"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    module = types.ModuleType("lightning.fabric.utilities.data")
    module.AttributeDict = AttributeDict
    monkeypatch.setitem(sys.modules, "lightning.fabric.utilities.data", module)


def _real_checkpoint(path, mlp: tuple[int, ...], lora: bool):
    """A checkpoint as the real project's trainer saves one, from a tiny Kosmos-2 (seed 1: not the package's default
    weights, so they must come from the file); returns the reference model's parts."""
    kosmos = build_tiny_kosmos(seed=1)[0].eval()
    torch.manual_seed(2)
    backbone: nn.Module = kosmos
    if lora:
        from peft import LoraConfig, get_peft_model

        backbone = get_peft_model(kosmos, LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=LORA_TARGETS))
        for name, p in backbone.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0.0, 0.05)  # trained adapters: B is no longer zero
    token = torch.randn(kosmos.config.text_config.embed_dim) * 0.1
    rnn = nn.LSTM(kosmos.config.text_config.embed_dim, HIDDEN, LAYERS, batch_first=True)
    widths = (HIDDEN, *mlp)
    head = nn.Sequential(*[m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())],
                         nn.Linear(widths[-1], CHUNK * 2), nn.Tanh())
    state = OrderedDict(("model.backbone." + k, v) for k, v in backbone.state_dict().items())
    if lora:  # the PEFT wrapper also registers the backbone a second time in the trainer
        state.update(("model.model." + k, v) for k, v in backbone.state_dict().items())
    state["model.backbone.text_model.lm_head.weight"] = kosmos.text_model.model.embed_tokens.weight
    state["model.action_token"] = token
    state.update(("model.act_head.rnn." + k, v) for k, v in rnn.state_dict().items())
    state.update(("model.act_head.velocities.mlp." + k, v) for k, v in head.state_dict().items())
    configs = {
        "robovlm_name": "RoboKosMos", "model": "kosmos", "image_size": 112, "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD), "window_size": WINDOW, "fwd_pred_next_n": CHUNK,
        "train_setup": {"freeze_backbone": True, "lora_enable": lora, "lora_r": LORA_R, "lora_alpha": LORA_ALPHA,
                        "lora_dropout": 0.1, "lora_bias": "none"},
        "act_head": {"type": "MobileVLALSTMDecoder", "hidden_size": HIDDEN, "action_dim": 2, "down_sample": "none",
                     "latent": 1, "fwd_pred_next_n": CHUNK, "window_size": WINDOW, "history_type": "post"},
        "tokenizer": {"type": "AutoProcessor", "pretrained_model_name_or_path": "tiny", "max_text_len": 256},
        "vlm": {"type": "AutoModelForVision2Seq", "name": "kosmos", "pretrained_model_name_or_path": "tiny"},
        "norm_action": True, "norm_min": -1.0, "norm_max": 1.0}
    torch.save({"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.5.5", "state_dict": state,
                "hyper_parameters": AttributeDict(configs=configs), "hparams_name": "configs",
                "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {
                    "best_model_score": torch.tensor(0.027), "best_model_path": "epoch_03.ckpt",
                    "best_k_models": {"epoch_03.ckpt": torch.tensor(0.027)}, "kth_value": np.float64(0.027)}},
                "optimizer_states": [{"state": {0: {"step": torch.tensor(120.0), "exp_avg": torch.zeros(3)}},
                                      "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 0.01,
                                                        "foreach": None, "params": [0]}]}],
                "lr_schedulers": [{"base_lrs": [1e-4], "last_epoch": 3}]}, path)
    if lora:  # the reference: a plain Kosmos-2 with the adapters merged by hand, W + alpha / r * B @ A
        reference = build_tiny_kosmos(seed=1)[0].eval()
        for name, module in backbone.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                delta = LORA_ALPHA / LORA_R * module.lora_B["default"].weight @ module.lora_A["default"].weight
                reference.get_submodule(name.removeprefix("base_model.model.")).weight.data += delta
        kosmos = reference
    return kosmos, token, rnn, head


def _reference_actions(kosmos, token, rnn, head, frames: np.ndarray, instruction: str) -> np.ndarray:
    """The documented architecture, step by step: the frame squashed to 112 px and CLIP-normalised; ViT last hidden
    state -> post-layernorm -> L2 norm -> latent-query projection (64 image tokens); the text decoder over
    `<s> <image> [64 image tokens] </image> instruction` plus the action token, its last hidden state at the action
    token; an LSTM from zero state over the last WINDOW frames; the tanh MLP; the first (linear_x, linear_y)."""
    from mobile_vla_sim.policies.tiny_kosmos import build_tiny_processor

    enc = build_tiny_processor()(text=instruction, images=np.zeros((112, 112, 3), np.uint8), num_image_tokens=64)
    ids = torch.tensor([enc["input_ids"]])
    image_mask = F.pad(torch.tensor([enc["image_embeds_position_mask"]]), (0, 1))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    text = kosmos.text_model
    feats, actions = [], []
    with torch.no_grad():
        for frame in frames:
            x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
            x = F.interpolate(x, size=(112, 112), mode="bilinear", antialias=True, align_corners=False)
            x = (x.round().clamp(0, 255) / 255.0 - mean) / std
            vision = kosmos.vision_model(pixel_values=x).last_hidden_state
            vision = F.normalize(kosmos.vision_model.model.post_layernorm(vision), dim=-1)
            image_embeds = kosmos.image_to_text_projection(vision)[0]
            embeds = torch.cat([text.model.embed_tokens(ids), token.view(1, 1, -1)], dim=1)
            out = text(inputs_embeds=embeds, image_embeds=image_embeds, image_embeds_position_mask=image_mask,
                       attention_mask=torch.ones(image_mask.shape, dtype=torch.long))
            feats.append(out.last_hidden_state[0, -1])
            lstm_out, _ = rnn(torch.stack(feats[-WINDOW:])[None])
            actions.append(head(lstm_out[0, -1]).view(CHUNK, 2)[0].numpy())
    return np.stack(actions)


@pytest.mark.parametrize("mlp, lora", [((1024, 512, 256), False), ((1024, 512), True)],
                         ids=["mlp0246-frozen", "mlp024-lora"])
def test_real_checkpoint_matches_the_reference_forward_pass(tmp_path, lightning_names, mlp, lora):
    path = tmp_path / "epoch_epoch=03-val_loss=0.027.ckpt"
    reference = _real_checkpoint(path, mlp, lora)
    config = read_checkpoint_config(path)
    assert (config["drive"], config["mode"], config["head"]["mlp"]) == ("omni", "lora" if lora else "frozen", list(mlp))
    policy = load_policy(str(path), drive="omni")
    assert policy.name == f"robovlms-{config['mode']}" and policy.window == WINDOW
    frames = np.random.default_rng(0).integers(0, 256, (2 * WINDOW - 1, 64, 128, 3), dtype=np.uint8)  # 2:1 frames
    for instruction in (LEFT, RIGHT):
        policy.reset(instruction, slot=0)
        got = np.concatenate([policy.act_batch({"image": frame[None]}, [0]) for frame in frames])
        assert np.all(got[:, 2] == 0)  # omni (linear_x, linear_y, angular_z): the real policy never turns
        expected = _reference_actions(*reference, frames, instruction)
        np.testing.assert_allclose(got[:, :2], expected, atol=2e-5, rtol=0)
    assert not np.allclose(_reference_actions(*reference, frames, LEFT), expected, atol=1e-4)  # the text matters


def test_a_pickle_payload_in_a_ckpt_never_runs(tmp_path, exploit):
    payload, marker = exploit

    class System:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    for evil, name in ((payload, f"{open.__module__}.open"), (System(), f"{os.system.__module__}.system")):
        path = tmp_path / "evil.ckpt"
        torch.save({"state_dict": {"model.action_token": torch.zeros(4)}, "hyper_parameters": {"x": evil}}, path)
        for load in (lambda: load_policy(str(path), drive="omni"), lambda: read_checkpoint_config(path)):
            with pytest.raises(CheckpointError, match=f"refused unread: its pickle names {name}") as err:
                load()
            assert "\n" not in str(err.value)
        result = CliRunner().invoke(main, ["eval", "--policy", str(path), "--out", str(tmp_path / "out")])
        assert result.exit_code == 1 and name in result.output and len(result.output.strip().splitlines()) == 1
    assert not marker.exists()


def test_unusable_checkpoints_get_one_line_errors(tmp_path, lightning_names, monkeypatch):
    good = tmp_path / "good.ckpt"
    _real_checkpoint(good, (1024, 512, 256), lora=False)
    ckpt = read_lightning(good)

    def broken(**changes):
        """`good` with state-dict entries added, replaced or (None) removed."""
        path = tmp_path / f"bad{len(list(tmp_path.glob('bad*')))}.ckpt"
        state = {**ckpt["state_dict"], **changes}
        torch.save({**ckpt, "state_dict": {k: v for k, v in state.items() if v is not None}}, path)
        return path

    cases = [(broken(**{"model.act_head.logits.weight": torch.zeros(6, HIDDEN)}), "classification head"),
             (broken(**{"model.vision_resampler.latents": torch.zeros(4)}), "'model.vision_resampler.latents' is"),
             (broken(**{"model.action_token": None}), "no 'model.action_token'"),
             (broken(**{"model.act_head.rnn.weight_ih_l0": torch.zeros(4 * HIDDEN, 7)}), "LSTM takes 7 inputs")]
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:4000])
    cases.append((tmp_path / "cut.ckpt", "not a readable torch checkpoint"))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.ckpt")
    cases.append((tmp_path / "plain.ckpt", "not a PyTorch Lightning one"))
    configs = {**training_config(ckpt), "vlm": {}, "model_url": "https://huggingface.co/microsoft/kosmos-2-patch14-224",
               "tokenizer": {"pretrained_model_name_or_path": ".vlms/kosmos-2-patch14-224"}}  # the real config's
    torch.save({**ckpt, "hyper_parameters": {"configs": configs}}, tmp_path / "offline.ckpt")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # and the processor is not cached
    cases.append((tmp_path / "offline.ckpt", "needs the Kosmos-2 processor .* of 'microsoft/kosmos-2-patch14-224'"))
    for path, message in cases:
        with pytest.raises(PolicyLoadError, match=message) as err:
            load_policy(str(path), drive="omni")
        assert "\n" not in str(err.value)
    with pytest.raises(PolicyLoadError, match="emits 'omni' actions.*--drive omni"):
        load_policy(str(good), drive="diff")


def test_exported_checkpoint_has_the_layout_and_evaluates_byte_identically(tiny_checkpoints, tmp_path):
    runner = CliRunner()
    for mode in ("frozen", "lora"):
        exported = tmp_path / f"{mode}-robovlms.ckpt"
        result = runner.invoke(main, ["export-checkpoint", str(tiny_checkpoints[mode]), "--format", "robovlms",
                                      "--out", str(exported)])
        assert result.exit_code == 0, result.output
        assert "differs from their stock policy: actions (linear_x, angular_z)" in result.output
        ckpt = torch.load(exported, weights_only=True)  # plain tensors and types: no allow-list needed
        keys, configs = ckpt["state_dict"].keys(), ckpt["hyper_parameters"]["configs"]
        assert {"model.action_token", "model.act_head.rnn.weight_ih_l1", "model.act_head.velocities.mlp.2.bias",
                "model.backbone.text_model.model.layers.1.final_layer_norm.weight"} <= set(keys)
        assert any("lora_A" in k for k in keys) == (mode == "lora")
        assert (configs["window_size"], configs["fwd_pred_next_n"], configs["act_head"]["num_layers"]) == (8, 10, 2)
        assert configs["train_setup"]["lora_enable"] == (mode == "lora")
        original, again = (load_policy_checkpoint(p, batch=1) for p in (tiny_checkpoints[mode], exported))
        frames = np.random.default_rng(1).integers(0, 256, (10, 48, 48, 3), dtype=np.uint8)
        for policy in (original, again):
            policy.reset(LEFT, slot=3)
        for frame in frames:  # past the window of 8: the same actions, bit for bit
            assert np.array_equal(*(p.act_batch({"image": frame[None]}, [3]) for p in (original, again)))
    csv = []
    for policy in (tiny_checkpoints["frozen"], tmp_path / "frozen-robovlms.ckpt"):
        out = tmp_path / policy.stem
        result = runner.invoke(main, ["eval", "--policy", str(policy), "--difficulty", "easy", "--episodes", "1",
                                      "--max-steps", "20", "--workers", "1", "--out", str(out)])
        assert result.exit_code == 0, result.output
        csv.append((out / "episodes.csv").read_bytes())
    assert csv[0] == csv[1]
    missing = runner.invoke(main, ["export-checkpoint", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "not found" in missing.output and len(missing.output.strip().splitlines()) == 1
