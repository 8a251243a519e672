"""Tiny Kosmos-2 backbone and VLA model: input layout, instruction sensitivity, trainable parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mobile_vla_sim.policies.backbone import BackboneNotFoundError, load_backbone
from mobile_vla_sim.policies.train import TrainConfig, make_optimizer
from mobile_vla_sim.policies.vla import HeadConfig, LoraSettings, VLAModel, count_parameters

LEFT = "Navigate around obstacles and reach the front of the beverage bottle on the left"
RIGHT = "Navigate around obstacles and reach the front of the beverage bottle on the right"


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("tiny")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (1, 48, 48, 3), dtype=np.uint8)


def _model(backbone, lora: bool = False) -> VLAModel:
    torch.manual_seed(0)
    model = VLAModel(backbone, HeadConfig(hidden=32, layers=2), np.ones(2, np.float32))
    model.freeze_backbone()
    if lora:
        model.add_lora(LoraSettings(r=4, alpha=8, targets=("q_proj", "v_proj", "fc1")))
    return model


def test_text_has_one_image_span_and_the_instruction_intact(backbone):
    ids, attn, img = backbone.encode_text([LEFT, "go"])
    tok = backbone.processor.tokenizer
    for row in range(2):
        span = torch.nonzero(img[row]).flatten()
        assert len(span) == 64 and span.tolist() == list(range(2, 66))  # after <s> <image>, contiguous
        tokens = tok.convert_ids_to_tokens(ids[row, :int(attn[row].sum())].tolist())
        assert tokens[:2] == ["<s>", "<image>"] and tokens[66] == "</image>"
    instruction_ids = tok(LEFT, add_special_tokens=False)["input_ids"]
    assert ids[0, 67:67 + len(instruction_ids)].tolist() == instruction_ids
    assert int(attn[0].sum()) == 67 + len(instruction_ids)


def test_only_the_instruction_changes_the_action_token_feature(backbone, image):
    model = _model(backbone).eval()
    with torch.no_grad():
        context, prefix = model.encode_frames(np.repeat(image, 3, 0), [LEFT, RIGHT, LEFT])
        feats = model.action_features(prefix)
    assert torch.equal(context[0], context[1])  # the context vector depends on the image only
    assert torch.allclose(feats[0], feats[2], atol=1e-6)
    diff = (feats[0] - feats[1]).norm() / feats[0].norm()
    assert diff > 1e-2, f"left/right action-token features differ by only {diff:.2e} (relative)"


def test_cached_prefix_equals_one_full_decoder_pass(backbone, image):
    """The two-step computation (prefix keys/values, then the action token) is the full sequence's hidden state."""
    model = _model(backbone).eval()
    with torch.no_grad():
        context, prefix = model.encode_frames(np.repeat(image, 2, 0), [LEFT, "go left"])
        split = model.action_features(prefix)
        ids, attn, img = backbone.encode_text([LEFT, "go left"])
        embeds = backbone.model.text_model.model.embed_tokens(ids)
        for row in range(2):
            n = int(attn[row].sum())
            seq = torch.cat([embeds[row:row + 1, :n], model.action_token.view(1, 1, -1)], dim=1)
            mask = torch.cat([img[row:row + 1, :n], img.new_zeros(1, 1)], dim=1)
            full = backbone.model.text_model(inputs_embeds=seq, image_embeds=context[row:row + 1],
                                             image_embeds_position_mask=mask).last_hidden_state[0, -1]
            assert torch.allclose(full, split[row], atol=1e-4)


def test_frozen_trains_only_action_token_and_head(backbone):
    model = _model(backbone)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"action_token"} | {"head." + n for n, _ in model.head.named_parameters()}
    assert count_parameters(model, trainable_only=True) == model.action_token.numel() + count_parameters(model.head)
    assert not model.train().backbone.training  # the frozen VLM stays in eval mode (no dropout)


def test_lora_trains_only_adapters_action_token_and_head():
    model = _model(load_backbone("tiny"), lora=True)  # own backbone: LoRA injection mutates it
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    adapters = [n for n in trainable if n.startswith("backbone.")]
    assert adapters and all("lora_A" in n or "lora_B" in n for n in adapters)
    assert {n.split(".")[-4] for n in adapters} == {"q_proj", "v_proj", "fc1"}
    assert set(trainable) - set(adapters) == {"action_token"} | {"head." + n for n, _ in model.head.named_parameters()}
    lora = sum(p.numel() for n, p in model.named_parameters() if n in adapters)
    assert 0 < lora < 0.2 * count_parameters(model.backbone)
    cfg = TrainConfig(data=".", mode="lora", backbone="tiny")
    lrs = sorted(g["lr"] for g in make_optimizer(model, cfg).param_groups)
    assert lrs == [1e-5, 1e-4]


def test_tiny_backbone_saves_and_loads_offline(backbone, image, tmp_path):
    backbone.save_pretrained(tmp_path / "tiny")
    reloaded = load_backbone(str(tmp_path / "tiny"))
    with torch.no_grad():
        a = backbone.image_features(backbone.pixel_values(image))
        b = reloaded.image_features(reloaded.pixel_values(image))
    assert torch.allclose(a, b, atol=1e-6)
    assert reloaded.encode_text([LEFT])[0].tolist() == backbone.encode_text([LEFT])[0].tolist()


def test_missing_backbone_names_it_and_how_to_provide_it(tmp_path):
    with pytest.raises(BackboneNotFoundError, match=r"(?s)no_such_dir.*tiny"):
        load_backbone(str(tmp_path / "no_such_dir"))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="q_proj"):
        LoraSettings(targets=("qkv",))
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(data=".", mode="full")
    with pytest.raises(ValueError, match="uint8"):
        load_backbone("tiny").pixel_values(np.zeros((1, 8, 8, 3), np.int32))
    with pytest.raises(ValueError, match="uint8"):
        load_backbone("tiny").pixel_values(np.zeros((1, 8, 8), np.uint8))
