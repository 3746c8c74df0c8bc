"""Imagination (400 rollouts x 15 steps) plus the actor-critic update, at the default sizes."""

import argparse

from sb3_twm.benchmark.common import (
    REFERENCE_CPU_SECONDS,
    add_common_arguments,
    default_model,
    report,
    setup_torch,
    time_repeats,
)

DESCRIPTION = "Seconds per imagination rollout + actor-critic update at the default batch (400 x 15)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=None, dest="imagination_batch_size",
                        help="imagined rollouts per update (default 400)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    setup_torch(args)
    model = default_model(args)
    batch = model._to_torch(model.replay_buffer.sample_sequences(model.batch_size, model.sequence_length))
    output, _ = model.world_model.train_step(batch)
    parts: dict[str, list[float]] = {"imagination": [], "update": []}

    def imagine() -> None:
        with model._autocast():
            trajectories = model._imagine(output)
            model._train_actor_critic(trajectories)

    def imagine_only() -> None:
        with model._autocast():
            model._imagine(output)

    with model.training_memory():  # as learn() trains
        total = time_repeats(imagine, args.repeats, args.warmup, model.device)
        parts["imagination"] = time_repeats(imagine_only, args.repeats, 0, model.device)
    default_batch = model.device.type == "cpu" and model.imagination_batch_size == 400
    reference = REFERENCE_CPU_SECONDS["imagine"] if default_batch else None
    size = f"{model.imagination_batch_size} x {model.imagination_horizon}"
    rows = [
        {"figure": f"imagination + actor-critic update, {size}", "seconds": total, "reference": reference},
        {"figure": f"  of which imagination, {size}", "seconds": parts["imagination"]},
    ]
    report("imagine", rows, args, model.device)
    return 0
