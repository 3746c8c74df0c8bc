"""One world-model update (observation and dynamics models) at the default batch of 100 x 16, random frames."""

import argparse

from sb3_twm.benchmark.common import add_common_arguments, default_model, report, setup_torch, time_repeats
from sb3_twm.benchmark.reference import REFERENCE_CPU_SECONDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per update (default 100)")


def run(args: argparse.Namespace) -> int:
    setup_torch(args)
    model = default_model(args)
    model.world_model.train()

    def update() -> None:
        batch = model.replay_buffer.sample_world_model_batch(model.batch_size, model.sequence_length)
        with model.autocast():
            model.world_model.train_step(batch)

    with model.training_memory():  # as learn() trains
        seconds = time_repeats(update, args.repeats, args.warmup, model.device)
    default_batch = model.device.type == "cpu" and model.batch_size == 100
    figure = f"world-model update, {model.batch_size} x {model.sequence_length}"
    if model.compile_world_model:
        figure += ", compiled"
    row = {"figure": figure, "seconds": seconds, "reference": REFERENCE_CPU_SECONDS["wm-update"] if default_batch else None}
    report("wm-update", [row], args, model.device)
    return 0
