"""
Reading evaluation results: the JSON files of ``python -m sb3_twm.evaluate`` and, as a fallback, rl-zoo3's
``evaluations.npz`` (the last evaluation of a run, written by SB3's ``EvalCallback``), into one score per (game, run).
"""

import json
import math
import pathlib
import zipfile
from dataclasses import dataclass, field

import numpy as np

from sb3_twm.report.scores import game_name

__all__ = ["ReportError", "Run", "read_results", "score_matrix"]

# Result files are small; a bigger file is not one of ours.
_MAX_RESULT_BYTES = 16 * 2**20


class ReportError(ValueError):
    """Results that cannot be reported (the message says what to change)."""


@dataclass(frozen=True)
class Run:
    """
    One evaluated run: a game trained with one seed.

    :param game: The Atari 100k game.
    :param name: The run's name (zoo run folder, or the model file).
    :param scores: The score of every evaluation episode (full games).
    :param steps: The env steps the model was trained for.
    :param source: The file it was read from.
    """

    game: str
    name: str
    scores: tuple[float, ...]
    steps: int
    source: str = field(compare=False)

    @property
    def mean(self) -> float:
        """The run's score: the mean over its evaluation episodes (the Atari 100k score)."""
        return float(np.mean(self.scores))


def read_results(paths: list[pathlib.Path]) -> list[Run]:
    """
    :param paths: Result JSON files, zoo ``evaluations.npz`` files, or folders holding either (searched recursively;
        in a folder, a run's ``evaluations.npz`` is used only when no JSON file exists for the same run).
    :return: The runs, sorted by game and name.
    """
    files: list[pathlib.Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.rglob("*.json"))
            files += sorted(path.rglob("evaluations.npz"))
        elif path.is_file():
            files.append(path)
        else:
            raise ReportError(f"{path} does not exist.")
    runs: dict[tuple[str, str], Run] = {}
    for file in files:
        run = _read_npz(file) if file.suffix == ".npz" else _read_json(file)
        if run is None:
            continue
        key = (run.game, run.name)
        if key in runs:
            if file.suffix == ".npz":
                continue  # the final evaluation of the same run is there already
            if not runs[key].source.endswith(".npz"):
                raise ReportError(f"{run.game} run {run.name!r} is in two files: {runs[key].source} and {file}.")
        runs[key] = run
    if not runs:
        raise ReportError(
            f"No results in {', '.join(map(str, paths))}: pass the JSON files of `python -m sb3_twm.evaluate` (or "
            "zoo log folders with evaluations.npz)."
        )
    return sorted(runs.values(), key=lambda run: (run.game, run.name))


def _read_json(path: pathlib.Path) -> Run | None:
    if path.stat().st_size > _MAX_RESULT_BYTES:
        raise ReportError(f"{path} is larger than a result file can be ({path.stat().st_size} bytes).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ReportError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(data, dict) or data.get("format") != "sb3-twm-evaluation":
        return None  # another JSON file in the folder (a zoo config, the study's report)
    try:
        scores = tuple(float(score) for score in data["scores"])
        steps, game = int(data["model_steps"]), game_name(str(data["game"]))
        name = str(data.get("run") or path.stem)
    except (KeyError, TypeError, ValueError) as error:
        raise ReportError(f"{path}: malformed result ({type(error).__name__}: {error}).") from None
    if not scores or not all(math.isfinite(score) for score in scores):
        raise ReportError(f"{path}: the result holds no scores, or scores that are not finite numbers.")
    return Run(game, name, scores, steps, str(path))


def _read_npz(path: pathlib.Path) -> Run:
    # logs/<algo>/<env id>_<exp id>/evaluations.npz: "timesteps" (E,), "results" (E, episodes) from EvalCallback.
    try:
        with np.load(path, allow_pickle=False) as npz:
            timesteps, results = np.asarray(npz["timesteps"]), np.asarray(npz["results"], dtype=np.float64)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ReportError(f"{path} is not an evaluations.npz of SB3's EvalCallback ({error}).") from None
    if results.ndim != 2 or len(results) == 0 or len(timesteps) != len(results):
        raise ReportError(f"{path}: expected 'results' of shape (evaluations, episodes), got {results.shape}.")
    try:
        game = game_name(path.parent.name)
    except ValueError as error:
        raise ReportError(f"{path}: the run folder's name does not name the game ({error})") from None
    return Run(game, path.parent.name, tuple(float(score) for score in results[-1]), int(timesteps[-1]), str(path))


def score_matrix(runs: list[Run], games: list[str]) -> np.ndarray:
    """
    :param runs: Runs of every game in ``games``, as many of each.
    :param games: The games (columns), in order.
    :return: ``(runs per game, games)`` matrix of the runs' scores (rliable's layout), runs in name order per game.
    """
    columns = [[run.mean for run in runs if run.game == game] for game in games]
    counts = {game: len(column) for game, column in zip(games, columns)}
    if len(set(counts.values())) != 1:
        raise ReportError(
            "Every game needs as many runs for the aggregates (stratified bootstrap over runs): "
            + ", ".join(f"{game} {count}" for game, count in counts.items())
            + ". Evaluate the missing runs, or pass only as many runs of each game."
        )
    return np.array(columns, dtype=np.float64).T
