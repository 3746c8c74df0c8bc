"""Peak memory with a full 100k-step dataset and one training step at the default sizes."""

import argparse
import resource

import numpy as np
import torch as th

from sb3_twm.benchmark.common import add_common_arguments, default_model, report, setup_torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, repeats=None)
    parser.add_argument("--dataset-steps", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per world-model update (default 100)")


def run(args: argparse.Namespace) -> int:
    setup_torch(args)
    model = default_model(args, prefill=2000, buffer_size=args.dataset_steps)
    buffer = model.replay_buffer
    rng = np.random.default_rng(args.seed)
    chunk = 10_000
    for start in range(0, args.dataset_steps, chunk):  # touch every page of the dataset, as a full run does
        stop = min(start + chunk, args.dataset_steps)
        buffer.observations[start:stop] = rng.integers(0, 256, (stop - start, 1, 4, 64, 64), dtype=np.uint8)
    buffer.pos, buffer.full = 0, True
    if model.device.type == "cuda":
        th.cuda.reset_peak_memory_stats(model.device)
    with model.training_memory():  # as learn() trains
        with model.autocast():
            model.train_step()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    rows = [
        {
            "figure": f"dataset observations, {args.dataset_steps} steps (GiB)",
            "value": buffer.observations.nbytes / 1024**3,
            "unit": "GiB",
        },
        {"figure": "peak resident memory (GiB)", "value": peak_rss, "unit": "GiB"},
    ]
    if model.device.type == "cuda":
        rows.append({"figure": "peak CUDA memory (GiB)", "value": th.cuda.max_memory_allocated(model.device) / 1024**3,
                     "unit": "GiB"})  # fmt: skip
    report("memory", rows, args, model.device)
    return 0
