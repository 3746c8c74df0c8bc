"""
Dataset files of TWM: ``TWM.save_replay_buffer`` / ``TWM.load_replay_buffer``. A dataset file is an ``.npz`` of plain
arrays and a JSON ``metadata`` entry (:mod:`sb3_twm.common.checkpoints`), written atomically and never unpickled; at
load, every array is checked against the model before it replaces the model's dataset.
"""

from __future__ import annotations

import functools
import io
import pathlib
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from sb3_twm.common.buffers import TWMReplayBuffer
from sb3_twm.common.checkpoints import (
    DATASET_FORMAT,
    DATASET_FORMAT_VERSION,
    CheckpointError,
    decode_value,
    display_name,
    encode_value,
    existing_path,
    open_for_writing,
    read_npz_into,
    write_npz,
)
from sb3_twm.twm.saved_attributes import is_int

if TYPE_CHECKING:
    from sb3_twm.twm.twm import TWM

__all__ = ["DATASET_ARRAYS", "dataset_arrays", "load_dataset", "save_dataset"]

DATASET_ARRAYS = ("observations", "actions", "rewards", "terminated", "truncated", "visits")


def dataset_arrays(buffer: TWMReplayBuffer, stored: int) -> dict[str, np.ndarray]:
    """
    :param buffer: The dataset.
    :param stored: Time steps to include.
    :return: The arrays of a dataset file: views of the first ``stored`` time steps, and the latest next observations.
    """
    return {
        **{name: getattr(buffer, name)[:stored] for name in DATASET_ARRAYS},
        "latest_next_observations": buffer.latest_next_observations,
    }


def save_dataset(model: TWM, path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """
    ``TWM.save_replay_buffer``: the dataset as an ``.npz`` of plain arrays (no pickle), atomically: observations,
    actions, rewards, terminated and truncated flags and visit counts of the stored steps, the latest next observations,
    and a JSON ``metadata`` entry (format version, spaces, ``n_envs``, capacity, ring position, ``num_timesteps``). The
    content is ``.npz`` whatever the name (``CheckpointCallback`` and rl-zoo3 name it ``.pkl``).

    :param model: The model.
    :param path: File (``.npz`` is appended when it has no suffix) or binary file object.
    """
    assert model.replay_buffer is not None, "The replay buffer is not defined"
    buffer = model.replay_buffer
    metadata = {
        "format": DATASET_FORMAT,
        "version": DATASET_FORMAT_VERSION,
        "buffer_class": f"{type(buffer).__module__}.{type(buffer).__qualname__}",
        "buffer_size": buffer.buffer_size,
        "n_envs": buffer.n_envs,
        "pos": buffer.pos,
        "full": buffer.full,
        "observation_space": encode_value(buffer.observation_space),
        "action_space": encode_value(buffer.action_space),
        "temperature": buffer.temperature,
        "handle_timeout_termination": buffer.handle_timeout_termination,
        "num_timesteps": model.num_timesteps,
    }
    with open_for_writing(path, "npz") as file:
        write_npz(file, metadata, dataset_arrays(buffer, buffer.size()))


def load_dataset(model: TWM, path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """
    ``TWM.load_replay_buffer``: read a dataset into a new buffer and check it (format, spaces, ``n_envs``, capacity,
    array shapes and dtypes, CRCs, action range, finite rewards and visit counts) before it replaces the model's: a
    truncated, corrupted, foreign or mismatching file raises a ``CheckpointError`` naming the file and leaves the model's
    dataset as it was. Nothing is unpickled.

    :param model: The model.
    :param path: The file (``.npz`` is tried when the path has no suffix) or a binary file object.
    """
    path = existing_path(path, "npz")
    name = display_name(path)
    buffer = model._make_replay_buffer()
    metadata = read_npz_into(path, functools.partial(_dataset_destinations, buffer))
    buffer.pos, buffer.full = int(metadata["pos"]), bool(metadata["full"])
    _check_dataset_content(name, buffer)
    buffer.device = model.device  # as SB3's load_replay_buffer: the model's device, whatever the buffer resolved
    saved_at = metadata.get("num_timesteps")
    if model.num_timesteps > 0 and saved_at != model.num_timesteps:
        warnings.warn(
            f"The dataset {name} was saved at step {saved_at}, the model is at step {model.num_timesteps}: "
            "they are not from the same checkpoint, so training will not continue exactly.",
            stacklevel=3,
        )
    model.replay_buffer = buffer


def _dataset_destinations(buffer: TWMReplayBuffer, metadata: dict[str, Any]) -> dict[str, np.ndarray]:
    # Validate the metadata against the model, then give the arrays to read into.
    for key in ("n_envs", "buffer_size", "pos"):
        if not is_int(metadata.get(key)):
            raise CheckpointError(f"the metadata's {key}={str(metadata.get(key))[:40]!r} is not a non-negative integer")
    if not isinstance(metadata.get("full"), bool):
        raise CheckpointError(f"the metadata's full={str(metadata.get('full'))[:40]!r} is not true or false")
    if metadata["n_envs"] != buffer.n_envs:
        raise CheckpointError(
            f"the dataset was collected with {metadata['n_envs']} envs, the model has {buffer.n_envs}: "
            "load it into a model with as many envs"
        )
    if metadata["buffer_size"] != buffer.buffer_size:
        raise CheckpointError(
            f"the dataset holds up to {metadata['buffer_size']} steps per env, the model's buffer_size gives "
            f"{buffer.buffer_size}: load it into a model with buffer_size={metadata['buffer_size'] * buffer.n_envs}"
        )
    observation_space = decode_value(metadata["observation_space"], allowed_class=lambda cls: False)
    if observation_space != buffer.observation_space:
        raise CheckpointError(f"the dataset's observations are {observation_space}, the model's {buffer.observation_space}")
    action_space = decode_value(metadata["action_space"], allowed_class=lambda cls: False)
    if action_space != buffer.action_space:
        raise CheckpointError(f"the dataset's actions are {action_space}, the model's {buffer.action_space}")
    pos, full = metadata["pos"], metadata["full"]
    if not pos < buffer.buffer_size:
        raise CheckpointError(f"the ring position pos={pos!r}, full={full!r} is invalid")
    return dataset_arrays(buffer, buffer.buffer_size if full else pos)


def _within_bounds(buffer: TWMReplayBuffer, stored: int) -> bool:
    # Bounds that the dtype already enforces (uint8 images in [0, 255]) need no pass over the data.
    space = buffer.observation_space
    if space.dtype == bool:
        return True
    info = np.finfo(space.dtype) if space.dtype.kind == "f" else np.iinfo(space.dtype)
    if np.all(space.low <= info.min) and np.all(space.high >= info.max):
        return True
    return all(
        np.all((array >= space.low) & (array <= space.high)) or (space.dtype.kind == "f" and not np.isfinite(array).all())
        for array in (buffer.observations[:stored], buffer.latest_next_observations)
    )


def _actions_outside(buffer: TWMReplayBuffer, stored: int) -> bool:
    actions = buffer.actions[:stored]
    if buffer.discrete_actions:
        return bool(np.any((actions < 0) | (actions >= buffer.action_space.n)))
    # Box actions are stored scaled to [-1, 1] (a little rounding of the scaling is allowed); NaN fails the test too.
    return not bool(np.all(np.abs(actions) <= 1.0 + 1e-5))


def _check_dataset_content(name: str, buffer: TWMReplayBuffer) -> None:
    stored = buffer.size()
    checks = {
        "actions outside the action space": _actions_outside(buffer, stored),
        "non-finite rewards": not np.all(np.isfinite(buffer.rewards[:stored])),
        "negative or non-finite visit counts": not np.all(np.isfinite(buffer.visits[:stored]))
        or np.any(buffer.visits[:stored] < 0),
        "flags that are not 0 or 1": any(
            np.any(getattr(buffer, flag)[:stored].view(np.uint8) > 1) for flag in ("terminated", "truncated")
        ),
        "non-finite observations": buffer.observations.dtype.kind == "f"
        and not all(np.isfinite(array).all() for array in (buffer.observations[:stored], buffer.latest_next_observations)),
    }
    problems = [problem for problem, found in checks.items() if found]
    if problems:
        raise CheckpointError(f"{name}: the dataset holds {', '.join(problems)} (corrupted or not TWM's)")
    # Not an error: envs may emit values beyond the Box they declare (SB3 stores them as they come), and such a
    # dataset must load again; finite values outside the bounds cannot harm the process.
    if not _within_bounds(buffer, stored):
        warnings.warn(
            f"{name}: the dataset holds observations outside the observation space's bounds (the env emits values "
            "beyond the Box it declares, or the file was changed); they are loaded as they are.",
            UserWarning,
            stacklevel=4,
        )
