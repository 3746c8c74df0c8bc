"""sb3-twm: Transformer-based World Models (TWM) as a Stable-Baselines3 algorithm."""

import importlib
import os
from typing import Any

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

# Imported on first use, so that `import sb3_twm.<module>` (the command-line tools, the rl-zoo3 hook) does not pay
# for torch and SB3 before it needs them.
_LAZY = {"TWM": "sb3_twm.twm.twm", "CnnPolicy": "sb3_twm.twm.policies", "MlpPolicy": "sb3_twm.twm.policies",
         "TWMPolicy": "sb3_twm.twm.policies"}  # fmt: skip

__all__ = ["TWM", "CnnPolicy", "MlpPolicy", "TWMPolicy", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sb3_twm' has no attribute {name!r}")
