"""The ``cerepro`` command: run notebooks, grids and the book without make.

cerepro run train --param backbone=tiny-bert --param objective=bce   one notebook
cerepro grid demo                                                    a grid through Snakemake
cerepro grid paper --slurm --partition gpu -- --slurm-no-account     on a SLURM cluster
cerepro plan paper                                                   jobs, data, GPU-hours
cerepro fetch paper                                                  download its inputs ahead
cerepro grid paper --slurm --offline                                 compute nodes without internet
cerepro runs demo                                                    a grid's run ids and what finished
cerepro book --grid demo                                             build the report
cerepro report                                                       demo grid + book (make report)
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from cerepro.data.datasets import InputError
from cerepro.data.trec import DataFormatError
from cerepro.fragments import ParamsError, load_yaml
from cerepro.grid.runner import RunnerError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cerepro", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="execute one notebook with papermill into one run folder (--out, "
        "default under runs/adhoc/; a grid's jobs write runs/<grid>/<run id>/)",
    )
    run.add_argument("notebook", help="data | train | evaluate | compare | explore")
    run.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a notebook parameter; VALUE is read as YAML (numbers, lists, strings)",
    )
    run.add_argument("--out", help="run folder (default runs/adhoc/<run>-<digest of the parameters>/<notebook>)")
    run.add_argument(
        "--force",
        action="store_true",
        help="start over: clear the run folder (checkpoints included) and rerun; without it "
        "a DONE folder is kept and an unfinished one resumes. Only a folder of this "
        "notebook's runs is cleared; any other is refused",
    )

    grid = sub.add_parser("grid", help="run a grid file (params/grids/<name>.yaml) through Snakemake")
    grid.add_argument("name")
    grid.add_argument("--cores", type=int, help="local cores (default: all)")
    grid.add_argument("--slurm", action="store_true", help="submit jobs with the shipped SLURM profile")
    grid.add_argument("--dry-run", "-n", action="store_true", help="list the jobs without running them")
    grid.add_argument("--book", action="store_true", help="build the book after the grid")
    grid.add_argument("--partition", help="with --slurm: the SLURM partition (default: the profile's)")
    grid.add_argument("--account", help="with --slurm: the SLURM account to charge")
    grid.add_argument(
        "--rerun-changed",
        action="store_true",
        help="rerun the finished runs whose params changed since they ran (their old "
        "folders are kept under runs/<grid>/.replaced/); without it they are listed",
    )
    grid.add_argument(
        "--offline",
        action="store_true",
        help="run every job without network access (Hugging Face hub offline, no downloads); "
        "refused before any job is submitted if an input was not brought by `cerepro fetch`",
    )
    grid.epilog = (
        "Options after -- go to Snakemake and its SLURM plugin unchanged, e.g. "
        "cerepro grid paper --slurm -- --slurm-status-command squeue --slurm-no-account"
    )

    fetch = sub.add_parser(
        "fetch",
        help="download everything a grid reads ahead of the run (teacher files, "
        "ir_datasets files, hub models), e.g. on a login node",
    )
    fetch.add_argument("name")
    fetch.add_argument("--dry-run", "-n", action="store_true", help="list the inputs and their state; download nothing")

    plan = sub.add_parser("plan", help="jobs, data and estimated GPU-hours of a grid")
    plan.add_argument("name")
    plan.add_argument("--json", action="store_true")

    runs = sub.add_parser("runs", help="a grid's run ids (the values of -p run_name=) and which of their jobs finished")
    runs.add_argument("name")

    book = sub.add_parser("book", help="build the jupyter-book report from existing results (no training)")
    book.add_argument("--grid", help="the grid whose results the book shows (default: $CEREPRO_BOOK_GRID, else demo)")
    report = sub.add_parser("report", help="run the offline demo grid, then build the book")
    report.add_argument("--grid", default="demo")
    report.add_argument("--cores", type=int)

    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    argv, passed = argv[:cut], argv[cut + 1 :]  # after --: for Snakemake, unparsed
    args = parser.parse_args(argv)
    if passed and args.command != "grid":
        parser.error("options after -- are for `cerepro grid` only")
    args.snakemake_args = passed
    try:
        return _dispatch(args)
    except (ParamsError, RunnerError, InputError, DataFormatError) as exc:
        print(f"cerepro: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be written (read-only, full, a size limit)
        if exc.filename is None:
            raise
        print(
            f"cerepro: error: {exc.filename}: {exc.strerror}; nothing was changed there: make it writable "
            "(or free space), or point CEREPRO_RUNS / CEREPRO_CACHE to a folder that is",
            file=sys.stderr,
        )
        return 2


def parse_params(items: list[str]) -> dict:
    """``KEY=VALUE`` strings, each VALUE read as YAML, or a RunnerError naming the parameter."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RunnerError(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key.strip()] = load_yaml(value)
        except yaml.constructor.ConstructorError as exc:
            raise RunnerError(
                f"--param {key.strip()}: value {value!r}: {exc.problem}; a parameter is "
                "a string, number, boolean, list or mapping"
            ) from None
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at column {where.column + 1}" if where is not None else ""
            why = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise RunnerError(
                f"--param {key.strip()}: value {value!r} is not valid YAML ({why}{at}); "
                "quote strings, e.g. -p 'overrides={max_steps: 10}'"
            ) from None
    return params


def _dispatch(args: argparse.Namespace) -> int:
    from cerepro.grid import engine
    from cerepro.grid.checks import check_notebook_parameters
    from cerepro.grid.plan import format_plan, plan
    from cerepro.grid.workflow import check_site_name, check_site_options, run_grid

    if args.command == "run":
        from cerepro.grid.runner import default_run_dir, is_done, run_notebook
        from cerepro.lock import LockedError, check_free

        params = parse_params(args.param)
        try:  # a folder another writer holds is refused at once, before the slower checks
            if args.out:
                check_free(args.out)
        except LockedError as exc:
            raise RunnerError(str(exc)) from None
        # the run the parameters describe is checked before a kernel starts or a folder is made
        check_notebook_parameters(args.notebook, params)
        out = args.out or default_run_dir(args.notebook, params)
        finished = is_done(out) and not args.force
        folder = run_notebook(args.notebook, out, params, force=args.force, progress=True)
        print(
            f"{args.notebook} already finished in {folder} (--force runs it again)"
            if finished
            else f"executed {args.notebook} -> {folder}"
        )
        return 0
    if args.command == "grid":
        if (args.partition or args.account) and not args.slurm:
            raise RunnerError("--partition and --account need --slurm")
        for option, value in (("--partition", args.partition), ("--account", args.account)):
            if value is not None:
                check_site_name(option, value)
        check_site_options(args.snakemake_args)
        return run_grid(
            args.name,
            cores=args.cores,
            dry_run=args.dry_run,
            slurm=args.slurm,
            book=args.book,
            partition=args.partition,
            account=args.account,
            extra=args.snakemake_args,
            rerun_changed=args.rerun_changed,
            offline=args.offline,
        )
    if args.command == "fetch":
        return _fetch(args.name, dry_run=args.dry_run)
    if args.command == "plan":
        p = plan(args.name)
        print(json.dumps(p, indent=2) if args.json else format_plan(p))
        return 0
    if args.command == "book":
        from cerepro.report.build import build_book

        return build_book(grid=args.grid)
    if args.command == "runs":
        print(engine.format_runs(engine.run_status(args.name)))
        return 0
    if args.command == "report":
        code = run_grid(args.grid, cores=args.cores, book=True)
        return code
    raise AssertionError(args.command)


def _fetch(name: str, *, dry_run: bool) -> int:
    """``cerepro fetch``: each input with what was done, its size and where it is; exit 1 while
    an input is broken or cannot be downloaded (the steps to provide it are printed)."""
    from cerepro.grid import fetch
    from cerepro.grid.checks import check_inputs
    from cerepro.grid.inputs import format_inputs
    from cerepro.grids import load_grid

    grid = load_grid(name)
    check_inputs(grid)  # unknown dataset ids and local folders, before any download
    if dry_run:
        items = fetch.grid_inputs(grid)
        print(f"grid {grid.name}: {len(items)} downloadable or licensed inputs\n" + format_inputs(items))
        return 0
    items = fetch.fetch_inputs(grid)
    print(f"grid {grid.name}: {len(items)} downloadable or licensed inputs\n" + format_inputs(items, done=True))
    left = [i for i in items if i.state in ("broken", "manual", "failed")]
    if left:
        print(f"cerepro: {len(left)} input(s) still not usable: {', '.join(i.name for i in left)}", file=sys.stderr)
        return 1
    print(
        f"every downloadable input of {grid.name} is in place: `cerepro grid {grid.name} --offline` "
        f"needs no network access"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
