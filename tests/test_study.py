"""`mvla-sim study`: spec errors, nested balanced subsets, cached cells, the report, local vs Ray, the backends."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mobile_vla_sim.backends import BackendConfig, Resources, run_tasks
from mobile_vla_sim.errors import ConfigError
from mobile_vla_sim.eval.stats import adjust_pvalues, compare_methods
from mobile_vla_sim.study.cells import CELL_FILE, CellTask, balanced_pairs, cell_name, plan_data, scene_pairs
from mobile_vla_sim.study.report import method_comparisons, outcome_matrix
from mobile_vla_sim.study.run import StudyConfig, run_study
from mobile_vla_sim.study.spec import load_spec

#: 2 sizes × 2 modes × 1 seed, tiny backbone at 32 px, one epoch, 2 closed-loop episodes per cell.
TINY_SPEC = {
    "name": "tiny", "backbone": "tiny", "modes": ["frozen", "lora"], "sizes": [4, 8], "seeds": [0],
    "val_episodes": 2, "val_fraction": 0.3, "cpus_per_cell": 1,
    "generate": {"difficulty": "easy", "image_size": 32, "seed": 0},
    "train": {"epochs": 1, "lr_head": 0.001, "lora": {"lr_lora": 0.0001}},
    "eval": {"difficulty": "easy", "episodes": 1},
    "compare": {"max_windows": 4},
}
#: What may differ between two runs of one cell: timings and where it ran.
RUN_FIELDS = ("seconds", "host")


def write_spec(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**TINY_SPEC, **changes}))
    return path


def cells_of(out: Path) -> dict[str, dict]:
    """Finished cells by name, without the fields that describe the run rather than the result."""
    cells = {}
    for path in (out / "cells").glob(f"*/{CELL_FILE}"):
        cell = json.loads(path.read_text())
        cells[cell["name"]] = {k: v for k, v in cell.items() if k not in RUN_FIELDS}
    return cells


# --- spec ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    ({"sizez": [4]}, "unknown key(s) sizez"),
    ({"generate": {"image_sise": 32}}, "spec generate: unknown option 'image_sise'"),
    ({"generate": {"workers": 2}}, "workers cannot be set here"),
    ({"train": {"frozen": {"lr_lora": 0.1}}}, "apply only with --mode lora"),
    ({"eval": {"image_size": 64}}, "image_size cannot be set here"),
    ({"sizes": [5]}, "must be an even number"),
    ({"modes": ["frozen", "full"]}, "choose among frozen, lora"),
    ({"probe": {"suitee": "small"}}, "spec probe: unknown option 'suitee'"),
    ({"probe": {"suite": "nope"}}, "nope"),
])
def test_spec_errors_are_one_line(tmp_path, changes, message):
    with pytest.raises(ConfigError) as err:
        load_spec(write_spec(tmp_path / "spec.yaml", **changes))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_spec_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="study spec .* not found"):
        load_spec(tmp_path / "nope.yaml")


def test_shipped_specs_load():
    root = Path(__file__).parent.parent / "examples" / "studies"
    laptop, paper = load_spec(root / "laptop.yaml"), load_spec(root / "paper.yaml")
    assert laptop.backbone == "tiny-pretrained" and paper.sizes == (250, 500, 1000, 3000) and len(paper.seeds) == 3
    assert paper.train_config("lora", 0, Path("d"), Path("o")).lr_lora == 1e-5  # the real project's default


def test_a_fixed_episode_count_too_small_is_one_line(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", generate={**TINY_SPEC["generate"], "episodes": 4})
    with pytest.raises(ConfigError, match="generate.episodes 4 gives .* raise generate.episodes"):
        run_study(StudyConfig(spec=spec, out=tmp_path / "out"), progress=False, echo=lambda line: None)


# --- nested, balanced subsets --------------------------------------------------------------------------------
def fake_entries(pairs: int) -> list[dict]:
    """Manifest entries as `generate` writes them: pairs 2k/2k+1 share a scene, mix cycle 2:3:2, one failure."""
    from mobile_vla_sim.datasets.generate import MIX_CYCLE

    entries = []
    for i in range(2 * pairs):
        entries.append({"index": i, "file": f"e{i}.h5", "seed": 1000 + i // 2, "task": ("left", "right")[i % 2],
                        "difficulty": MIX_CYCLE[(i // 2) % len(MIX_CYCLE)], "success": i != 9})
    return entries


def test_subsets_are_nested_prefixes_side_and_difficulty_balanced(tmp_path):
    from mobile_vla_sim.datasets.manifest import write_manifest

    spec = load_spec(write_spec(tmp_path / "spec.yaml", val_episodes=10, val_fraction=0.2))
    plans = []
    for pairs in (60, 120):  # the same study after the data grew: nothing may move
        root = tmp_path / f"d{pairs}"
        root.mkdir()
        write_manifest(root, {"episodes": fake_entries(pairs)})
        plans.append(plan_data(root, spec))
    small, large = plans
    names = lambda ps: [e["file"] for p in ps for e in p.entries]  # noqa: E731
    assert names(small.val) == names(large.val) and len(small.val) == 5
    assert names(large.train)[:len(names(small.train))] == names(small.train)
    assert not set(names(small.val)) & set(names(large.train))
    assert "e8.h5" not in names(large.train) + names(large.val)  # its partner e9 failed: the pair is dropped
    order = large.train
    for n in range(1, len(order) + 1):
        prefix = [e for p in order[:n] for e in p.entries]
        assert sum(e["task"] == "left" for e in prefix) == n  # every prefix of pairs is exactly side-balanced
    assert [p.difficulty for p in order[:14]] == ["easy", "easy", "medium", "medium", "medium", "hard", "hard"] * 2
    assert len(scene_pairs(fake_entries(60))) == 59 and len(balanced_pairs([])) == 0


# --- the study end to end --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_study(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """The tiny study run once on the local backend: (spec, out, progress lines)."""
    root = tmp_path_factory.mktemp("study")
    spec, out, lines = write_spec(root / "spec.yaml"), root / "local", []
    run_study(StudyConfig(spec=spec, out=out), progress=False, echo=lines.append)
    return spec, out, lines


@pytest.mark.slow  # the tiny study takes ~1 min; slow on 2 cores; CI runs it (.ci/run runs the slow tests)
def test_study_writes_report_with_every_part(local_study):
    _, out, _ = local_study
    study = json.loads((out / "study.json").read_text())
    assert len(study["cells"]) == 4 and {c["val_episodes"] for c in study["cells"]} == {2}
    assert [row["train"] for row in study["data"]["sizes"]] == [4, 8]
    assert set(study["comparisons"]) == {"4", "8"}
    assert set(study["hypotheses"]["4"]["hypotheses"]) == {"H1", "H2", "H3"}
    assert study["real_project_table"]["real"]["frozen"]["val_loss"] == 0.027
    md = (out / "study.md").read_text()
    for part in ("Smallest size at which LoRA wins", "Spearman", "real Case 3", "noise floor", "Holm p",
                 "One training seed per method cannot support a method-level claim", "per-seed results"):
        assert part in md
    # one seed: no method-level claim at any size, but the family and the per-seed checkpoint tests are reported
    assert {c["decision"] for c in study["comparisons"].values()} == {"unsupported"}
    assert study["smallest_size_lora_better"] is None and study["adjustment"]["method"] == "holm"
    assert set(study["hypotheses"]["4"]["per_seed"][0]) == {"seed", "only_a", "only_b", "p_value", "p_adjusted"}
    # the noise floor: the largest size's seed-0 cell of each mode, on a second episode set sharing no scene
    floors = study["noise_floor"]
    assert set(floors) == {"frozen-n8-s0", "lora-n8-s0"}
    assert all(f["n_first"] == f["n_second"] == 2 and f["episode_seeds"] == [0, 1] for f in floors.values())
    for plot in study["plots"].values():
        assert (out / plot).stat().st_size > 1000
    subsets = sorted((out / "data").glob("gen-*/split-*/n*"))
    val_sets = [[e["file"] for e in json.loads((p / "dataset.json").read_text())["episodes"] if e["split"] == "val"]
                for p in subsets]
    assert len(subsets) == 2 and val_sets[0] == val_sets[1]  # one val split for every size


@pytest.mark.slow  # the tiny study takes ~1 min; slow on 2 cores; CI runs it (.ci/run runs the slow tests)
def test_second_run_trains_nothing(local_study, monkeypatch):
    import mobile_vla_sim.policies.train as train_module

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")
    monkeypatch.setattr(train_module, "train", no_training)
    spec, out, _ = local_study
    lines: list[str] = []
    run_study(StudyConfig(spec=spec, out=out), progress=False, echo=lines.append)
    assert "4 finished, 0 to run" in lines[0]


@pytest.mark.slow  # ~1 min each on 2 cores
def test_changed_option_reruns_only_the_cells_it_changes(local_study, tmp_path):
    spec, out, _ = local_study
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    before = cells_of(copy)
    changed = write_spec(tmp_path / "spec.yaml", train={"epochs": 1, "lr_head": 0.001, "lora": {"lr_lora": 0.0002}})
    lines: list[str] = []
    run_study(StudyConfig(spec=changed, out=copy), progress=False, echo=lines.append)
    assert "2 finished, 2 to run" in lines[0]
    after = {json.loads(p.read_text())["name"]: p.parent.name for p in (copy / "cells").glob(f"*/{CELL_FILE}")}
    assert len(list((copy / "cells").glob(f"*/{CELL_FILE}"))) == 6  # the old LoRA cells stay, for the old spec
    assert {n: before[n]["key"] for n in before if n.startswith("frozen")} == \
        {n: k for n, k in after.items() if n.startswith("frozen")}


@pytest.mark.slow  # ~1 min each on 2 cores
def test_probe_block_probes_every_cell_without_retraining(local_study, tmp_path, monkeypatch):
    """A spec's `probe` block probes each finished cell (here: the swap on 2 episodes) and reports a row per cell;
    adding it re-runs no cell, and a second run re-runs no probe."""
    import mobile_vla_sim.probe.run as probe_module
    import mobile_vla_sim.policies.train as train_module

    monkeypatch.setattr(train_module, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    spec, out, _ = local_study
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    suite = tmp_path / "suite.yaml"
    suite.write_text("swap_sides:\n")
    probed = write_spec(tmp_path / "spec.yaml", probe={"suite": str(suite), "text_episodes": 2})
    lines: list[str] = []
    run_study(StudyConfig(spec=probed, out=copy), progress=False, echo=lines.append)
    assert "4 finished, 0 to run" in lines[0] and any("4 robustness probes to run" in line for line in lines)
    study = json.loads((copy / "study.json").read_text())
    assert set(study["probes"]) == {"frozen-n4-s0", "frozen-n8-s0", "lora-n4-s0", "lora-n8-s0"}
    assert all(p["clean"]["n"] == 2 and p["text_lateral_flip"] is not None for p in study["probes"].values())
    assert "## Robustness probe" in (copy / "study.md").read_text()
    monkeypatch.setattr(probe_module, "probe", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-probed")))
    lines.clear()
    run_study(StudyConfig(spec=probed, out=copy), progress=False, echo=lines.append)
    assert not any("robustness probes" in line for line in lines)


def _synthetic(spec, rates: dict, seed: int = 0) -> tuple[list[CellTask], dict]:
    """Fake cells of `spec` and their outcomes: each seed's success probability from `rates[mode, size]`."""
    from mobile_vla_sim.eval.episodes import episode_set

    cells = [CellTask(f"{mode}{size}s{s}", cell_name(mode, size, s), mode, size, s, Path("."), Path("."), {}, {}, {},
                      1, 2) for size in spec.sizes for s in spec.seeds for mode in ("frozen", "lora")]
    rng = np.random.default_rng(seed)
    specs = episode_set(0, spec.eval["difficulty"], "both", spec.eval["episodes"])
    return cells, {c.key: {e.key: (e.difficulty, bool(rng.random() < rates[c.mode, c.size][c.seed])) for e in specs}
                   for c in cells}


def test_method_level_verdicts_count_training_runs_and_one_family(tmp_path):
    """LoRA runs beat frozen runs by ~50 points at size 100 and are alike at 50 (synthetic outcomes). The verdict
    is `compare_methods` with paired seeds, every size x group test adjusted as one family: with 3 seeds and 8
    tests even 50 points is not a method-level win (its raw p is below 0.05); with 4 seeds and one difficulty it
    is. One seed makes no claim."""
    spec = load_spec(write_spec(tmp_path / "spec.yaml", sizes=[50, 100], seeds=[0, 1, 2],
                                eval={"difficulty": "all", "episodes": 10}))
    rates = {("frozen", 50): (0.3, 0.5, 0.4, 0.35), ("lora", 50): (0.4, 0.35, 0.45, 0.4),
             ("frozen", 100): (0.4, 0.45, 0.35, 0.3), ("lora", 100): (0.9, 0.85, 0.88, 0.9)}
    cells, outcomes = _synthetic(spec, rates)
    compared, family = method_comparisons(spec, cells, outcomes, 0.05, "holm")
    assert family["tests"] == 8 and family["method"] == "holm"  # 2 sizes x (all + 3 difficulties)
    m = compared[100]["methods"]["all"]
    a, b = (outcome_matrix(_runs_of(cells, mode, 100), outcomes) for mode in ("frozen", "lora"))
    expected = compare_methods(a, b, seeds_paired=True)
    assert m["difference"] == pytest.approx(expected.difference) and m["p_value"] == pytest.approx(expected.p_value)
    groups = ("all", "easy", "medium", "hard")
    raw = [compared[n]["methods"][g]["p_value"] for n in (50, 100) for g in groups]
    np.testing.assert_allclose([compared[n]["methods"][g]["p_adjusted"] for n in (50, 100) for g in groups],
                               adjust_pvalues(raw, "holm"))
    assert m["p_value"] < 0.05 < m["p_adjusted"] and compared[100]["decision"] == "none"
    assert m["detectable"] > 0 and compared[100]["checkpoint_detectable"]["discordance_source"] == "observed"

    four = load_spec(write_spec(tmp_path / "four.yaml", sizes=[50, 100], seeds=[0, 1, 2, 3],
                                eval={"difficulty": "easy", "episodes": 30}))
    cells, outcomes = _synthetic(four, rates)
    compared, family = method_comparisons(four, cells, outcomes, 0.05, "holm")
    assert family["tests"] == 2  # one difficulty: its test is the overall one, counted once
    assert compared[100]["decision"] == "B" and compared[100]["lora_better"] and compared[50]["decision"] == "none"
    assert compared[100]["methods"]["easy"]["p_adjusted"] == compared[100]["methods"]["all"]["p_adjusted"]

    one = load_spec(write_spec(tmp_path / "one.yaml", sizes=[100], seeds=[0], eval={"difficulty": "easy"}))
    lone, _ = method_comparisons(one, [c for c in cells if c.seed == 0 and c.size == 100], outcomes, 0.05, "holm")
    assert lone[100]["decision"] == "unsupported" and not lone[100]["lora_better"]


def _runs_of(cells: list[CellTask], mode: str, size: int) -> list[CellTask]:
    return sorted((c for c in cells if c.mode == mode and c.size == size), key=lambda c: c.seed)


# --- Ray (the `ray_instance` fixture: conftest.py) ---------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _shipped_by_value():
    """Ray workers cannot import tests/ modules: this one's functions travel by value."""
    try:
        import ray
    except ImportError:
        yield
        return
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow  # ~1 min each on 2 cores
def test_local_and_ray_give_identical_cells(local_study, ray_instance, tmp_path):
    spec, out, _ = local_study
    ray_out = tmp_path / "ray"
    ray_out.mkdir()
    # The same data and the finished comparisons (keyed by the two cells' keys, which must come out the same) are
    # reused as a re-run would, so only the cells run on Ray.
    for part in ("data", "compare"):
        shutil.copytree(out / part, ray_out / part, symlinks=True)
    lines: list[str] = []
    run_study(StudyConfig(spec=spec, out=ray_out, cluster=BackendConfig(backend="ray")), progress=False,
              echo=lines.append)
    assert "0 finished, 4 to run on the ray backend" in lines[0]
    assert cells_of(ray_out) == cells_of(out)


def _square_or_die(x: int) -> int:
    if x == 2:
        os._exit(1)  # the worker process dies, as on a crashed node
    if x == 3:
        raise ValueError("three")
    return x * x


def test_backends_keep_every_other_result(ray_instance):
    seen = []
    local = run_tasks(_square_or_die, [0, 1, 3], on_result=lambda o: seen.append(o.index))
    assert [o.result for o in local] == [0, 1, None] and isinstance(local[2].error, ValueError) and seen == [0, 1, 2]
    remote = run_tasks(_square_or_die, [0, 1, 2, 3, 4], backend="ray", resources=Resources(num_cpus=1),
                       max_retries=0)
    assert [o.result for o in remote] == [0, 1, None, None, 16]
    assert isinstance(remote[3].error, ValueError)  # the task's own exception, unwrapped
    assert "died" in str(remote[2].error).lower() or "crash" in str(remote[2].error).lower()


def test_ray_missing_is_one_line(monkeypatch):
    import builtins

    from mobile_vla_sim.backends import check_backend

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "ray" else real_import(name, *a, **k))
    with pytest.raises(ConfigError, match=r"pip install 'mobile-vla-sim\[ray\]'"):
        check_backend("ray")


def test_cli_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    from mobile_vla_sim.cli import main

    result = CliRunner().invoke(main, ["study", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "study spec" in result.output and "not found" in result.output
    spec = write_spec(tmp_path / "spec.yaml", sizes=[4, 7])
    result = CliRunner().invoke(main, ["study", str(spec), "--out", str(tmp_path / "out"), "--backend", "ray"])
    assert result.exit_code == 1 and "must be an even number" in result.output
