"""The report's plots (matplotlib, rliable's plotting helpers): aggregate intervals, performance profile, games."""

import pathlib
from typing import Any

import numpy as np

from sb3_twm.report.report import AGGREGATES, PAPER, Aggregates, seeded_numpy

__all__ = ["write_plots"]


def write_plots(
    out: pathlib.Path,
    normalized: dict[str, np.ndarray],
    results: dict[str, Aggregates],
    games: list[str],
    rows: list[dict[str, Any]],
    name: str,
    seed: int = 0,
) -> list[str]:
    """
    :param out: The report folder.
    :param normalized: Algorithm -> ``(runs, games)`` human-normalised scores.
    :param results: Algorithm -> its aggregates.
    :param games: The games (columns of ``normalized``).
    :param rows: The per-game rows of the report.
    :param name: The evaluated algorithm.
    :param seed: Seed of the performance profile's bootstrap.
    :return: The files written (names in ``out``).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from rliable import library, plot_utils

    algorithms = list(normalized)
    colors = dict(zip(algorithms, ("tab:blue", "tab:gray")))
    written = []

    points = {key: np.array(result.point) for key, result in results.items()}
    intervals = {key: np.array([result.low, result.high]) for key, result in results.items()}
    figure, _ = plot_utils.plot_interval_estimates(
        points, intervals, metric_names=list(AGGREGATES), algorithms=algorithms, colors=colors,
        xlabel="", subfigure_width=3.6, row_height=0.7,
    )  # fmt: skip
    # Below the tick labels whatever the number of rows (the figure's height grows with them; saved with a tight box).
    label_y = -0.6 / figure.get_size_inches()[1]
    figure.supxlabel(f"Human-normalised score over {len(games)} games (95% stratified-bootstrap CIs)", y=label_y)
    written.append(_save(figure, out / "aggregates.png"))

    taus = np.linspace(0.0, 3.0, 61)
    with seeded_numpy(seed):
        profiles, profile_intervals = library.create_performance_profile(normalized, taus, reps=2000)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        profiles, taus, performance_profile_cis=profile_intervals, colors=colors, ax=axis,
        xlabel=r"Human-normalised score ($\tau$)", ylabel=r"Fraction of runs with score $> \tau$",
    )  # fmt: skip
    axis.legend(handles=[Line2D([], [], color=colors[key], linewidth=2, label=key) for key in algorithms], loc="upper right")
    axis.set_title("Performance profile")
    written.append(_save(figure, out / "performance_profile.png"))

    figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * len(rows) + 2), 4.5))
    positions = np.arange(len(rows))
    width = 0.4
    bars = [(name, "hns"), (PAPER, "paper_hns")] if PAPER in normalized else [(name, "hns")]
    offsets = (-width / 2, width / 2) if len(bars) == 2 else (0.0,)
    for offset, (label, key) in zip(offsets, bars):
        axis.bar(positions + offset, [row[key] for row in rows], width, label=label, color=colors[label])
    axis.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="human")
    axis.set_xticks(positions, [row["game"] for row in rows], rotation=60, ha="right")
    axis.set_ylabel("Human-normalised score (mean of runs)")
    axis.set_title("Games")
    axis.legend()
    written.append(_save(figure, out / "games.png"))
    return written


def _save(figure: Any, path: pathlib.Path) -> str:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path.name
