"""
Learning check for continuous actions: ``TWM("MlpPolicy", "Pendulum-v1")`` (a ``Box`` action, quantised per dimension,
see :mod:`sb3_twm.common.actions`) with the small settings below must reach a mean evaluation return of at least -250
(10 episodes, greedy actions) within 20,000 env steps for at least 2 of 3 seeds, each seed in under 25 minutes on
2 CPU cores. For scale: a random policy scores about -1200, SAC about -150 in the same budget.

Run: ``python -m sb3_twm.benchmark learn-pendulum [--seeds 0 1 2] [--workers 2] [--output-dir DIR]`` (see
:mod:`sb3_twm.benchmark.learning` for what it evaluates and writes).
"""

import argparse
from typing import Any

from sb3_twm.benchmark import learning
from sb3_twm.benchmark.learn_cartpole import SMALL_HYPERPARAMS

# The small settings of the vector checks (small networks, 3x the paper's learning rates; CartPole's without its frame
# skip), with: 11 values per action dimension
# (torque steps of 0.4 between -2 and 2, 0 included); rewards scaled by 0.1 before the paper's tanh (Pendulum's reach
# -16 per step, which tanh alone would flatten to -1; scaled they lie in [-1.6, 0], like CartPole's 1 per step); and
# 64 imagined rollouts per actor-critic update instead of 128 (imagination is most of a training step's time), so that
# the small settings' 9,500 training steps (train_ratio 0.5) fit in 25 minutes. `hyperparams/twm.yml` mirrors them
# (`--print-yaml`).
PENDULUM_HYPERPARAMS: dict[str, Any] = learning.merge_hyperparams(
    SMALL_HYPERPARAMS,
    {"reward_scale": 0.1, "imagination_batch_size": 64, "policy_kwargs": {"action_bins": 11}},
)

TASK = learning.LearningTask(
    name="learn-pendulum",
    env_id="Pendulum-v1",
    hyperparams=PENDULUM_HYPERPARAMS,
    threshold=-250.0,
    min_successes=2,
    max_minutes=25.0,
    return_range=(-1700.0, 0.0),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    learning.add_arguments(parser, TASK)


def run(args: argparse.Namespace) -> int:
    return learning.run(args, TASK)
