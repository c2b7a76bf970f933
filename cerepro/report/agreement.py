"""How closely a run orders passages as its teacher does: Kendall's tau-b per teacher list,
averaged over the lists, per run.

Reads the teacher lists each finished evaluation of a trained run wrote
(``runs/<grid>/<run>/evaluate/teacher/``, :mod:`cerepro.evaluation.teacher`): the last lists of
the run's first pass over its training source, each passage's teacher score and the run's score.
Runs whose source has no teacher (BCE, hinge, InfoNCE), the first stage and released checkpoints
have none.

    lists = teacher_lists("demo")             # one row per (run, list, passage)
    teacher_agreement(lists)                  # per run: lists, mean and median tau, lists against
    kendall_tau([3, 2, 1], [0.9, 0.1, 0.5])   # 1/3: two pairs in the teacher's order, one against
    teacher_view(lists, [run_a, run_b])       # both runs, and the list each orders least like its teacher

This module reads result files and computes a statistic; it never builds a model.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from cerepro.evaluation.teacher import FOLDER
from cerepro.paths import runs_dir

LIST_COLUMNS = ["run", "source", "list", "position", "query_id", "doc_id", "teacher", "score", "seen"]
SUMMARY_COLUMNS = [
    "source",
    "lists",
    "passages per list",
    "lists read in training",
    "tau (mean)",
    "tau (median)",
    "lists with tau < 0",
]


def kendall_tau(teacher, run) -> float:
    """Kendall's tau-b between the teacher's and the run's scores of one list (scipy's
    ``kendalltau``): 1 when the run orders the passages as the teacher does, -1 when it reverses
    them; ties on either side count as tau-b counts them. 0 when either side gives every passage
    the same score (no order to agree with; a list of two with a tie, a collapsed scorer)."""
    from scipy.stats import kendalltau

    teacher, run = np.asarray(teacher, dtype=float), np.asarray(run, dtype=float)
    if teacher.shape != run.shape or teacher.ndim != 1:
        raise ValueError(
            f"a list's teacher and run scores must be two vectors of one length, got {teacher.shape} and {run.shape}"
        )
    if len(teacher) < 2 or np.ptp(teacher) == 0 or np.ptp(run) == 0:
        return 0.0
    return float(kendalltau(teacher, run).statistic)


def teacher_lists(grid: str) -> pd.DataFrame:
    """Every finished evaluation's teacher lists in ``runs/<grid>/``: one row per (run, list,
    passage) with the teacher's score, the run's and whether the run's training read the list."""
    frames = []
    for done in sorted((runs_dir() / grid).glob("*/evaluate/DONE")):
        facts_file = done.parent / FOLDER / "teacher.json"
        if not facts_file.is_file():
            continue
        facts = json.loads(facts_file.read_text(encoding="utf-8"))
        lists = pd.read_csv(
            facts_file.with_name("lists.tsv"),
            sep="\t",
            dtype={"list": str, "query_id": str, "doc_id": str, "seen": "boolean"},
        )
        frames.append(lists.assign(run=facts["run"], source=facts["source"]))
    if not frames:
        return pd.DataFrame(columns=LIST_COLUMNS)
    return pd.concat(frames, ignore_index=True)[LIST_COLUMNS]


def per_list(lists: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau-b of each (run, list), with the list's query, its passages and whether the
    run's training read it."""
    rows = [
        {
            "run": run,
            "list": name,
            "query_id": part["query_id"].iloc[0],
            "passages": len(part),
            "seen": part["seen"].iloc[0],
            "tau": kendall_tau(part["teacher"], part["score"]),
        }
        for (run, name), part in lists.groupby(["run", "list"], sort=False)
    ]
    return pd.DataFrame(rows, columns=["run", "list", "query_id", "passages", "seen", "tau"])


def teacher_agreement(lists: pd.DataFrame) -> pd.DataFrame:
    """Per run (``lists``: :func:`teacher_lists`): its teacher's source, how many lists, the
    passages per list (median), how many lists its training read (blank without a train ledger),
    Kendall's tau-b between its scores and the teacher's (mean and median over the lists) and the
    lists it orders against the teacher (tau < 0)."""
    taus = per_list(lists)
    if taus.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS, index=pd.Index([], name="run"))
    seen = taus["seen"].astype("boolean")
    rows = {}
    for run, part in taus.groupby("run", sort=False):
        read = seen.loc[part.index]
        rows[run] = {
            "source": lists.loc[lists["run"] == run, "source"].iloc[0] if "source" in lists else "",
            "lists": len(part),
            "passages per list": float(part["passages"].median()),
            "lists read in training": pd.NA if read.isna().all() else int(read.fillna(False).sum()),
            "tau (mean)": float(part["tau"].mean()),
            "tau (median)": float(part["tau"].median()),
            "lists with tau < 0": int((part["tau"] < 0).sum()),
        }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=SUMMARY_COLUMNS)
    table.index.name = "run"
    return table


def teacher_ranking(lists: pd.DataFrame, run: str, list_name: str | None = None) -> pd.DataFrame:
    """One teacher list as both rank it: each passage in the teacher's order with the teacher's
    score and rank, the run's score and rank. Default list: the one the run orders least like the
    teacher (lowest tau, then the first)."""
    mine = lists[lists["run"] == run]
    if mine.empty:
        have = ", ".join(dict.fromkeys(lists["run"])) or "none"
        raise ValueError(f"run {run!r} has no teacher lists; runs with some: {have}")
    if list_name is None:
        taus = per_list(mine)
        list_name = taus.loc[taus["tau"].idxmin(), "list"]
    part = mine[mine["list"] == list_name]
    if part.empty:
        raise ValueError(f"run {run!r} has no teacher list {list_name!r}; its lists: {mine['list'].iloc[0]} ...")
    table = part[["doc_id", "teacher", "score"]].reset_index(drop=True)
    table.insert(2, "teacher rank", table["teacher"].rank(ascending=False, method="min").astype(int))
    table["run rank"] = table["score"].rank(ascending=False, method="min").astype(int)
    table = table.sort_values(["teacher rank", "doc_id"], kind="stable", ignore_index=True)
    table.attrs.update(
        run=run, list=list_name, query_id=part["query_id"].iloc[0], tau=kendall_tau(part["teacher"], part["score"])
    )
    return table


def teacher_view(lists: pd.DataFrame, runs) -> list:
    """The runs' agreement with their teacher (Kendall's tau-b on the teacher's lists) and, for
    each run that has one, the list it orders least like its teacher, as IPython display objects;
    one line when neither run was trained from a teacher."""
    from IPython.display import Markdown

    runs = [r for r in dict.fromkeys(runs) if r in set(lists["run"])]
    if not runs:
        return [
            Markdown(
                "*Agreement with the teacher: neither run has teacher lists (only runs trained from "
                "teacher scores do: MarginMSE, DistillRankNet, ADR-MSE).*"
            )
        ]
    shown = [teacher_agreement(lists[lists["run"].isin(runs)]).loc[runs]]
    for run in runs:
        table = teacher_ranking(lists, run)
        shown.append(
            Markdown(
                f"`{run}`'s teacher list least like its teacher ({table.attrs['list']}, query "
                f"`{table.attrs['query_id']}`, tau {table.attrs['tau']:+.3f}):"
            )
        )
        shown.append(table)
    return shown
