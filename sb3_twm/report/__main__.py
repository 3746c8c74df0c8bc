"""``python -m sb3_twm.report``: see :mod:`sb3_twm.report`."""

import argparse
import pathlib
import sys

from sb3_twm.report.results import ReportError, Run, read_results
from sb3_twm.report.scores import published_scores


def _paper_runs() -> list[Run]:
    paper = published_scores()
    return [
        Run(game, f"seed{seed}", (score,), paper["steps"], "sb3_twm/report/data/twm_scores.json")
        for game, scores in paper["scores"].items()
        for seed, score in enumerate(scores)
    ]


def main(argv: list[str] | None = None) -> int:
    """
    The command line.

    :param argv: The arguments (default: ``sys.argv[1:]``).
    :return: The exit status (2 for results that cannot be reported, with the reason).
    """
    parser = argparse.ArgumentParser(prog="python -m sb3_twm.report", description=__import__("sb3_twm.report").report.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "results", nargs="*", type=pathlib.Path,
        help="result JSON files of sb3_twm.evaluate, zoo evaluations.npz files, or folders of them",
    )  # fmt: skip
    parser.add_argument("--paper", action="store_true", help="report TWM's published scores (no results needed)")
    parser.add_argument("--out", "-o", type=pathlib.Path, default=pathlib.Path("report"), help="output folder")
    parser.add_argument("--name", default="sb3-twm", help="name of the evaluated algorithm in tables and plots")
    parser.add_argument("--reps", type=int, default=50_000, help="bootstrap replications (default 50000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    if bool(args.results) == args.paper:
        parser.error("give result files or folders, or --paper (not both)")
    if args.reps < 100:
        parser.error(f"--reps {args.reps} is too few for 95% intervals (use at least 1000; rliable's default is 50000)")

    from sb3_twm.report.report import PAPER, write_report

    try:
        runs = _paper_runs() if args.paper else read_results(args.results)
        name = PAPER if args.paper else args.name
        summary = write_report(runs, args.out, name, args.reps, args.seed, not args.no_plots, side_by_side=not args.paper)
    except ReportError as error:
        print(f"sb3_twm.report: {error}", file=sys.stderr)
        return 2
    for key, values in summary["aggregates"].items():
        line = ", ".join(f"{metric} {values[metric]['point']:.3f} [{values[metric]['low']:.3f}, {values[metric]['high']:.3f}]"
                         for metric in ("Mean", "Median", "IQM", "Optimality Gap"))  # fmt: skip
        print(f"{PAPER + ', same games' if key == PAPER and not args.paper else key}: {line}")
    print(f"Report in {args.out}/ (summary.md, games.csv, aggregates.json{'' if args.no_plots else ', plots'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
