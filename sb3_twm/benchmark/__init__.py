"""
Benchmarks of sb3-twm, run as ``python -m sb3_twm.benchmark <command> [options]`` (not part of CI).

Each command is a module of this package that exposes:

- ``add_arguments(parser)``: adds its options to an ``argparse.ArgumentParser``,
- ``run(args) -> int``: runs it and returns the process exit status (0 = success).

To add a command, write such a module and register it in ``COMMANDS`` below (command name -> module and a one-line
description: the command list is printed without importing the modules, which import torch).
"""

import importlib
from types import ModuleType

COMMANDS: dict[str, tuple[str, str]] = {
    "learn-cartpole": (
        "sb3_twm.benchmark.learn_cartpole",
        "TWM MlpPolicy on CartPole-v1: mean eval return >= 400 within 20k env steps for 2 of 3 seeds.",
    ),
    "learn-pendulum": (
        "sb3_twm.benchmark.learn_pendulum",
        "TWM MlpPolicy on Pendulum-v1 (continuous actions): mean eval return >= -250 within 20k env steps for 2 of 3 "
        "seeds.",
    ),
    "wm-update": ("sb3_twm.benchmark.wm_update", "Seconds per world-model update at the default batch (100 x 16)."),
    "imagine": (
        "sb3_twm.benchmark.imagine",
        "Seconds per imagination rollout + actor-critic update at the default batch (400 x 15).",
    ),
    "pretrain": (
        "sb3_twm.benchmark.pretrain",
        "Seconds per pretraining update of each phase at the default sizes, and the projected pretraining time.",
    ),
    "collect": (
        "sb3_twm.benchmark.collect",
        "Env steps/s on an Atari game with TWM's wrappers, with random actions and with policy inference.",
    ),
    "step": (
        "sb3_twm.benchmark.step",
        "Seconds per env step past the prefill (env step + its share of training) at the default schedule.",
    ),
    "memory": (
        "sb3_twm.benchmark.memory",
        "Peak resident memory (and peak CUDA memory) with a 100k-step dataset and a training step.",
    ),
}


def load_command(name: str) -> ModuleType:
    """
    :param name: A key of ``COMMANDS``.
    :return: The command's module.
    """
    if name not in COMMANDS:
        raise KeyError(f"Unknown benchmark {name!r}; available: {', '.join(sorted(COMMANDS))}.")
    module = importlib.import_module(COMMANDS[name][0])
    for attribute in ("add_arguments", "run"):
        if not callable(getattr(module, attribute, None)):
            raise TypeError(f"Benchmark module {module.__name__} must define {attribute}().")
    return module


__all__ = ["COMMANDS", "load_command"]
