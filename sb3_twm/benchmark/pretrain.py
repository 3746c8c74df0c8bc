"""The one-off pretraining at the default configuration: seconds per update of each phase, and the projected total."""

import argparse
import functools
import math
import statistics

import numpy as np
import torch as th

from sb3_twm.benchmark.common import add_common_arguments, default_model, report, setup_torch, time_repeats
from sb3_twm.twm.pretraining import actor_critic_step, expected_updates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, repeats=3)


def run(args: argparse.Namespace) -> int:
    setup_torch(args)
    # The real run pretrains on its 5,000-step prefill; the updates' sizes do not depend on it, their number does.
    model = default_model(args, prefill=2000, pretrain_budget=5e7)
    buffer = model.replay_buffer
    observations = buffer.all_observations()
    frames_per_batch = model.batch_size * model.sequence_length
    rng = np.random.default_rng(args.seed)

    def observation_update(frames: int) -> None:
        indices = np.sort(rng.choice(len(observations), frames, replace=False))
        model.world_model.pretrain_observation_step(buffer.observation_features(observations[indices]))

    def dynamics_update() -> None:
        batch = next(buffer.world_model_batches(model.sequence_length, model.batch_size))
        with th.no_grad():
            logits = model.policy.encoder(batch.observations)
        model.world_model.pretrain_dynamics_step(logits, batch.actions, batch.rewards, batch.terminated, batch.truncated)

    def actor_critic_update() -> None:
        actor_critic_step(model, next(buffer.world_model_batches(model.imagination_horizon, model.imagination_batch_size)))

    prefill = 5000  # the default run's, on which its pretraining runs
    counts = expected_updates(model, stored_per_env=prefill)
    # A pass over the prefill's frames ends with a smaller batch (5,000 = 3 x 1,600 + 200): time both sizes.
    remainder, batches_per_pass = prefill % frames_per_batch, math.ceil(prefill / frames_per_batch)
    partial = counts["observation model"] // batches_per_pass if remainder else 0
    phases = [
        ("observation model", functools.partial(observation_update, frames_per_batch), counts["observation model"] - partial),
        (f"observation model, last batch of a pass ({remainder} frames)", functools.partial(observation_update, remainder),
         partial),
        ("dynamics model", dynamics_update, counts["dynamics model"]),
        ("actor-critic", actor_critic_update, counts["actor-critic"]),
    ]  # fmt: skip
    model.world_model.train()
    rows, total = [], 0.0
    with model.training_memory(), model.autocast():
        for part, update, count in phases:
            if count == 0:
                continue
            seconds = time_repeats(update, args.repeats, args.warmup, model.device)
            total += statistics.median(seconds) * count
            rows.append({"figure": f"pretraining update, {part}", "seconds": seconds})
            rows.append({"figure": "  updates of a default run", "value": count, "unit": "count"})
    rows.append({"figure": "projected pretraining hours (medians x counts)", "value": total / 3600, "unit": "h"})
    report("pretrain", rows, args, model.device)
    return 0
