"""
``python -m sb3_twm.report RESULTS... --out report/``: Atari 100k results the way the field reports them (per-game
table, aggregate human-normalised mean, median, IQM and optimality gap with 95% stratified-bootstrap confidence
intervals by ``rliable``, the standard plots), with TWM's published per-seed scores side by side.
``python -m sb3_twm.report --paper --out report/`` reports the published scores alone.

Needs the ``report`` extra (rliable, matplotlib).
"""

from sb3_twm.report.results import ReportError, Run, read_results
from sb3_twm.report.scores import ATARI_100K_GAMES, game_name, human_normalized, published_scores

__all__ = ["ATARI_100K_GAMES", "ReportError", "Run", "game_name", "human_normalized", "published_scores", "read_results"]
