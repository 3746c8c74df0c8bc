"""sb3-twm: Transformer-based World Models (TWM) as a Stable-Baselines3 algorithm."""

import os

from sb3_twm.twm import TWM, CnnPolicy, MlpPolicy, TWMPolicy

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = ["TWM", "CnnPolicy", "MlpPolicy", "TWMPolicy", "__version__"]
