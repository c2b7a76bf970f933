"""params/ and cerepro.config: every file loads, every grid expands, every bad input is named."""

import csv
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cerepro import config as cfg
from cerepro import fragments, grids, objectives, vocab

PARAMS = Path(__file__).resolve().parents[1] / "params"


@pytest.fixture
def params(tmp_path):
    """A writable copy of params/ to break on purpose."""
    root = tmp_path / "params"
    shutil.copytree(PARAMS, root)
    return root


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped params ------------------------------------------------------------------------


def test_every_params_file_parses():
    files = sorted(PARAMS.rglob("*.yaml"))
    assert len(files) > 20
    for path in files:
        data = yaml.safe_load(path.read_text())
        assert isinstance(data, dict), path
    for kind in ("backbones", "objectives", "profiles"):
        for path in (PARAMS / kind).glob("*.yaml"):
            fragments.read_fragment(path)  # flat


def test_every_grid_expands_and_validates():
    names = fragments.available("grids", PARAMS)
    assert {"paper", "demo", "demo-archs", "demo-minilm", "mini", "smoke", "released"} <= set(names)
    for name in names:
        grid = grids.load_grid(name, PARAMS)
        ids = [job.run_id for job in grid.evaluations]
        assert ids and len(set(ids)) == len(ids)
        assert grid.runs or name == "released"  # a checkpoints grid evaluates, it trains nothing


def test_paper_grid_is_162_runs_with_derived_ids_and_seeds():
    grid = grids.load_grid("paper", PARAMS)
    assert len(grid.run_ids) == 162
    seeds = [int(np.random.RandomState(12 + i).randint(2**32 - 1)) for i in range(3)]
    assert list(grid.seeds) == seeds
    assert f"bert-base.infonce.s{seeds[0]}" in grid.run_ids
    for run in grid.runs:
        assert run.run_id == f"{run.backbone}.{run.objective}.s{run.seed}"
        assert run.max_steps == 200_000 and run.warmup_steps == 5000 and run.grad_clip == 1.0
        assert run.optimizer == "adamw" and run.adam_eps == 1e-8 and run.weight_decay == 0.0
        assert len(run.eval_datasets) == 22 and run.candidate_depth == 1000
        assert run.train_data == "msmarco-passage"


def test_paper_protocol_values_per_backbone_and_objective():
    small = {"ettin-17m", "ettin-32m", "minilm-l12", "ettin-68m"}
    for b in [
        "ettin-17m",
        "ettin-32m",
        "minilm-l12",
        "ettin-68m",
        "bert-base",
        "electra-base",
        "roberta-base",
        "ettin-150m",
        "deberta-v3-base",
    ]:
        c = cfg.load_config(b, "hinge", 1, "paper", root=PARAMS)
        assert c.lr == (7e-6 if b in small else 1e-5)
        assert c.groups_per_step == (64 if b in small else 32)
        assert c.max_length == (8192 if b.startswith("ettin") else 512)
        assert c.lower_case == (b == "minilm-l12")  # xpmir forces do_lower_case for MiniLM-L12 only
        if b == "deberta-v3-base":
            # the DeBERTa rows: the authors' core_base_deberta rerun (bf16-mixed, max_doc_len 1024
            # under 512 positions, read by their code of March 2026: query whole, nDCG, no early stop)
            assert (c.precision, c.truncation, c.query_max_length, c.passage_max_length) == (
                "bf16-mixed",
                "passage",
                None,
                None,
            )
            assert (c.validation_measure, c.early_stopping_steps) == ("nDCG", 0)
            continue
        # the code that produced the table (xpmir / xpm-torch of 7-19 Feb 2026): "32-true" with no
        # TF32, query 32 / document 256 tokens re-tokenized, RR@10 on each set's best so far,
        # early stop after 100 epochs of 100 steps, files in order, InfoNCE per retrieved positive
        assert c.precision == "fp32"
        assert (c.truncation, c.query_max_length, c.passage_max_length) == ("retokenize", 32, 256)
        assert (c.validation_measure, c.validation_aggregate, c.early_stopping_steps) == ("RR@10", "best-so-far", 10000)
        assert (c.data_order, c.hard_negative_groups, c.document_text) == ("file", "per-positive", "datamaestro")
    for b in ["bert-base", "deberta-v3-base", "ettin-17m"]:  # the authors' later code: a variant
        c = cfg.load_config(b, "infonce", 1, "authors-head", root=PARAMS)
        assert (c.truncation, c.query_max_length, c.passage_max_length, c.precision) == ("passage", None, None, "tf32")
        assert (c.validation_measure, c.validation_aggregate, c.early_stopping_steps) == ("nDCG", "best-so-far", 0)
        assert (c.data_order, c.hard_negative_groups) == ("shuffled", "first-positive")
    assert len(grids.load_grid("authors-head", PARAMS).run_ids) == 162
    nce = cfg.load_config("bert-base", "infonce", 1, "paper", root=PARAMS)
    assert (nce.group_size, nce.groups_per_step, nce.pairs_per_step) == (8, 4, 32)
    lst = cfg.load_config("minilm-l12", "adr-mse", 1, "paper", root=PARAMS)
    assert (lst.group_size, lst.groups_per_step, lst.training_source) == (50, 1, "llm-lists")
    assert cfg.load_config("bert-base", "margin-mse", 1, "paper", root=PARAMS).training_source == "teacher-pairs"


def test_every_slug_resolves():
    registry = vocab.dataset_registry(PARAMS)
    datasets = registry["datasets"]
    assert len(datasets) == 22
    for members in registry["aggregates"].values():
        assert set(members) <= set(datasets)
    assert len(registry["aggregates"]["beir-13"]) == 13
    # a fragment per registered objective, a registered objective per fragment
    assert set(fragments.available("objectives", PARAMS)) == set(objectives.registry())
    for slug in fragments.available("backbones", PARAMS):
        hf_id = fragments.read_fragment(PARAMS / "backbones" / f"{slug}.yaml")["hf_id"]
        assert hf_id.startswith(("builtin:", "pypi:")) or hf_id.count("/") <= 1, hf_id
    for name in fragments.available("profiles", PARAMS):
        profile = fragments.read_fragment(PARAMS / "profiles" / f"{name}.yaml")
        for d in profile.get("eval_datasets", []) + profile.get("validation_datasets", []):
            assert vocab.is_known_dataset(d), (name, d)
    shorts = {v["short"] for v in datasets.values()} | set(registry["aggregates"])
    assert set(registry["paper_table_columns"]) <= shorts


def test_expected_table_matches_params():
    rows = list(csv.DictReader(open(PARAMS / "expected" / "paper-ndcg10.csv")))
    assert len(rows) == 54
    grid = grids.load_grid("paper", PARAMS)
    assert {(r["backbone"], r["objective"]) for r in rows} == {(b, o) for b in grid.backbones for o in grid.objectives}
    columns = vocab.dataset_registry(PARAMS)["paper_table_columns"]
    for r in rows:
        hf_id = fragments.read_fragment(PARAMS / "backbones" / f"{r['backbone']}.yaml")["hf_id"]
        assert r["hf_id"] == hf_id
        assert all(0 < float(r[c]) < 1 for c in columns)


# --- layering ----------------------------------------------------------------------------------


def test_layering_order_later_layers_win():
    c = cfg.load_config("bert-base", "adr-mse", 7, "demo", root=PARAMS)
    assert c.batch_size == 1  # objective (one list per step) over backbone (32)
    assert c.max_steps == 300  # profile over base
    c = cfg.load_config("bert-base", "adr-mse", 7, "demo", {"max_steps": 40, "lr": 3e-4}, root=PARAMS)
    assert (c.max_steps, c.lr, c.seed) == (40, 3e-4, 7)


def test_config_is_frozen_and_serialisable():
    c = cfg.load_config("tiny-bert", "bce", 1, "smoke", root=PARAMS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.lr = 1.0
    again = cfg.build_config([("dict", c.to_dict())])
    assert again == c


# --- bad params: each names the key, the value and the file -------------------------------------


def test_unknown_key_names_key_value_and_file(params):
    path = params / "backbones" / "bert-base.yaml"
    path.write_text(path.read_text() + "learning_rate: 0.1\n")
    with pytest.raises(fragments.ParamsError, match=r"bert-base\.yaml: unknown key 'learning_rate' \(value 0\.1\)"):
        cfg.load_config("bert-base", "bce", 1, "paper", root=params)


def test_wrong_type_names_key_value_and_file(params):
    write(params / "profiles" / "paper.yaml", "max_steps: lots\n")
    with pytest.raises(fragments.ParamsError, match=r"paper\.yaml: key 'max_steps' expects int, got 'lots'"):
        cfg.load_config("bert-base", "bce", 1, "paper", root=params)
    with pytest.raises(fragments.ParamsError, match=r"overrides: key 'compile' expects bool, got 1"):
        cfg.load_config("bert-base", "bce", 1, "demo", {"compile": 1}, root=params)


@pytest.mark.parametrize(
    "kind,args,message",
    [
        ("backbone", ("bert-huge", "bce", 1, "paper"), r"unknown backbone 'bert-huge'.*known: .*bert-base"),
        ("objective", ("bert-base", "listmle", 1, "paper"), r"unknown objective 'listmle'.*known: .*adr-mse"),
        ("profile", ("bert-base", "bce", 1, "huge"), r"unknown profile 'huge'.*known: .*demo"),
    ],
)
def test_unknown_slug(kind, args, message):
    with pytest.raises(fragments.ParamsError, match=message):
        cfg.load_config(*args, root=PARAMS)


def test_objective_slug_inside_a_fragment_must_exist(params):
    write(params / "objectives" / "bce.yaml", "objective: bce-typo\ntraining_source: triples\n")
    with pytest.raises(fragments.ParamsError, match=r"bce\.yaml: key 'objective' = 'bce-typo': unknown objective"):
        cfg.load_config("bert-base", "bce", 1, "paper", root=params)


@pytest.mark.parametrize(
    "override,message",
    [
        ({"lr": -1e-5}, r"overrides: key 'lr' = -1e-05: must be > 0"),
        ({"max_steps": 0}, r"key 'max_steps' = 0: must be > 0"),
        ({"batch_size": 30}, r"key 'batch_size' = 30: counts pairs and must be divisible by group_size \(8\)"),
        ({"warmup_steps": 300}, r"key 'warmup_steps' = 300: must be smaller than max_steps"),
        ({"precision": "fp8"}, r"key 'precision' = 'fp8': must be one of"),
        ({"training_source": "clicks"}, r"key 'training_source' = 'clicks'"),
        ({"eval_datasets": ["beir/imaginary"]}, r"unknown dataset 'beir/imaginary'"),
        (
            {"query_max_length": 500, "truncation": "passage"},
            r"key 'query_max_length' = 500: must be between 1 and max_length - 1",
        ),
        ({"query_max_length": 0}, r"key 'query_max_length' = 0: must be >= 1"),
        (
            {"validation_aggregate": "max"},
            r"key 'validation_aggregate' = 'max': must be one of \('best-so-far', 'current'\)",
        ),
        ({"early_stopping_steps": -1}, r"key 'early_stopping_steps' = -1: must be >= 0"),
        ({"data_order": "random"}, r"key 'data_order' = 'random': must be one of \('file', 'shuffled'\)"),
        ({"hard_negative_groups": "all"}, r"key 'hard_negative_groups' = 'all': must be one of"),
        ({"document_text": "title"}, r"key 'document_text' = 'title': must be one of \('datamaestro', 'ir-datasets'\)"),
        ({"truncation": "decode"}, r"key 'truncation' = 'decode': must be one of \('retokenize', 'passage'"),
        ({"lower_case": "yes"}, r"key 'lower_case' expects bool, got 'yes'"),
    ],
)
def test_impossible_values(override, message):
    with pytest.raises(fragments.ParamsError, match=message):
        cfg.load_config("tiny-bert", "infonce", 1, "demo", override, root=PARAMS)


def test_impossible_value_in_a_file_names_the_file(params):
    write(
        params / "backbones" / "tiny-bert.yaml",
        (params / "backbones" / "tiny-bert.yaml").read_text().replace("lr: 1.0e-3", "lr: -0.001"),
    )
    with pytest.raises(fragments.ParamsError, match=r"tiny-bert\.yaml: key 'lr' = -0\.001: must be > 0"):
        cfg.load_config("tiny-bert", "bce", 1, "demo", root=params)


def test_nested_mapping_and_non_mapping_refused(params):
    write(params / "profiles" / "demo.yaml", "optim:\n  lr: 1\n")
    with pytest.raises(fragments.ParamsError, match=r"demo\.yaml: key 'optim' holds a mapping"):
        cfg.load_config("tiny-bert", "bce", 1, "demo", root=params)
    write(params / "profiles" / "demo.yaml", "- a\n- b\n")
    with pytest.raises(fragments.ParamsError, match=r"demo\.yaml: expected a mapping"):
        cfg.load_config("tiny-bert", "bce", 1, "demo", root=params)


def test_bad_grid_files(params):
    folder = params / "grids"
    write(folder / "g1.yaml", "profile: demo\nbackbones: [tiny-bert]\nobjectives: [bce]\nseed: 3\n")
    with pytest.raises(fragments.ParamsError, match=r"g1\.yaml: unknown grid key\(s\) \['seed'\]"):
        grids.load_grid("g1", params)
    write(folder / "g2.yaml", "profile: demo\nbackbones: [tiny-bert, bert-giant]\nobjectives: [bce]\nseeds: 1\n")
    with pytest.raises(fragments.ParamsError, match=r"unknown backbone 'bert-giant'"):
        grids.load_grid("g2", params)
    write(folder / "g3.yaml", "profile: demo\nbackbones: [tiny-bert]\nobjectives: [bce]\nseeds: 0\n")
    with pytest.raises(fragments.ParamsError, match=r"g3\.yaml: key 'seeds' = 0"):
        grids.load_grid("g3", params)
    write(folder / "g4.yaml", "profile: demo\nbackbones: tiny-bert\nobjectives: [bce]\n")
    with pytest.raises(
        fragments.ParamsError, match=r"g4\.yaml: key 'backbones' = 'tiny-bert': expects a non-empty list"
    ):
        grids.load_grid("g4", params)
    with pytest.raises(fragments.ParamsError, match=r"unknown grid 'nope'"):
        grids.load_grid("nope", params)


# --- differences from the authors' code ------------------------------------------------------------


# The points of issue 25 (the code that produced the table), each of which must be listed with the
# version of the authors' code it describes and a status.
TABLE_POINTS = (
    "Query and document lengths",
    "Model-selection measure",
    "Aggregate over the validation sets",
    "Early stopping",
    "Training order of the teacher files",
    "MiniLM lower-casing",
    "InfoNCE groups",
    "Document text (titles)",
    "Training precision",
    "DeBERTa-v3 rows",
    "Released checkpoints",
)


def test_differences_table_covers_the_tables_code_and_the_readme_is_in_step():
    entries = fragments.differences(PARAMS)
    points = {e["point"]: e for e in entries}
    assert len(points) == len(entries)  # one row per point
    for point in TABLE_POINTS:
        assert point in points, point
        assert points[point]["status"] in fragments.DIFFERENCE_STATUSES
        assert "(" in points[point]["source"]  # every fact names its file and repository
    # the table's code and the later code are told apart, row by row
    assert {e["code"] for e in entries} == set(fragments.DIFFERENCE_CODES)
    assert points["Query and document lengths"]["code"] == "table"
    assert points["Query and document lengths (later code)"]["code"] == "later"
    assert points["Query and document lengths (later code)"]["status"] == "variant"
    readme = (PARAMS / "expected" / "README.md").read_text()
    table = readme.split("<!-- differences:start -->\n")[1].split("\n<!-- differences:end -->")[0]
    assert table == fragments.differences_markdown(PARAMS), (
        "params/expected/README.md is out of step: paste cerepro.fragments.differences_markdown() in"
    )
    assert table.splitlines()[0].startswith("| What | Their code |")
    assert len(table.splitlines()) == 2 + len(entries)
    assert "&lt;s&gt;" in table and "<s>" not in table  # RoBERTa's tokens, not HTML


def test_a_malformed_difference_entry_is_refused(tmp_path):
    (tmp_path / "expected").mkdir()
    (tmp_path / "expected" / "differences.yaml").write_text(
        "differences:\n- {point: x, code: table, authors: a, source: s, cerepro: c, status: maybe, effect: e}\n"
    )
    with pytest.raises(fragments.ParamsError, match=r"entry 1 \('x'\): status 'maybe' is not one of"):
        fragments.differences(tmp_path)
    (tmp_path / "expected" / "differences.yaml").write_text(
        "differences:\n- {point: x, code: head, authors: a, source: s, cerepro: c, status: fixed, effect: e}\n"
    )
    with pytest.raises(fragments.ParamsError, match=r"entry 1 \('x'\): code 'head' is not one of"):
        fragments.differences(tmp_path)
    (tmp_path / "expected" / "differences.yaml").write_text("differences:\n- {point: x}\n")
    with pytest.raises(fragments.ParamsError, match="entry 1 must have exactly the keys"):
        fragments.differences(tmp_path)


def test_a_fragment_is_read_as_it_is_now_and_refused_when_not_utf8(tmp_path):
    path = write(tmp_path / "x.yaml", "max_steps: 1\n")
    assert fragments.read_fragment(path) == {"max_steps": 1}
    write(path, "max_steps: 2\n")  # same size, maybe the same mtime: parsed again all the same
    assert fragments.read_fragment(path) == {"max_steps": 2}
    path.write_bytes(b"max_steps: \xe9\n")
    with pytest.raises(
        fragments.ParamsError, match=r"x\.yaml: not UTF-8 text \(invalid continuation byte at byte 11\)"
    ):
        fragments.read_fragment(path)
