"""
The report of an Atari 100k evaluation: a per-game table, aggregate human-normalised scores with stratified-bootstrap
confidence intervals (computed by ``rliable``: Agarwal et al., "Deep Reinforcement Learning at the Edge of the
Statistical Precipice", NeurIPS 2021), the standard plots, and TWM's published scores side by side.
"""

import csv
import json
import pathlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_twm.report.results import ReportError, Run, score_matrix
from sb3_twm.report.scores import ATARI_100K_GAMES, human_normalized, published_scores

__all__ = ["AGGREGATES", "PAPER", "Aggregates", "aggregates", "seeded_numpy", "write_report"]

# rliable's aggregate metrics, in the order of its plots.
AGGREGATES = ("Mean", "Median", "IQM", "Optimality Gap")
PAPER = "TWM (paper)"


def _rliable() -> Any:
    try:
        from rliable import library, metrics
    except ImportError as error:
        raise ImportError(
            "The report computes its aggregates with rliable: pip install 'sb3-twm[report]' (or, from a clone, "
            "pip install -e '.[report]')."
        ) from error
    return library, metrics


@dataclass(frozen=True)
class Aggregates:
    """
    Aggregate human-normalised scores of one algorithm.

    :param point: Mean, median, IQM and optimality gap (``AGGREGATES``).
    :param low: Lower ends of their 95% stratified-bootstrap confidence intervals.
    :param high: Upper ends.
    :param runs: Runs per game.
    :param games: The games aggregated over.
    """

    point: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    runs: int
    games: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """:return: ``{metric: {"point", "low", "high"}}`` plus ``runs`` and ``games``."""
        values = {
            name: {"point": point, "low": low, "high": high}
            for name, point, low, high in zip(AGGREGATES, self.point, self.low, self.high)
        }
        return {**values, "runs": self.runs, "games": list(self.games)}


@contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """
    numpy's global generator seeded with ``seed`` inside, as it was outside: rliable's stratified bootstrap draws its
    resamples from it (``StratifiedBootstrap.update_indices``), whatever ``random_state`` it is given.

    :param seed: The seed.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def aggregates(
    normalized: dict[str, np.ndarray], games: list[str], reps: int = 50_000, seed: int = 0
) -> dict[str, Aggregates]:
    """
    Aggregate scores with rliable's stratified bootstrap (over runs, within each game).

    :param normalized: Algorithm -> ``(runs, games)`` human-normalised scores.
    :param games: The games (columns).
    :param reps: Bootstrap replications.
    :param seed: Seed of the bootstrap.
    :return: Algorithm -> its aggregates.
    """
    library, metrics = _rliable()

    def all_metrics(scores: np.ndarray) -> np.ndarray:
        return np.array(
            [
                metrics.aggregate_mean(scores),
                metrics.aggregate_median(scores),
                metrics.aggregate_iqm(scores),
                metrics.aggregate_optimality_gap(scores),
            ]
        )

    with seeded_numpy(seed):
        points, intervals = library.get_interval_estimates(normalized, all_metrics, reps=reps)
    return {
        name: Aggregates(
            tuple(float(value) for value in points[name]),
            tuple(float(value) for value in intervals[name][0]),
            tuple(float(value) for value in intervals[name][1]),
            int(scores.shape[0]),
            tuple(games),
        )
        for name, scores in normalized.items()
    }


def write_report(
    runs: list[Run],
    out: pathlib.Path,
    name: str = "sb3-twm",
    reps: int = 50_000,
    seed: int = 0,
    plots: bool = True,
    side_by_side: bool = True,
) -> dict[str, Any]:
    """
    Write the report of ``runs`` into ``out``: ``games.csv`` (per game), ``aggregates.json``, ``summary.md`` and the
    plots ``aggregates.png``, ``performance_profile.png``, ``games.png`` (TWM's published scores side by side).

    :param runs: The evaluated runs (``read_results``), all at the same number of env steps, as many per game.
    :param out: The output folder (created).
    :param name: The name of the evaluated algorithm in tables and plots.
    :param reps: Bootstrap replications of the confidence intervals.
    :param seed: Seed of the bootstrap.
    :param plots: Whether to write the plots (matplotlib).
    :param side_by_side: Whether to put TWM's published scores next to ``runs`` (off when ``runs`` are those).
    :return: What ``aggregates.json`` holds.
    """
    if not runs:
        raise ReportError("No runs to report.")
    steps = sorted({run.steps for run in runs})
    if len(steps) > 1:
        by_steps = {step: sorted({f"{run.game}/{run.name}" for run in runs if run.steps == step}) for step in steps}
        detail = "; ".join(
            f"{step}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}" for step, names in by_steps.items()
        )
        raise ReportError(
            f"The runs were trained for different numbers of env steps ({detail}): aggregates compare runs at one "
            "budget. Report each budget on its own."
        )
    if side_by_side and name == PAPER:
        raise ReportError(f"{PAPER!r} names the published scores; give the evaluated runs another name.")
    games = [game for game in ATARI_100K_GAMES if any(run.game == game for run in runs)]
    missing = [game for game in ATARI_100K_GAMES if game not in games]
    matrix = score_matrix(runs, games)
    paper = published_scores()
    paper_matrix = np.array([paper["scores"][game] for game in games], dtype=np.float64).T
    normalized = {name: np.stack([human_normalized(game, matrix[:, index]) for index, game in enumerate(games)], axis=1)}
    if side_by_side:
        normalized[PAPER] = np.stack(
            [human_normalized(game, paper_matrix[:, index]) for index, game in enumerate(games)], axis=1
        )
    results = aggregates(normalized, games, reps, seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = _game_rows(runs, games, paper["scores"])
    _write_csv(out / "games.csv", rows)
    summary = {
        "algorithm": name,
        "steps": steps[0],
        "games": games,
        "missing_games": missing,
        "bootstrap": {"reps": reps, "seed": seed, "confidence": 0.95, "method": "percentile, stratified over runs"},
        "aggregates": {key: value.as_dict() for key, value in results.items()},
        "paper_source": paper["source"],
        "side_by_side": side_by_side,
    }
    (out / "aggregates.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    figures = []
    if plots:
        from sb3_twm.report import plots as plotting

        figures = plotting.write_plots(out, normalized, results, games, rows, name, seed)
    (out / "summary.md").write_text(_markdown(summary, rows, results, figures), encoding="utf-8")
    return summary


def _game_rows(runs: list[Run], games: list[str], paper: dict[str, list[float]]) -> list[dict[str, Any]]:
    rows = []
    for game in games:
        means = [run.mean for run in runs if run.game == game]
        paper_scores = paper[game]
        rows.append(
            {
                "game": game,
                "runs": len(means),
                "mean": float(np.mean(means)),
                "std": float(np.std(means)),
                "per_run": [round(score, 2) for score in means],
                "episodes": sum(len(run.scores) for run in runs if run.game == game),
                "hns": float(human_normalized(game, np.mean(means))),
                "paper_mean": float(np.mean(paper_scores)),
                "paper_hns": float(human_normalized(game, np.mean(paper_scores))),
            }
        )
    return rows


def _write_csv(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "per_run": " ".join(str(score) for score in row["per_run"])})


def _markdown(summary: dict[str, Any], rows: list[dict[str, Any]], results: dict[str, Aggregates], figures: list[str]) -> str:
    name = summary["algorithm"]
    lines = [f"# Atari 100k report: {name}", ""]
    lines.append(
        f"{_count(len(summary['games']), 'game')}, {_count(rows[0]['runs'], 'run')} per game, {summary['steps']} env "
        "steps. Scores are the "
        "mean over each run's evaluation episodes (full games); human-normalised score (HNS) = (score - random) / "
        "(human - random)."
    )
    if summary["missing_games"]:
        lines += ["", f"**Not evaluated** ({len(summary['missing_games'])} of 26): {', '.join(summary['missing_games'])}. "
                  f"The aggregates below cover the evaluated games only, {PAPER} recomputed over the same games."]  # fmt: skip
    lines += ["", "## Aggregates (human-normalised, 95% stratified-bootstrap CIs by rliable)", ""]
    lines.append("| | " + " | ".join(AGGREGATES) + " |")
    lines.append("|---" * (len(AGGREGATES) + 1) + "|")
    for key, result in results.items():
        cells = [f"{p:.3f} [{lo:.3f}, {hi:.3f}]" for p, lo, hi in zip(result.point, result.low, result.high)]
        lines.append(f"| {key} ({_count(result.runs, 'run')}) | " + " | ".join(cells) + " |")
    lines += ["", "Optimality gap: lower is better.", "", "## Games", ""]
    paper_columns = summary["side_by_side"]
    lines.append(f"| game | {name} mean | std | per run | HNS |" + (f" {PAPER} mean | {PAPER} HNS |" if paper_columns else ""))
    lines.append("|---|---:|---:|---|---:|" + ("---:|---:|" if paper_columns else ""))
    for row in rows:
        per_run = ", ".join(f"{score:.10g}" for score in row["per_run"])
        line = f"| {row['game']} | {row['mean']:.1f} | {row['std']:.1f} | {per_run} | {row['hns']:.3f} |"
        lines.append(line + (f" {row['paper_mean']:.1f} | {row['paper_hns']:.3f} |" if paper_columns else ""))
    if figures:
        lines += ["", "## Plots", ""] + [f"![{figure}]({figure})" for figure in figures]
    lines += ["", f"{PAPER}: {summary['paper_source']}.", ""]
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
