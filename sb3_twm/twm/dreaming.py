"""
Dreams of a TWM model (:func:`~sb3_twm.world_model.dreams.dream`) from its dataset or from fresh episodes, and their
logging during training (``log_dream_interval``): TensorBoard shows them under ``dream/``. Nothing here changes a run:
the random generators are forked (torch's) or restored (numpy's), and the dataset's visit counts are not touched.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from stable_baselines3.common.logger import CSVOutputFormat, HumanOutputFormat, Image, JSONOutputFormat, Video
from stable_baselines3.common.vec_env import VecEnv

from sb3_twm.common import dream_pictures
from sb3_twm.world_model.dreams import Dream, dream

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sb3_twm.twm.twm import TWM

__all__ = ["DREAM_CONTEXT", "DREAM_SEQUENCES", "DREAM_STEPS", "dream_from_dataset", "dream_from_env", "log_dream"]

# What training logs every log_dream_interval training steps: 4 of the newest sequences, 8 real steps, then 24 steps
# of the dynamics model alone.
DREAM_SEQUENCES, DREAM_STEPS, DREAM_CONTEXT = 4, 32, 8
# The text and table writers cannot show pictures.
_PICTURES_ONLY = ("stdout", "log", "json", "csv")


@contextmanager
def _unchanged_random_state(device: th.device) -> Iterator[None]:
    # torch's CPU generator (and the CUDA one of the model's device) and numpy's global one come back as they were.
    numpy_state = np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with th.random.fork_rng(devices=devices, device_type="cuda"):
            yield
    finally:
        np.random.set_state(numpy_state)


def _dream(model: TWM, batch: Any, context: int) -> Dream:
    with _unchanged_random_state(model.device), th.no_grad():
        return dream(
            model.world_model.observation_model,
            model.world_model.dynamics_model,
            model.policy.sample_actions,
            batch,
            context,
            model.gamma,
        )


def dream_from_dataset(
    model: TWM, sequences: int = DREAM_SEQUENCES, steps: int = DREAM_STEPS, context: int = DREAM_CONTEXT
) -> Dream:
    """
    Dream the newest sequences of the model's dataset (``TWMReplayBuffer.latest_sequences``).

    :param model: The model.
    :param sequences: How many sequences (at most what the dataset holds).
    :param steps: Steps per sequence (fewer if the dataset holds fewer).
    :param context: Real steps before the open loop (``1 <= context <= steps``; fewer if the dataset holds fewer).
    :return: The dream.
    """
    if not 1 <= context <= steps:
        raise ValueError(f"context must be in [1, steps={steps}], got {context}.")
    buffer = model.replay_buffer
    steps = min(steps, buffer.size() - 1)
    if steps < 1:
        raise ValueError("The dataset holds too few steps to dream: collect some first (learn()).")
    sequences = max(1, min(sequences, (buffer.size() - steps + 1) * buffer.n_envs))
    batch = buffer.to_world_model_batch(buffer.latest_sequences(sequences, steps), model._vec_normalize_env)
    return _dream(model, batch, min(context, steps))


def dream_from_env(model: TWM, env: VecEnv, steps: int, context: int, progress: Any = None) -> Dream:
    """
    Play one fresh episode stretch in ``env`` with the model's actor (sampled actions, as TWM acts), then dream it.

    :param model: The model.
    :param env: The model's env (``model.get_env()``, its first env is shown).
    :param steps: Steps shown (``steps + 1`` are played: the step in front, and the last one's next observation).
    :param context: Real steps before the open loop.
    :param progress: Called once per env step played (e.g. a progress bar's ``update``).
    :return: The dream.
    """
    buffer = model._make_replay_buffer(buffer_size=steps + 2)
    observations = env.reset()
    for _ in range(steps + 1):
        actions, _ = model.predict(observations, deterministic=False)
        next_observations, rewards, dones, infos = env.step(actions)
        stored_next = next_observations.copy()
        for index in np.flatnonzero(dones):
            # The VecEnv has reset that env already: the episode's last observation is in its info (as SB3 stores it).
            stored_next[index] = infos[index]["terminal_observation"]
        # The dataset keeps Box actions scaled to [-1, 1], as training stores them.
        stored_actions = model.policy.scale_action(actions) if model.policy.squash_output else actions
        buffer.add(observations, stored_next, stored_actions, rewards, dones, infos)
        observations = next_observations
        if progress is not None:
            progress()
    batch = buffer.to_world_model_batch(buffer.latest_sequences(1, steps), model._vec_normalize_env)
    return _dream(model, batch, context)


def log_dream(model: TWM) -> None:
    """
    Write a dream of the newest sequences through the model's logger: ``dream/frames`` (a video: real | reconstruction
    | world model per sequence) for image observations, ``dream/features`` (a plot) for vectors, and
    ``dream/rewards_discounts`` (predicted vs real).

    :param model: The model, during ``learn()``.
    """
    result = dream_from_dataset(model)
    values: dict[str, Video | Image] = {}
    if dream_pictures.is_image_dream(result):
        frames = dream_pictures.side_by_side_frames(result)  # (T, H, W, 3)
        values["dream/frames"] = Video(th.from_numpy(frames).permute(0, 3, 1, 2)[None], fps=4)  # (1, T, 3, H, W) uint8
    else:
        values["dream/features"] = Image(dream_pictures.feature_plot(result), "HWC")
    values["dream/rewards_discounts"] = Image(dream_pictures.signal_plot(result), "HWC")
    # Written now, at this step, to the writers that show pictures (TensorBoard, custom KVWriters): recorded values
    # would wait for SB3's next dump (episode ends), and a later dream would replace an earlier one.
    excluded = dict.fromkeys(values, _PICTURES_ONLY)
    for writer in model.logger.output_formats:
        if not isinstance(writer, (HumanOutputFormat, JSONOutputFormat, CSVOutputFormat)):
            writer.write(values, excluded, model.num_timesteps)
