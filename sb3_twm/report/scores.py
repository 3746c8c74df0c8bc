"""
The Atari 100k benchmark's games, their reference scores, and TWM's published scores.

Human-normalised score: ``(score - random) / (human - random)`` with the standard per-game random and human scores
(Mnih et al. 2015 and later; the values every Atari 100k paper and the ``rliable`` library use). TWM's published scores
are the per-seed final scores of the paper (5 seeds x 26 games), as the authors publish them in their repository
(jrobine/twm, ``results/scores.json``); they ship as ``sb3_twm/report/data/twm_scores.json``.
"""

import json
import re
from importlib import resources
from typing import Any

import numpy as np

__all__ = [
    "ATARI_100K_GAMES",
    "HUMAN_SCORES",
    "RANDOM_SCORES",
    "game_name",
    "human_normalized",
    "published_scores",
]

RANDOM_SCORES: dict[str, float] = {
    "Alien": 227.8, "Amidar": 5.8, "Assault": 222.4, "Asterix": 210.0, "BankHeist": 14.2, "BattleZone": 2360.0,
    "Boxing": 0.1, "Breakout": 1.7, "ChopperCommand": 811.0, "CrazyClimber": 10780.5, "DemonAttack": 152.1,
    "Freeway": 0.0, "Frostbite": 65.2, "Gopher": 257.6, "Hero": 1027.0, "Jamesbond": 29.0, "Kangaroo": 52.0,
    "Krull": 1598.0, "KungFuMaster": 258.5, "MsPacman": 307.3, "Pong": -20.7, "PrivateEye": 24.9, "Qbert": 163.9,
    "RoadRunner": 11.5, "Seaquest": 68.4, "UpNDown": 533.4,
}  # fmt: skip
HUMAN_SCORES: dict[str, float] = {
    "Alien": 7127.7, "Amidar": 1719.5, "Assault": 742.0, "Asterix": 8503.3, "BankHeist": 753.1, "BattleZone": 37187.5,
    "Boxing": 12.1, "Breakout": 30.5, "ChopperCommand": 7387.8, "CrazyClimber": 35829.4, "DemonAttack": 1971.0,
    "Freeway": 29.6, "Frostbite": 4334.7, "Gopher": 2412.5, "Hero": 30826.4, "Jamesbond": 302.8, "Kangaroo": 3035.0,
    "Krull": 2665.5, "KungFuMaster": 22736.3, "MsPacman": 6951.6, "Pong": 14.6, "PrivateEye": 69571.3, "Qbert": 13455.0,
    "RoadRunner": 7845.0, "Seaquest": 42054.7, "UpNDown": 11693.2,
}  # fmt: skip
ATARI_100K_GAMES: tuple[str, ...] = tuple(RANDOM_SCORES)

_BY_LOWER_CASE = {game.lower(): game for game in ATARI_100K_GAMES}


def game_name(env_id: str) -> str:
    """
    The Atari 100k game an env id names.

    :param env_id: ``PongNoFrameskip-v4``, ``ALE/Pong-v5``, ``Pong`` (any case), or a zoo run folder name
        (``PongNoFrameskip-v4_3``).
    :return: The game's name as in ``ATARI_100K_GAMES`` (``"Pong"``).
    """
    name = re.sub(r"_\d+$", "", env_id.strip())  # a zoo run folder: <env id>_<experiment id>
    name = name.split("/")[-1]
    name = re.sub(r"(NoFrameskip|Deterministic)?-v\d+$", "", name)
    game = _BY_LOWER_CASE.get(name.lower().replace("_", ""))
    if game is None:
        raise ValueError(
            f"{env_id!r} is not one of the 26 Atari 100k games (no human/random reference scores): "
            f"{', '.join(ATARI_100K_GAMES)}."
        )
    return game


def human_normalized(game: str, scores: Any) -> np.ndarray:
    """
    :param game: A name from ``ATARI_100K_GAMES``.
    :param scores: Raw scores (a number or an array).
    :return: Their human-normalised scores.
    """
    random, human = RANDOM_SCORES[game], HUMAN_SCORES[game]
    return (np.asarray(scores, dtype=np.float64) - random) / (human - random)


def published_scores() -> dict[str, Any]:
    """
    :return: TWM's published per-seed scores: ``{"algorithm", "source", "steps", "scores": {game: [5 scores]}}``.
    """
    text = resources.files("sb3_twm.report").joinpath("data", "twm_scores.json").read_text(encoding="utf-8")
    return json.loads(text)
