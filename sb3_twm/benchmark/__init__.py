"""
Benchmarks of sb3-twm, run as ``python -m sb3_twm.benchmark <command> [options]`` (not part of CI).

Each command is a module of this package that exposes:

- ``DESCRIPTION``: a one-line summary (the command's help),
- ``add_arguments(parser)``: adds its options to an ``argparse.ArgumentParser``,
- ``run(args) -> int``: runs it and returns the process exit status (0 = success).

To add a command, write such a module and register it in ``COMMANDS`` below (command name -> module name).
"""

import importlib
from types import ModuleType

COMMANDS: dict[str, str] = {
    "learn-cartpole": "sb3_twm.benchmark.learn_cartpole",
    "wm-update": "sb3_twm.benchmark.wm_update",
    "imagine": "sb3_twm.benchmark.imagine",
    "collect": "sb3_twm.benchmark.collect",
    "step": "sb3_twm.benchmark.step",
    "memory": "sb3_twm.benchmark.memory",
}


def load_command(name: str) -> ModuleType:
    """
    :param name: A key of ``COMMANDS``.
    :return: The command's module.
    """
    if name not in COMMANDS:
        raise KeyError(f"Unknown benchmark {name!r}; available: {', '.join(sorted(COMMANDS))}.")
    module = importlib.import_module(COMMANDS[name])
    for attribute in ("add_arguments", "run"):
        if not callable(getattr(module, attribute, None)):
            raise TypeError(f"Benchmark module {module.__name__} must define {attribute}().")
    return module


__all__ = ["COMMANDS", "load_command"]
