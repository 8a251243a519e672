"""A tiny, offline Kosmos-2: small `Kosmos2Config`, BPE tokenizer trained on the instruction vocabulary, CLIP processor.

The hub is unreachable on the project's machines and the real model is 1.66 B parameters, so tests, CI and quick
experiments use this stand-in. It has the real architecture (vision ViT, 64 latent query tokens, text decoder,
`image_embeds_position_mask`), so every code path that works on it works on `microsoft/kosmos-2-patch14-224`.
"""

from __future__ import annotations

import hashlib
import json
import string
from importlib.resources import files

import torch
from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Kosmos2Config, Kosmos2Model, Kosmos2Processor, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from mobile_vla_sim.envs.tasks import DEFAULT_FAMILY, get_family
from mobile_vla_sim.errors import BackboneNotFoundError
from mobile_vla_sim.policies.config import CLIP_MEAN, CLIP_STD

TINY_SEED = 0
#: Half the real 224 px (CPU cost of preprocessing and patching is 4x lower); patch 16 keeps 7x7 patches as 224/32.
TINY_IMAGE_SIZE = 112
TINY_PATCH = 16
TEXT_DIM = 128
#: The real model's number of latent query (image) tokens; kept so context vectors have the real shape (64, D).
LATENT_QUERY_NUM = 64
#: Same order as XLM-R / Kosmos-2, so `pad_token_id=1`, `bos=0`, `eos=2` of `Kosmos2TextConfig` hold.
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
#: The sim-pretrained tiny weights (package data) and their record: the command that made them and their sha256.
PRETRAINED_WEIGHTS, PRETRAINED_META = "tiny_pretrained.safetensors", "tiny_pretrained.json"
PRETRAINED_FORMAT = "mobile-vla-sim/tiny-kosmos2"
_REBUILD = "python -m scripts.pretrain_tiny (from a source checkout)"

#: Every instruction sentence of the default task family (Korean included) plus navigation and scene-caption words, so
#: paraphrases and the pretraining captions (`scripts/pretrain_tiny.py`) tokenize into known pieces. Changing it
#: changes the vocabulary, so the `tiny-pretrained` weights must then be rebuilt (their vocabulary fingerprint no longer
#: matches); other families' sentences tokenize into these pieces.
CORPUS = [
    *(sentence for sides in get_family(DEFAULT_FAMILY).instruction_sets.values() for sentence in sides.values()),
    *get_family(DEFAULT_FAMILY).extra_sentences,
    "go pass drive move turn stop walk steer head towards to toward a an the box boxes bottle bottles cup can pot",
    "left right side sides front back behind ahead forward backward straight around past beside near far close",
    "medium easy hard obstacle obstacles wall walls corridor floor door target goal object robot camera green cap",
    "please then and or but with without of in on at by from into onto reach arrive find approach avoid keep",
    "one two no nearest is hidden visible facing view scene distance brown basket",
    "Go around the box on the left. Go around the box on the right! Drive past the obstacle, then stop.",
]


def build_tiny_tokenizer(vocab_size: int = 256) -> PreTrainedTokenizerFast:
    """A BPE tokenizer (sentencepiece-style `▁` word marks, like Kosmos-2's) trained on `CORPUS`; deterministic."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation))
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", padding_side="right")


def build_tiny_processor(image_size: int = TINY_IMAGE_SIZE) -> Kosmos2Processor:
    """The Kosmos-2 processor (adds `<image>`, `</image>`, grounding and patch-index tokens) over the tiny tokenizer."""
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size},
                                            image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return Kosmos2Processor(image_processor, build_tiny_tokenizer())


def tiny_config(vocab_size: int, image_size: int = TINY_IMAGE_SIZE) -> Kosmos2Config:
    """~0.6 M parameters: 2-layer ViT (hidden 64, 7x7 patches), 2-layer text decoder (embed 128), 64 latent queries.

    Fan-in init scale (std 1/sqrt(128)) for the text side and a larger vision init, so a random-init backbone still
    passes image and instruction differences on to the action token (the default std 0.02 nearly erases them).
    """
    return Kosmos2Config(
        text_config={"vocab_size": vocab_size, "embed_dim": TEXT_DIM, "layers": 2, "ffn_dim": 256,
                     "attention_heads": 4, "max_position_embeddings": 256, "dropout": 0.0, "attention_dropout": 0.0,
                     "activation_dropout": 0.0, "init_std": TEXT_DIM**-0.5},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": TINY_PATCH, "initializer_factor": 3.0},
        latent_query_num=LATENT_QUERY_NUM,
    )


def build_tiny_kosmos(seed: int = TINY_SEED) -> tuple[Kosmos2Model, Kosmos2Processor]:
    """Random-init tiny Kosmos-2 and its processor; the same `seed` gives the same weights."""
    processor = build_tiny_processor()
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's RNG stream
        torch.manual_seed(seed)
        model = Kosmos2Model(tiny_config(len(processor.tokenizer)))
    # Kosmos-2 draws the latent queries with std 1, which at random init drowns the image tokens in the projection's
    # attention (features ~1% image-dependent); at the text init scale the image reaches the features (~50%).
    with torch.no_grad():
        model.image_to_text_projection.latent_query.mul_(model.config.text_config.init_std)
    return model, processor


def vocab_fingerprint(tokenizer) -> str:
    """sha256 of the token -> id table: pretrained weights are only valid for the vocabulary they were trained with."""
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()


def build_tiny_pretrained(weights=None) -> tuple[Kosmos2Model, Kosmos2Processor]:
    """The tiny Kosmos-2 with its sim-pretrained weights (`scripts/pretrain_tiny.py`), package data by default."""
    path = weights or files("mobile_vla_sim.assets") / PRETRAINED_WEIGHTS
    model, processor = build_tiny_kosmos()
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise BackboneNotFoundError(f"tiny-pretrained weights {path} are missing or unreadable "
                                    f"({type(exc).__name__}); rebuild them with `{_REBUILD}`") from exc
    header = json.loads(metadata.get("mobile_vla_sim", "{}"))
    if header.get("format") != PRETRAINED_FORMAT or header.get("vocab") != vocab_fingerprint(processor.tokenizer):
        raise BackboneNotFoundError(f"tiny-pretrained weights {path} were trained for another tokenizer vocabulary "
                                    f"(tiny_kosmos.CORPUS changed since); rebuild them with `{_REBUILD}`")
    model.load_state_dict(state)
    return model, processor
