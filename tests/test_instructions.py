"""Named instruction sets (the real project's exact sentences), file-name instructions and tokenizer coverage."""

from __future__ import annotations

import pytest

from mobile_vla_sim.datasets import instruction_from_episode_name
from mobile_vla_sim.envs.tasks import get_family
from mobile_vla_sim.envs.tasks.detour import INSTRUCTION_SETS, KOREAN_FALLBACK
from mobile_vla_sim.errors import ConfigError, DatasetError
from mobile_vla_sim.policies.tiny_kosmos import build_tiny_tokenizer

REAL_NAME = "episode_20251203_142501_1box_hori_right_core_medium.h5"
DETOUR = get_family("detour")
TASKS, instruction_for, instruction_set = DETOUR.tasks, DETOUR.instruction, DETOUR.instruction_set


def test_named_sets_hold_the_exact_sentences():
    assert instruction_for("left") == "Navigate around obstacles and reach the front of the beverage bottle on the left"
    assert instruction_for("right", "cup") == "Navigate around the obstacle on the right side and reach the cup"
    assert instruction_set("korean") == {"left": "가장 왼쪽 외곽으로 돌아 컵까지 가세요",
                                         "right": "가장 오른쪽 외곽으로 돌아 컵까지 가세요"}
    assert KOREAN_FALLBACK == "컵까지 가세요"
    assert instruction_set("inference") == {"left": "Navigate to the left bottle",
                                            "right": "Navigate to the right bottle"}
    assert instruction_for("left", "basket") == "Navigate to the brown pot on the left"
    assert instruction_for("right", "basket") == "Navigate to the brown pot on the right"
    assert set(INSTRUCTION_SETS) == {"bottle", "cup", "korean", "inference", "basket"}
    for sides in INSTRUCTION_SETS.values():
        assert tuple(sides) == TASKS and sides["left"] != sides["right"]


def test_user_templates_and_errors():
    assert instruction_for("right", "go {side} now") == "go right now"
    assert instruction_set("pass the box on the {side}")["left"] == "pass the box on the left"
    with pytest.raises(ConfigError, match="korean.*'\\{side\\}'"):
        instruction_for("left", "nonsense")
    with pytest.raises(ValueError, match="unknown task"):
        instruction_for("up", "korean")
    instruction_set("korean")["left"] = "changed"  # callers get a copy: the built-in set stays intact
    assert instruction_for("left", "korean") == "가장 왼쪽 외곽으로 돌아 컵까지 가세요"


def test_instruction_from_episode_file_name():
    assert instruction_from_episode_name(REAL_NAME) == "가장 오른쪽 외곽으로 돌아 컵까지 가세요"
    assert instruction_from_episode_name(f"/data/{REAL_NAME}", "inference") == "Navigate to the right bottle"
    synthetic = "episode_20260101_000000_2box_hori_left_variant_far_hard_s12.h5"
    assert instruction_from_episode_name(synthetic, "bottle") == instruction_for("left")
    assert instruction_from_episode_name("episode_20251203_142501_cup.h5", fallback=KOREAN_FALLBACK) == KOREAN_FALLBACK
    with pytest.raises(DatasetError, match="follows no task family's naming"):
        instruction_from_episode_name("episode_20251203_142501_cup.h5")


@pytest.mark.parametrize("name", sorted(INSTRUCTION_SETS))
def test_tiny_tokenizer_knows_every_built_in_sentence(name):
    tok = build_tiny_tokenizer()
    sentences = [*INSTRUCTION_SETS[name].values()] + ([KOREAN_FALLBACK] if name == "korean" else [])
    for sentence in sentences:
        ids = tok(sentence)["input_ids"]
        assert ids and tok.unk_token_id not in ids, (sentence, tok.convert_ids_to_tokens(ids))
        assert tok.decode(ids) == sentence  # lossless: every character is in the vocabulary
    left, right = (tok(s)["input_ids"] for s in INSTRUCTION_SETS[name].values())
    assert left != right


@pytest.mark.slow  # slow on 2 cores; CI runs it (.ci/run runs the slow tests)
def test_training_on_filename_instructions_is_what_eval_replays(tiny_dataset, tmp_path):
    """The real project's mismatch: Korean sentences rebuilt from file names in training, English at deployment."""
    import json

    from click.testing import CliRunner

    from mobile_vla_sim.cli import main
    from mobile_vla_sim.policies.checkpoint import read_checkpoint

    ckpt = tmp_path / "ko.ckpt"
    trained = CliRunner().invoke(main, ["train", "--data", str(tiny_dataset), "--backbone", "tiny", "--epochs", "1",
                                        "--instructions", "korean", "--out", str(ckpt)])
    assert trained.exit_code == 0, trained.output
    assert read_checkpoint(ckpt)[1]["dataset_config"]["instructions"] == "korean"
    base = ["eval", "--policy", str(ckpt), "--difficulty", "easy", "--episodes", "1", "--workers", "1"]
    as_trained = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "a")])
    assert as_trained.exit_code == 0 and "Warning" not in as_trained.output, as_trained.output
    episodes = json.loads((tmp_path / "a" / "results.json").read_text())["episodes"]
    assert {e["instruction"] for e in episodes} == {INSTRUCTION_SETS["korean"]["left"],
                                                   INSTRUCTION_SETS["korean"]["right"]}
    english = CliRunner().invoke(main, [*base, "--instructions", "inference", "--out", str(tmp_path / "b")])
    assert english.exit_code == 0 and "trained on instructions='korean'" in english.output, english.output
