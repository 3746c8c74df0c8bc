"""The TWM algorithm and its policies."""

from sb3_twm.twm.policies import CnnPolicy, MlpPolicy, TWMPolicy
from sb3_twm.twm.twm import TWM

__all__ = ["TWM", "CnnPolicy", "MlpPolicy", "TWMPolicy"]
