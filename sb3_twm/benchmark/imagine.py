"""Imagination (400 rollouts x 15 steps) plus the actor-critic update, at the default sizes."""

import argparse

from sb3_twm.benchmark.common import add_common_arguments, default_model, report, setup_torch, time_repeats
from sb3_twm.benchmark.reference import REFERENCE_CPU_SECONDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=None, dest="imagination_batch_size",
                        help="imagined rollouts per update (default 400)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    setup_torch(args)
    model = default_model(args)
    batch = model.replay_buffer.sample_world_model_batch(model.batch_size, model.sequence_length)
    output = model.world_model.train_step(batch).output

    def imagine_and_update() -> None:
        with model.autocast():
            model.actor_critic.update(model.imagine(output))

    def imagine_only() -> None:
        with model.autocast():
            model.imagine(output)

    with model.training_memory():  # as learn() trains
        total = time_repeats(imagine_and_update, args.repeats, args.warmup, model.device)
        imagination = time_repeats(imagine_only, args.repeats, 0, model.device)
    default_batch = model.device.type == "cpu" and model.imagination_batch_size == 400
    size = f"{model.imagination_batch_size} x {model.imagination_horizon}"
    rows = [
        {
            "figure": f"imagination + actor-critic update, {size}",
            "seconds": total,
            "reference": REFERENCE_CPU_SECONDS["imagine"] if default_batch else None,
        },
        {"figure": f"  of which imagination, {size}", "seconds": imagination},
    ]
    report("imagine", rows, args, model.device)
    return 0
