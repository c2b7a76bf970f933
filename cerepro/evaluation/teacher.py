"""A run's agreement with its teacher: the teacher's own lists re-scored by the run's model.

Where a run's training source has teacher scores (``teacher-pairs``: Hofstaetter et al.'s T2
ensemble, one pair per group; ``llm-lists``: RankZephyr's lists), the evaluate job scores the
``LISTS`` lists the run reads last in its first pass over that source (its own seed, order and
group size) with the model and settings it evaluates, and writes each passage's teacher score and
the run's score to ``teacher/lists.tsv``, beside ``teacher/teacher.json`` (the source, the lists,
the groups the run's training read). :func:`cerepro.report.agreement.teacher_agreement` turns them
into Kendall's tau.

The teacher has no scores on a run's validation sets (its files cover training queries only), so
these lists stand in for validation lists: the last of the run's first pass, which its training
never read unless it read its whole source; ``seen`` says so list by list, from the train ledger's
steps and the run's groups per step.

This module scores lists with a model (torch, through :func:`cerepro.evaluation.rerank.rerank`,
imported when it scores); the statistic is the report's.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd

from cerepro.paths import runs_dir, write_text_atomic
from cerepro.vocab import SOURCE_PROVIDES

LISTS = 100  # teacher lists per run (a pair counts as a list of two)
FOLDER = "teacher"  # under a run's evaluate folder
COLUMNS = ["list", "position", "query_id", "doc_id", "teacher", "score", "seen"]


def has_teacher(config) -> bool:
    """Whether ``config``'s training source gives teacher scores."""
    return "teacher" in SOURCE_PROVIDES[config.training_source]


def teacher_lists(config, lists: int = LISTS) -> list:
    """The last ``lists`` groups of the run's first pass over its training source (its seed,
    order and group size), as :class:`cerepro.data.training_data.Group` with teacher scores;
    none when the source has no teacher."""
    from cerepro.data.training_data import open_source, source_counts

    if not has_teacher(config):
        return []
    per_epoch = source_counts(config.training_source, config.train_data, llm_list=config.llm_list).used
    count = min(lists, per_epoch)
    return list(itertools.islice(open_source(config).groups(per_epoch - count), count))


def groups_read(grid: str, config) -> int | None:
    """The groups the run's training read: its train ledger's steps x its groups per step
    (None without a ledger)."""
    ledger = runs_dir() / grid / config.run_id / "train" / "ledger.json"
    if not ledger.is_file():
        return None
    return int(json.loads(ledger.read_text(encoding="utf-8"))["steps"]) * config.groups_per_step


def lists_table(groups, read: int | None) -> tuple[pd.DataFrame, dict[str, str], dict[str, str]]:
    """``groups`` as one row per real passage (list, position, query_id, doc_id, teacher, seen),
    with the query text of each list and the text of each passage. A list is named by its order
    here (``L00000``, ...): one query may have several (a pair per group)."""
    rows, queries, texts = [], {}, {}
    for i, group in enumerate(groups):
        name = f"L{i:05d}"
        queries[name] = group.query
        seen = pd.NA if read is None else group.position < read
        listed = {}  # a passage once per list
        for doc_id, passage, teacher, real in zip(group.doc_ids, group.passages, group.teacher, group.mask):
            if real and doc_id not in listed:
                listed[doc_id] = teacher
                texts[doc_id] = passage
        rows += [(name, group.position, group.query_id, doc_id, teacher, seen) for doc_id, teacher in listed.items()]
    return pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "score"]), queries, texts


def score_teacher_lists(grid, run_id: str, scorer, tokenizer, settings, folder, *, lists: int = LISTS):
    """Score the teacher's lists of ``grid``'s (a :class:`cerepro.grids.Grid`) trained run
    ``run_id`` with ``scorer`` at the evaluation's ``settings`` (lengths, truncation, precision)
    and write ``lists.tsv`` and ``teacher.json`` into ``folder``. Returns the lists (with the
    run and its source), or None with nothing written for the first stage, a released
    checkpoint, an ad hoc model or a training source without a teacher."""
    from cerepro.data.tokenize import encoding_options
    from cerepro.evaluation.rerank import rerank

    job = {e.run_id: e for e in grid.evaluations}.get(run_id)
    if scorer is None or job is None or not job.trained or not has_teacher(job.config):
        return None
    config = job.config
    groups = teacher_lists(config, lists)
    read = groups_read(grid.name, config)
    table, queries, texts = lists_table(groups, read)
    candidates = table[["list", "doc_id"]].rename(columns={"list": "query_id"})
    ranked = rerank(
        scorer,
        tokenizer,
        candidates,
        queries,
        texts,
        **encoding_options(settings),
        precision=settings.precision,
        progress=False,
    )
    scores = ranked.set_index(["query_id", "doc_id"])["score"]
    table["score"] = scores.loc[list(zip(table["list"], table["doc_id"]))].to_numpy()
    table = table[COLUMNS]
    folder = Path(folder)
    write_text_atomic(folder / "lists.tsv", table.to_csv(sep="\t", index=False))
    facts = {
        "run": run_id,
        "source": config.training_source,
        "train_data": config.train_data,
        "llm_list": config.llm_list if config.training_source == "llm-lists" else None,
        "lists": len(groups),
        "first_position": int(groups[0].position) if groups else None,
        "groups_read": read,
    }
    write_text_atomic(folder / "teacher.json", json.dumps(facts, indent=1) + "\n")  # last: the lists are whole
    return table.assign(run=run_id, source=config.training_source)
