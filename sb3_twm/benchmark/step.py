"""
End-to-end seconds per env step past the prefill: at the default configuration and training schedule, or with
``--config cartpole`` at learn-cartpole's small settings (where the cost is per-operator overhead, not arithmetic).
"""

import argparse
import time
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from sb3_twm import TWM
from sb3_twm.benchmark import learn_cartpole, learning
from sb3_twm.benchmark.common import add_common_arguments, default_model, report, setup_torch, synchronize
from sb3_twm.benchmark.reference import AUTHORS_A100_SECONDS_PER_ENV_STEP, REFERENCE_CPU_SECONDS


class StepTimer(BaseCallback):
    """Time between consecutive env steps: one env step plus the training that followed the previous one."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def _on_step(self) -> bool:
        synchronize(self.model.device)
        self.stamps.append(time.perf_counter())
        return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="sequences per world-model update (default: 100, cartpole 16)"
    )
    parser.add_argument(
        "--config",
        choices=["default", "cartpole"],
        default="default",
        help="default: the paper's configuration on random 64x64 frames; cartpole: learn-cartpole's small settings "
        "(MlpPolicy, CartPole-v1 under its frame skip of 2, whose steps are counted as in Atari's, its prefill; a short "
        "pretraining, not timed). With cartpole, --repeats "
        "counts env steps (e.g. 200)",
    )


def _cartpole_model(args: argparse.Namespace) -> TWM:
    # A short pretraining: it is not timed, and its length does not change the cost of a training step.
    overrides: dict[str, Any] = {"pretrain_budget": 2000}
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    hyperparams = learning.merge_hyperparams(learn_cartpole.CARTPOLE_HYPERPARAMS, overrides)
    return learning.make_model("CartPole-v1", args.seed, hyperparams, device=args.device)


def run(args: argparse.Namespace) -> int:
    setup_torch(args)
    timer = StepTimer()
    if args.config == "cartpole":
        model = _cartpole_model(args)
        # The prefill's random steps and the pretraining after them are not timed: intervals from the second
        # env step past the prefill on.
        skipped = model.learning_starts + 1 + args.warmup
        model.learn(skipped + args.repeats + 1, callback=timer)
    else:
        model = default_model(args, prefill=2000)
        model.num_timesteps = model.learning_starts  # the dataset is full of random steps: start past the prefill
        skipped = args.warmup
        model.learn(args.warmup + args.repeats + 1, callback=timer, reset_num_timesteps=False)
    per_step = [b - a for a, b in zip(timer.stamps[:-1], timer.stamps[1:])][skipped:]
    total_updates = model._n_updates
    env_steps = len(per_step)
    device = model.device
    default_sizes = args.config == "default" and device.type == "cpu" and model.batch_size == 100
    # An env step carries 1 or 2 training steps (1.316 on average), so the median leans low: the mean is the cost,
    # and the reference's figure is a mean too (1.316 x its update times).
    mean_seconds = sum(per_step) / len(per_step)
    # The rest of a run: 100k steps past the default 5,000-step prefill, or learn-cartpole's steps past its prefill.
    if args.config == "cartpole":
        settings = learn_cartpole.CARTPOLE_HYPERPARAMS
        remaining = settings["n_timesteps"] - settings["learning_starts"]
        projection = {"figure": f"projected minutes for {remaining} steps past prefill", "unit": "min"}
        projection["value"] = remaining * mean_seconds / 60
    else:
        projection = {"figure": "projected hours for 95k steps past prefill", "value": 95_000 * mean_seconds / 3600}
        projection["unit"] = "h"
    rows = [
        {"figure": "seconds per env step (incl. training)", "seconds": per_step},
        {
            "figure": "mean seconds per env step",
            "value": mean_seconds,
            "reference": REFERENCE_CPU_SECONDS["step"] if default_sizes else None,
        },
        {"figure": "training steps per env step (schedule)", "value": model.steps_per_env_step, "unit": "ratio"},
        {"figure": "training steps in this run", "value": total_updates, "unit": "count"},
        projection,
    ]
    if device.type == "cuda" and args.config == "default":
        print(f"The authors report about {95_000 * AUTHORS_A100_SECONDS_PER_ENV_STEP / 3600:.1f} h for the same on an A100.")
    report(f"step ({env_steps} env steps)", rows, args, device)
    return 0
