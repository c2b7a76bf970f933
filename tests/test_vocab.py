"""The names every module shares, parsed once (cerepro.vocab): run ids, candidate sources, precisions.

Each type reads its string form with ``parse`` and writes it with ``str()``, so a name read and
written again is the same string; a malformed name is refused with a message naming the part that
is wrong, and params that hold one are refused naming the file and the key.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cerepro.config import build_config, load_config
from cerepro.fragments import ParamsError
from cerepro.grids import load_grid
from cerepro.vocab import (
    GPU_PEAK_TFLOPS,
    PRECISION_TABLE,
    PRECISIONS,
    SCORING_PRECISIONS,
    CandidateSource,
    Precision,
    PrecisionError,
    RunId,
    RunIdError,
    SourceError,
    system_of,
)

PARAMS = Path(__file__).resolve().parents[1] / "params"

# ---------------------------------------------------------------------------------------------
# Run ids


@pytest.mark.parametrize(
    ("text", "kind", "backbone", "objective", "seed", "system"),
    [
        ("bert-base.infonce.s42", "trained", "bert-base", "infonce", 42, "bert-base.infonce"),
        ("ettin-17m.margin-mse.s2431159283", "trained", "ettin-17m", "margin-mse", 2431159283, "ettin-17m.margin-mse"),
        ("tiny-bert.bce.s0", "trained", "tiny-bert", "bce", 0, "tiny-bert.bce"),
        ("bert-base.hinge.released", "released", "bert-base", "hinge", None, "bert-base.hinge.released"),
        ("baseline.ms-marco-minilm-l6-v2", "baseline", "baseline", "ms-marco-minilm-l6-v2", None,
         "baseline.ms-marco-minilm-l6-v2"),
        ("first-stage", "first-stage", "first-stage", "first-stage", None, "first-stage"),
    ],
)  # fmt: skip
def test_a_run_id_read_and_written_again_is_the_same_string(text, kind, backbone, objective, seed, system):
    run = RunId.parse(text)
    assert (run.kind, run.backbone, run.objective, run.seed) == (kind, backbone, objective, seed)
    assert str(run) == text and RunId.parse(str(run)) == run
    assert run.system == system_of(text) == system
    assert run.source == ("released" if kind == "released" else "trained")


def test_the_constructors_write_the_forms_params_and_tables_show():
    assert str(RunId.trained("bert-base", "infonce", 42)) == "bert-base.infonce.s42"
    assert str(RunId.released("bert-base", "infonce")) == "bert-base.infonce.released"
    assert str(RunId.baseline("monoelectra-base")) == "baseline.monoelectra-base"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("bert-base.infonce.s042", "its last part 's042' is neither s<seed>"),
        ("bert-base.infonce.seed1", "its last part 'seed1' is neither s<seed>"),
        ("bert-base.infonce.s", "its last part 's' is neither s<seed>"),
        ("bert-base..s1", "its objective '' must be a name"),
        (".infonce.s1", "its backbone '' must be a name"),
        (" bert-base.infonce.s1", "its backbone ' bert-base' must be a name"),
        ("bert-base.infonce", "has 2 dot-separated parts"),
        ("bert.base.infonce.s1", "has 4 dot-separated parts"),
        ("baseline.", "its objective '' must be a name"),
        ("", "has 1 dot-separated parts"),
    ],
)
def test_a_malformed_run_id_is_refused_naming_the_bad_part(text, named):
    with pytest.raises(RunIdError, match=f"run id {text!r}") as error:
        RunId.parse(text)
    assert named in str(error.value)


def test_a_run_id_is_refused_when_built_from_parts_it_cannot_hold():
    with pytest.raises(RunIdError, match="its backbone 'bert.base'") as error:
        RunId.trained("bert.base", "bce", 1)
    assert error.value.part == "backbone"
    with pytest.raises(RunIdError, match="its seed -1") as error:
        RunId.trained("bert-base", "bce", -1)
    assert error.value.part == "seed"
    with pytest.raises(RunIdError, match="a released run none"):
        RunId("released", "bert-base", "bce", 3)


def test_a_name_that_is_no_run_id_is_its_own_system():
    assert system_of("cross-encoder_ms-marco-MiniLM-L6-v2") == "cross-encoder_ms-marco-MiniLM-L6-v2"
    assert system_of("ettin-17m.bce.seedless") == "ettin-17m.bce.seedless"


def test_params_whose_names_cannot_form_a_run_id_are_refused_naming_file_and_key():
    fields = load_config("tiny-bert", "bce", 1, "demo").to_dict()
    with pytest.raises(
        ParamsError, match=r"^my/params\.yaml: key 'backbone' = 'tiny.bert': cannot be part of a run id"
    ):
        build_config([("my/params.yaml", {**fields, "backbone": "tiny.bert"})])


def test_every_grid_writes_run_ids_that_read_back():
    for grid in ("paper", "released", "demo"):
        for job in load_grid(grid).evaluations:
            assert str(RunId.parse(job.run_id)) == job.run_id


# ---------------------------------------------------------------------------------------------
# Candidate sources


@pytest.mark.parametrize(
    ("text", "kind", "run", "produced"),
    [
        ("bm25", "bm25", "", None),
        ("scoreddocs", "scoreddocs", "", None),
        ("run:my-own-run", "run", "my-own-run", None),
        ("run:runs/bm25-top100.trec", "run", "runs/bm25-top100.trec", None),
        ("run:unknown-model-top10", "run", "unknown-model-top10", None),
        ("run:splade-v3-distilbert-top1000", "run", "splade-v3-distilbert-top1000", ("splade-v3-distilbert", 1000)),
        ("run:tiny-splade-top20", "run", "tiny-splade-top20", ("tiny-splade", 20)),
    ],
)
def test_a_candidate_source_read_and_written_again_is_the_same_string(text, kind, run, produced):
    source = CandidateSource.parse(text)
    assert (source.kind, source.run) == (kind, run)
    assert str(source) == text and CandidateSource.parse(str(source)) == source
    found = source.produced()
    assert (found[0].slug, found[1]) == produced if produced else found is None


def test_a_produced_run_is_named_by_its_slug_and_depth():
    source = CandidateSource.produced_by("splade-v3-distilbert", 100)
    assert str(source) == "run:splade-v3-distilbert-top100"
    model, depth = source.produced()
    assert model.hf_id == "naver/splade-v3-distilbert" and depth == 100


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("bm26", "unknown candidate source 'bm26'"),
        ("BM25", "unknown candidate source 'BM25'"),
        ("splade-v3-distilbert-top1000", "unknown candidate source 'splade-v3-distilbert-top1000'"),
        ("run:", "the run name after 'run:' is empty"),
        ("run: my-run", "the run name after 'run:' is empty or padded"),
    ],
)
def test_a_malformed_candidate_source_is_refused_naming_it(text, named):
    with pytest.raises(SourceError, match=named):
        CandidateSource.parse(text)


@pytest.mark.parametrize("key", ["first_stage", "validation_first_stage"])
def test_params_with_an_unknown_candidate_source_are_refused_naming_file_and_key(key):
    with pytest.raises(ParamsError, match=rf"^overrides: key '{key}' = 'bm26': unknown candidate source"):
        load_config("tiny-bert", "bce", 1, "demo", {key: "bm26"})


def test_a_profile_whose_produced_run_is_shallower_than_its_depth_is_refused_naming_file_and_key(tmp_path):
    """The depth is said twice (the run's name and candidate_depth); a profile where they
    contradict (a top-100 run re-ranked to 1,000) is refused naming the profile file and the key."""
    root = tmp_path / "params"
    shutil.copytree(PARAMS, root)
    profile = root / "profiles" / "paper.yaml"
    text = profile.read_text(encoding="utf-8")
    assert "first_stage: run:splade-v3-distilbert-top1000\n" in text
    profile.write_text(text.replace("-top1000\n", "-top100\n"), encoding="utf-8")
    with pytest.raises(ParamsError, match=r"profiles/paper\.yaml: key 'first_stage' = 'run:splade-v3-distilbert-top100': "
                       r"a top-100 run cannot give candidate_depth = 1000"):  # fmt: skip
        load_config("bert-base", "bce", 0, "paper", root=root)


# ---------------------------------------------------------------------------------------------
# Precisions and the GPU peak table


def test_each_precision_says_its_matmul_setting_autocast_scoring_and_peak():
    got = {name: (p.matmul, p.autocast, p.scoring, p.peak) for name, p in PRECISION_TABLE.items()}
    assert got == {
        "fp32": ("highest", None, "fp32", "fp32"),
        "tf32": ("high", None, "tf32", "tf32"),
        "bf16-mixed": ("high", "bfloat16", "fp32", "bf16"),
        "bf16": (None, "bfloat16", "bf16", "bf16"),
    }
    for name in PRECISIONS:
        assert str(Precision.parse(name)) == name
        assert Precision.parse(Precision.parse(name).scoring, scoring=True).autocast is None  # never bf16 scores
    for name in SCORING_PRECISIONS[1:]:
        assert str(Precision.parse(name, scoring=True)) == name


@pytest.mark.parametrize(("name", "scoring"), [("bf16", False), ("bf16-mixed", True), ("auto", True), ("fp16", False)])
def test_a_precision_of_the_wrong_kind_is_refused_naming_it(name, scoring):
    kind = "scoring" if scoring else "training"
    with pytest.raises(PrecisionError, match=f"{kind} precision {name!r} is not one of"):
        Precision.parse(name, scoring=scoring)


def test_params_with_an_unknown_precision_are_refused_naming_file_and_key():
    with pytest.raises(
        ParamsError, match=r"^overrides: key 'precision' = 'bf16': must be one of \('fp32', 'tf32', 'bf16-mixed'\)"
    ):
        load_config("tiny-bert", "bce", 1, "demo", {"precision": "bf16"})


def test_one_gpu_peak_table_serves_the_plan_the_ledger_and_the_sizing():
    from cerepro.grid import plan
    from cerepro.retrieval import sizing

    assert plan.PLAN_PEAK_TFLOPS == {"fp32": 66.9, "tf32": 494.7, "bf16-mixed": 989.0}  # the book's plan
    assert sizing.ENCODE_PEAK_TFLOPS == 989.0
    # a device matches the first row its name contains: the PCIe part before the SXM one
    assert Precision.parse("tf32").peak_tflops("NVIDIA H100 PCIe") == 378.0
    assert Precision.parse("tf32").peak_tflops("NVIDIA H100 80GB HBM3") == 494.7
    assert Precision.parse("bf16-mixed").peak_tflops("NVIDIA GH200 480GB") == 989.0
    assert Precision.parse("fp32").peak_tflops("NVIDIA A100-SXM4-80GB") == 19.5
    assert Precision.parse("fp32").peak_tflops("Tesla T4") is None
    names = [row[0] for row in GPU_PEAK_TFLOPS]
    assert len(set(names)) == len(names) and all(len(row) == 4 for row in GPU_PEAK_TFLOPS)
