"""cerepro.objectives: one record per objective, its hyperparameters set from params by name, and
a new objective added as one function, one entry and one params fragment.

The toy objective of the last tests is registered the way another package would register one:
a module holding its record and its loss, and the package's entry point (``cerepro.objectives``)
in a ``.dist-info`` folder on ``PYTHONPATH``, as ``pip install`` would leave it. The params folder
only names it.
"""

import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from processes import run_ok, smoke_train_command

from cerepro import config as cfg
from cerepro import fragments, objectives
from cerepro.objectives import BASELINE_OBJECTIVE, PAPER_OBJECTIVES, Hyperparameter, Objective, ObjectiveError

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params"

TOY_MODULE = '''"""A toy objective from outside cerepro: its record (read without torch) and its loss."""

from cerepro.objectives import Hyperparameter, Objective

SQUARE_HINGE = Objective(
    "square-hinge",
    "toy_objectives.loss:square_hinge",
    hyperparameters=(Hyperparameter("margin", 1.0),),
)
HINGE = Objective("hinge", "toy_objectives.loss:square_hinge")  # cerepro's own slug: refused if registered
'''
TOY_LOSS = '''"""The toy's loss, in cerepro's calling convention."""

import torch


def square_hinge(scores, mask=None, *, labels=None, teacher=None, margin=1.0):
    """mean over the valid negatives of max(0, m - (s_pos - s_neg))^2; the positive in column 0.
    Shapes: scores and mask (Q, D); a scalar."""
    if labels is not None or teacher is not None:
        raise ValueError("square-hinge takes neither labels nor teacher")
    valid = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask
    s = scores.float()
    loss = torch.relu(margin - (s[:, :1] - s[:, 1:])) ** 2  # (Q, D - 1)
    return loss[valid[:, 1:]].mean()
'''
TOY_FRAGMENT = """# A toy objective (tests/test_objectives.py): squared hinge on MS MARCO-style triples.
training_source: triples
group_size: 2
batch_unit: group
margin: 100.0
"""


def install_toy(folder: Path, entry: str = "square-hinge = toy_objectives:SQUARE_HINGE") -> Path:
    """The toy package as an installer leaves it: its module and its entry point's metadata."""
    package = folder / "toy_objectives"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(TOY_MODULE, encoding="utf-8")
    (package / "loss.py").write_text(TOY_LOSS, encoding="utf-8")
    meta = folder / "toy_objectives-0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-objectives\nVersion: 0.1\n", encoding="utf-8")
    (meta / "entry_points.txt").write_text(f"[cerepro.objectives]\n{entry}\n", encoding="utf-8")
    return folder


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Put a toy package on sys.path and read the registry afresh (and again after the test)."""

    def put(entry: str = "square-hinge = toy_objectives:SQUARE_HINGE") -> None:
        monkeypatch.syspath_prepend(str(install_toy(tmp_path / "site", entry)))
        importlib.invalidate_caches()
        objectives._registry.cache_clear()

    yield put
    sys.modules.pop("toy_objectives", None)
    sys.modules.pop("toy_objectives.loss", None)
    objectives._registry.cache_clear()


# --- the records -------------------------------------------------------------------------------


def test_the_records_hold_the_paper_order_the_families_and_the_baseline():
    assert PAPER_OBJECTIVES == ("bce", "hinge", "infonce", "margin-mse", "distill-ranknet", "adr-mse")
    assert objectives.order() == [*PAPER_OBJECTIVES, "listnet-kl"]
    assert objectives.order(["listnet-kl", "zeta", "bce", "alpha"]) == ["bce", "listnet-kl", "alpha", "zeta"]
    assert BASELINE_OBJECTIVE == "bce"
    assert objectives.family("relative") == ("infonce", "margin-mse")
    assert objectives.family("llm-distillation") == ("distill-ranknet", "adr-mse")
    with pytest.raises(ObjectiveError, match="unknown family 'pairwise'"):
        objectives.family("pairwise")
    assert objectives.get("adr-mse").defaults == {"temperature": 1.0, "discount": "log2"}
    assert objectives.get("listnet-kl").defaults == {"temperature": 1.0, "teacher_temperature": None}
    assert objectives.get("bce").min_group_size == 1 and objectives.get("hinge").min_group_size == 2


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"slug": "Square_Hinge"}, "a slug is lower-case letters"),
        ({"loss": "toy_objectives.square_hinge"}, "is not 'module:function'"),
        ({"requires": {"teacher"}, "accepts": {"labels"}}, r"requires \['teacher'\] must be among accepts"),
        ({"accepts": {"clicks"}}, r"both among \('labels', 'teacher'\)"),
        ({"family": "pairwise"}, "family 'pairwise' is not one of"),
        ({"hyperparameters": (Hyperparameter("margin", 1.0), Hyperparameter("margin", 2.0))}, "declared twice"),
        ({"min_group_size": 0}, "min_group_size must be >= 1"),
    ],
)
def test_a_record_that_cannot_describe_an_objective_is_refused(fields, message):
    with pytest.raises(ObjectiveError, match=message):
        Objective(**{"slug": "square-hinge", "loss": "toy_objectives:square_hinge", **fields})


def test_a_record_whose_loss_does_not_take_its_hyperparameters_is_refused_when_resolved():
    wrong = Objective("hinge-two", "cerepro.training.losses:hinge", hyperparameters=(Hyperparameter("margin", 2.0),))
    with pytest.raises(ObjectiveError, match=r"must take the keyword argument margin=2.0 that the record declares"):
        wrong.function()
    missing = Objective("nowhere", "cerepro.training.nowhere:loss")
    with pytest.raises(ObjectiveError, match="cannot import its loss 'cerepro.training.nowhere:loss'"):
        missing.function()


@pytest.mark.parametrize(
    "parameter,value,message",
    [
        (Hyperparameter("temperature", 1.0, positive=True), 0, "must be > 0"),
        (Hyperparameter("temperature", 1.0, positive=True), "warm", r"expects float, got 'warm' \(str\)"),
        (Hyperparameter("temperature", 1.0, positive=True), True, "expects float, got True"),
        (Hyperparameter("temperature", 1.0), None, "expects float, got None"),
        (Hyperparameter("discount", "log2", kind=str, choices=objectives.DISCOUNTS), "log10", "must be one of"),
    ],
)
def test_a_hyperparameter_refuses_a_value_its_loss_cannot_take(parameter, value, message):
    with pytest.raises(ValueError, match=message):
        parameter.check(value)


def test_a_hyperparameter_takes_what_yaml_gives():
    assert Hyperparameter("margin", 1.0).check(2) == 2.0 and isinstance(Hyperparameter("margin", 1.0).check(2), float)
    assert Hyperparameter("lr", 1.0).check("1e-5") == 1e-5  # YAML 1.1 reads 1e-5 as a string
    assert Hyperparameter("discount", "log2", kind=str, choices=objectives.DISCOUNTS).check(None) is None
    assert Hyperparameter("teacher_temperature", None, positive=True).check(None) is None


# --- hyperparameters from params, by name --------------------------------------------------------


def test_every_hyperparameter_is_set_from_params_by_name(tmp_path):
    root = tmp_path / "params"
    shutil.copytree(PARAMS, root)
    with (root / "objectives" / "adr-mse.yaml").open("a") as f:
        f.write("discount: reciprocal\n")
    adr = cfg.load_config("tiny-bert", "adr-mse", 1, "smoke", root=root)
    assert adr.hyperparameters == {"temperature": 1.0, "discount": "reciprocal"}
    listnet = cfg.load_config("tiny-bert", "listnet-kl", 1, "smoke", {"teacher_temperature": 2}, root=root)
    assert listnet.hyperparameters == {"temperature": 1.0, "teacher_temperature": 2.0}
    hinge = cfg.load_config("tiny-bert", "hinge", 1, "smoke", {"margin": 0.5}, root=root)
    assert hinge.hyperparameters == {"margin": 0.5}
    assert cfg.load_config("tiny-bert", "bce", 1, "smoke", root=root).hyperparameters == {}
    # the config as params would write it: flat, and read back to the same config
    assert adr.to_dict()["discount"] == "reciprocal" and "margin" not in adr.to_dict()
    assert cfg.build_config([("config.json", adr.to_dict())]) == adr


@pytest.mark.parametrize(
    "objective,fragment,message",
    [
        (
            "bce",
            "margin: 2.0\n",
            r"bce\.yaml: key 'margin' = 2\.0: objective 'bce' has no hyperparameter 'margin' "
            r"\(its hyperparameters: none\)",
        ),
        ("adr-mse", "discount: log10\n", r"adr-mse\.yaml: key 'discount' = 'log10': must be one of"),
        ("listnet-kl", "teacher_temperature: -1\n", r"listnet-kl\.yaml: key 'teacher_temperature' = -1: must be > 0"),
        ("infonce", "temperature: hot\n", r"infonce\.yaml: key 'temperature' = 'hot': expects float"),
        (
            "margin-mse",
            "training_source: triples\n",
            r"margin-mse\.yaml: key 'training_source' = 'triples': objective "
            r"'margin-mse' needs teacher scores, which this source does not give",
        ),
        (
            "hinge",
            "group_size: 1\n",
            r"hinge\.yaml: key 'group_size' = 1: objective 'hinge' compares passages: "
            "needs at least 2 per group",
        ),
    ],
)
def test_a_bad_objective_setting_is_refused_naming_file_and_key(tmp_path, objective, fragment, message):
    root = tmp_path / "params"
    shutil.copytree(PARAMS, root)
    path = root / "objectives" / f"{objective}.yaml"
    kept = [line for line in path.read_text().splitlines() if line.split(":")[0] != fragment.split(":")[0]]
    path.write_text("\n".join(kept) + "\n" + fragment)
    with pytest.raises(fragments.ParamsError, match=message):
        cfg.load_config("tiny-bert", objective, 1, "smoke", root=root)


def test_a_fragment_of_an_objective_nobody_registered_is_refused(tmp_path):
    root = tmp_path / "params"
    shutil.copytree(PARAMS, root)
    (root / "objectives" / "square-hinge.yaml").write_text(TOY_FRAGMENT)
    with pytest.raises(
        fragments.ParamsError, match=r"key 'objective' = 'square-hinge': unknown objective; known: bce, "
    ):
        cfg.load_config("tiny-bert", "square-hinge", 1, "smoke", root=root)


# --- an objective of another package ------------------------------------------------------------


def test_another_packages_objective_registers_through_its_entry_point(plugin, tmp_path):
    plugin()
    assert objectives.order()[-1] == "square-hinge"
    record = objectives.get("square-hinge")
    assert record.defaults == {"margin": 1.0} and record.family is None and not record.paper
    root = tmp_path / "params"
    shutil.copytree(PARAMS, root)
    (root / "objectives" / "square-hinge.yaml").write_text(TOY_FRAGMENT)
    config = cfg.load_config("tiny-bert", "square-hinge", 1, "smoke", root=root)
    assert config.hyperparameters == {"margin": 100.0} and config.run_id == "tiny-bert.square-hinge.s1"
    torch = pytest.importorskip("torch")
    scores = torch.tensor([[3.0, 1.0], [0.0, 0.5]])
    assert record.function()(scores, margin=2.0).item() == pytest.approx((0.0 + 2.5**2) / 2)


@pytest.mark.parametrize(
    "entry,message",
    [
        ("square-hinge = toy_objectives:Objective", "is a type, not a cerepro.objectives.Objective"),
        ("squared = toy_objectives:SQUARE_HINGE", "the record's slug 'square-hinge' differs from the entry point's"),
        ("square-hinge = toy_objectives:MISSING", "cannot be loaded"),
        ("hinge = toy_objectives:HINGE", "objective 'hinge' is registered already"),
    ],
)
def test_a_broken_entry_point_is_named(plugin, entry, message):
    plugin(entry)
    with pytest.raises(ObjectiveError, match=rf"entry point {entry.split()[0]} = .*{message}"):
        objectives.registry()


@pytest.mark.slow
def test_a_new_objective_is_one_function_one_entry_and_one_fragment_trained_through_cerepro_run(tmp_path):
    """The toy objective, its package on PYTHONPATH and its fragment in a copy of params/, trains
    a tiny run through ``cerepro run train``: the notebook's kernel finds it as the command did,
    and its hyperparameter reaches the loss from the fragment (margin 100: the first losses are
    near 100², where margin 1 gives about 1)."""
    site = install_toy(tmp_path / "site")
    root = tmp_path / "params"
    shutil.copytree(PARAMS, root)
    (root / "objectives" / "square-hinge.yaml").write_text(TOY_FRAGMENT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "CEREPRO_PARAMS": str(root),
        "CEREPRO_RUNS": str(tmp_path / "runs"),
        "CEREPRO_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    overrides = "overrides={max_steps: 4, warmup_steps: 1, log_every: 1, checkpoint_every: 2, validation_datasets: []}"
    out = tmp_path / "out"
    run_ok(smoke_train_command(out, "square-hinge", overrides), env=env)
    config = json.loads((out / "config.json").read_text())
    assert config["objective"] == "square-hinge" and config["margin"] == 100.0
    losses = [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 4 and 8_000 < losses[0] < 12_500, losses  # (100 - (s_pos - s_neg))², scores near 0
    assert json.loads((out / "summary.json").read_text())["complete"]
