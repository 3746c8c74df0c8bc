"""Shared pieces of the speed benchmarks: the model they time, repeated timing, and the printed table."""

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces

from sb3_twm import TWM
from sb3_twm.benchmark.reference import REFERENCE_MACHINE


class RandomFramesEnv(gym.Env):
    """Random stacked frames and 6 actions: the input the reference's figures were measured on."""

    def __init__(self, num_actions: int = 6) -> None:
        self.observation_space = spaces.Box(0, 255, (4, 64, 64), np.uint8)
        self.action_space = spaces.Discrete(num_actions)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), float(self.np_random.random() < 0.05), False, False, {}


def add_common_arguments(parser: argparse.ArgumentParser, repeats: int | None = 5, training: bool = True) -> None:
    """
    :param parser: Parser of one benchmark.
    :param repeats: Default number of timed repeats (None: the benchmark does not repeat, no ``--repeats``/``--warmup``).
    :param training: The benchmark runs training computations: ``--mixed-precision``, ``--compile``,
        ``--reuse-cpu-memory``, ``--num-actions``.
    """
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, auto)")
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats after the warm-up")
        parser.add_argument("--warmup", type=int, default=1, help="untimed repeats first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    if not training:
        return
    parser.add_argument("--num-actions", type=int, default=6, help="action count (6 = Pong)")
    parser.add_argument("--mixed-precision", choices=["auto", "on", "off"], default="auto",
                        help="bf16 autocast: auto = on for CUDA with bf16, off on CPU (TWM's default)")  # fmt: skip
    parser.add_argument("--compile", action="store_true",
                        help="TWM(compile_world_model=True): torch.compile the world-model update (the warm-up "
                             "repeat then includes the compilation)")  # fmt: skip
    parser.add_argument("--reuse-cpu-memory", choices=["on", "off"], default="on",
                        help="TWM(reuse_cpu_memory=...): keep memory freed by one update for the next on CPU")  # fmt: skip


def setup_torch(args: argparse.Namespace) -> None:
    if args.threads is not None:
        th.set_num_threads(args.threads)
    th.manual_seed(args.seed)
    np.random.seed(args.seed)


def default_model(args: argparse.Namespace, prefill: int = 2000, **overrides: Any) -> TWM:
    """
    A TWM of the default configuration on random frames, its dataset filled with ``prefill`` random steps.

    :param args: Parsed options (device, seed, num_actions, batch sizes).
    :param prefill: Random steps stored in the dataset.
    :param overrides: TWM keyword arguments to change.
    :return: The model.
    """
    env = RandomFramesEnv(args.num_actions)
    kwargs: dict[str, Any] = {
        "learning_starts": prefill,
        "pretrain_budget": 0,
        # The default schedule's training steps per env step (derived with the default 5,000-step prefill).
        "train_ratio": TWM("CnnPolicy", RandomFramesEnv(), _init_setup_model=False).steps_per_env_step,
        "seed": args.seed,
        "device": args.device,
        "mixed_precision": {"auto": None, "on": True, "off": False}[getattr(args, "mixed_precision", "auto")],
        "compile_world_model": bool(getattr(args, "compile", False)),
        "reuse_cpu_memory": getattr(args, "reuse_cpu_memory", "on") == "on",
    }
    if getattr(args, "batch_size", None):
        kwargs["batch_size"] = args.batch_size
    if getattr(args, "imagination_batch_size", None):
        kwargs["imagination_batch_size"] = args.imagination_batch_size
    kwargs.update(overrides)
    model = TWM("CnnPolicy", env, **kwargs)
    buffer = model.replay_buffer
    rng = np.random.default_rng(args.seed)
    observations = rng.integers(0, 256, (prefill, 1, 4, 64, 64), dtype=np.uint8)
    buffer.observations[:prefill] = observations
    buffer.actions[:prefill] = rng.integers(0, args.num_actions, (prefill, 1))
    buffer.rewards[:prefill] = (rng.random((prefill, 1)) < 0.05).astype(np.float32)
    buffer.latest_next_observations[:] = observations[-1]
    buffer.pos = prefill
    return model


def synchronize(device: th.device) -> None:
    if device.type == "cuda":
        th.cuda.synchronize(device)


def time_repeats(function: Callable[[], Any], repeats: int, warmup: int, device: th.device) -> list[float]:
    """
    :param function: What to time.
    :param repeats: Timed calls.
    :param warmup: Untimed calls first.
    :param device: Synchronised around each call (CUDA timings include the queued work).
    :return: Seconds of each timed call.
    """
    for _ in range(warmup):
        function()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def machine_description(device: th.device) -> str:
    if device.type == "cuda":
        return f"{th.cuda.get_device_name(device)}, torch {th.__version__}"
    return f"{platform.processor() or platform.machine()}, {th.get_num_threads()} torch threads, torch {th.__version__}"


def report(name: str, rows: list[dict[str, Any]], args: argparse.Namespace, device: th.device) -> None:
    """
    Print a table (median, min, max) and optionally write JSON.

    :param name: Benchmark name.
    :param rows: One dict per figure: ``figure``, ``seconds`` (list) or ``value``, optional ``unit`` and ``reference``
        (a constant of :mod:`sb3_twm.benchmark.reference`, printed with the machine it comes from).
    :param args: Parsed options (``json``).
    :param device: Device the figures were measured on.
    """
    print(f"{name} on {device} ({machine_description(device)})")
    header = f"{'figure':<48} {'median':>10} {'min':>10} {'max':>10} {'n':>3} {'reference*':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        values = row.get("seconds") or [row["value"]]
        row["median"] = statistics.median(values)
        row["min"], row["max"], row["n"] = min(values), max(values), len(values)
        reference = row.get("reference")
        print(
            f"{row['figure']:<48} {row['median']:>10.4g} {row['min']:>10.4g} {row['max']:>10.4g} {row['n']:>3} "
            f"{reference if reference is not None else '':>10}"
        )
    if any(row.get("reference") is not None for row in rows):
        print(f"* jrobine/twm on {REFERENCE_MACHINE}: a constant from that machine, not measured here")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"benchmark": name, "device": str(device), "machine": machine_description(device), "rows": rows,
                       "reference_machine": REFERENCE_MACHINE}, file, indent=2)  # fmt: skip
