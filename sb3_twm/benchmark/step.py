"""End-to-end seconds per env step past the prefill, at the default configuration and training schedule."""

import argparse
import time

from stable_baselines3.common.callbacks import BaseCallback

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
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per world-model update (default 100)")


def run(args: argparse.Namespace) -> int:
    setup_torch(args)
    model = default_model(args, prefill=2000)
    model.num_timesteps = model.learning_starts  # the dataset is full of random steps: start past the prefill
    timer = StepTimer()
    model.learn(args.warmup + args.repeats + 1, callback=timer, reset_num_timesteps=False)
    per_step = [b - a for a, b in zip(timer.stamps[:-1], timer.stamps[1:])][args.warmup :]
    total_updates = model._n_updates
    env_steps = args.warmup + args.repeats + 1
    device = model.device
    default_sizes = device.type == "cpu" and model.batch_size == 100
    # An env step carries 1 or 2 training steps (1.316 on average), so the median leans low: the mean is the cost,
    # and the reference's figure is a mean too (1.316 x its update times).
    mean_seconds = sum(per_step) / len(per_step)
    rows = [
        {"figure": "seconds per env step (incl. training)", "seconds": per_step},
        {
            "figure": "mean seconds per env step",
            "value": mean_seconds,
            "reference": REFERENCE_CPU_SECONDS["step"] if default_sizes else None,
        },
        {"figure": "training steps per env step (schedule)", "value": model.steps_per_env_step, "unit": "ratio"},
        {"figure": "training steps in this run", "value": total_updates, "unit": "count"},
        {"figure": "projected hours for 95k steps past prefill", "value": 95_000 * mean_seconds / 3600, "unit": "h"},
    ]
    if device.type == "cuda":
        print(f"The authors report about {95_000 * AUTHORS_A100_SECONDS_PER_ENV_STEP / 3600:.1f} h for the same on an A100.")
    report(f"step ({env_steps} env steps)", rows, args, device)
    return 0
