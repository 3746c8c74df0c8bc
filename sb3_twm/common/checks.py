"""Checks of arguments shared by TWM's parts: each raises a ``ValueError`` that says what to change."""

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from gymnasium import spaces


def check_positive_int(name: str, value: Any) -> None:
    """Raise unless ``value`` is an integer > 0 (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def check_positive_ints(values: dict[str, Any]) -> None:
    """Raise unless every value of ``name -> value`` is an integer > 0."""
    for name, value in values.items():
        check_positive_int(name, value)


def check_non_negative_number(name: str, value: Any) -> None:
    """Raise unless ``value`` is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    if not (0.0 <= value < math.inf):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")


def check_widths(name: str, widths: Any) -> None:
    """Raise unless ``widths`` is None or a list of positive layer widths (a zero width builds a constant network)."""
    if widths is None:
        return
    if not isinstance(widths, (list, tuple)) or not all(
        not isinstance(width, bool) and isinstance(width, (int, np.integer)) and width > 0 for width in widths
    ):
        raise ValueError(f"{name} must be a list of positive layer widths, got {widths!r}.")


def check_action_space(action_space: spaces.Space) -> None:
    """Raise unless the action space is ``Discrete`` or a non-empty ``Box`` with finite bounds."""
    if isinstance(action_space, spaces.Discrete):
        return
    if not isinstance(action_space, spaces.Box):
        raise ValueError(
            f"TWM supports Discrete and Box action spaces, got {action_space}: flatten Tuple or Dict actions into a Box "
            "(or a Discrete) with a wrapper."
        )
    if int(np.prod(action_space.shape)) == 0:
        raise ValueError(f"TWM needs at least one action dimension, got {action_space}.")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(
            f"TWM needs finite bounds on Box actions (its actor chooses among evenly spaced values between them), got "
            f"{action_space}: give the env the bounds its actions really have, e.g. a gymnasium.ActionWrapper that sets "
            "action_space = Box(low, high) and clips the actions it passes on."
        )
    if not np.all(action_space.high > action_space.low):
        raise ValueError(f"TWM needs Box actions with high > low in every dimension, got {action_space}.")


def check_box_observations(observation_space: spaces.Space) -> None:
    """Raise unless the observation space is a ``Box``."""
    if not isinstance(observation_space, spaces.Box):
        raise ValueError(
            f"TWM supports only Box observation spaces (images with CnnPolicy, vectors with MlpPolicy), got "
            f"{observation_space}: flatten Dict observations with gymnasium.wrappers.FlattenObservation and use "
            "MlpPolicy."
        )


def check_keys(name: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise unless every key of ``given`` is one of ``valid``."""
    unknown = set(given) - set(valid)
    if unknown:
        raise ValueError(f"Unknown {name} {sorted(unknown)}; valid keys: {sorted(valid)}.")


def check_policy_observations(policy: Any, observation_space: Any) -> None:
    """
    Raise for observation spaces TWM cannot take, before SB3 builds anything (its messages do not say what to change).

    :param policy: The policy (name or class).
    :param observation_space: The env's observation space (None: no env yet).
    """
    if observation_space is None:
        return
    if isinstance(observation_space, (spaces.Dict, spaces.Tuple)):
        check_box_observations(observation_space)
    cnn = policy == "CnnPolicy" or getattr(policy, "observation_architecture", None) == "cnn"
    if cnn and isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 3:
        height_or_channels, middle, last = observation_space.shape
        if middle < height_or_channels and middle < last:
            # SB3 would take the last axis for channels and pass on a garbled image.
            raise ValueError(
                f"CnnPolicy needs images as (height, width, channels) or (channels, height, width), got shape "
                f"{observation_space.shape}: its smallest axis is in the middle, which looks like a misplaced "
                "channel axis. Transpose the observations (e.g. gymnasium.wrappers.TransformObservation)."
            )


def check_env_step(step: int, rewards: np.ndarray, new_obs: Any) -> None:
    """
    Raise for non-finite rewards or observations of an env step (TWM cannot learn from them).

    :param step: The step counter, for the message.
    :param rewards: ``(n_envs,)`` rewards.
    :param new_obs: ``(n_envs, *obs_shape)`` observations.
    """
    rewards = np.asarray(rewards)
    if not np.all(np.isfinite(rewards)):
        env_index = int(np.flatnonzero(~np.isfinite(rewards.reshape(-1)))[0])
        raise ValueError(
            f"The env returned a non-finite reward ({rewards.reshape(-1)[env_index]}) at step {step} (env {env_index}). "
            "TWM cannot learn from NaN/inf rewards: fix the env or clip its rewards (e.g. "
            "gymnasium.wrappers.TransformReward)."
        )
    observations = np.asarray(new_obs)
    if observations.dtype.kind == "f" and not np.all(np.isfinite(observations)):
        env_index = int(np.flatnonzero((~np.isfinite(observations.reshape(len(observations), -1))).any(axis=1))[0])
        raise ValueError(
            f"The env returned a non-finite observation at step {step} (env {env_index}). "
            "TWM cannot learn from NaN/inf observations: fix the env."
        )


def check_frame_stack(policy: Any, observation_space: spaces.Space) -> None:
    """
    Warn when a CnnPolicy gets images whose channel count suggests single frames (1 grayscale or 3 RGB channels):
    TWM's observation model sees motion only through stacked frames.

    :param policy: The policy (name or class).
    :param observation_space: The (channel-first) observation space.
    """
    cnn = policy == "CnnPolicy" or getattr(policy, "observation_architecture", None) == "cnn"
    shape = getattr(observation_space, "shape", None)
    if cnn and shape is not None and len(shape) == 3 and shape[0] in (1, 3):
        warnings.warn(
            f"CnnPolicy gets images with {shape[0]} channel(s) {tuple(shape)}, which looks like single frames: TWM "
            "expects stacked frames (the paper: 4 grayscale). Wrap the env with VecFrameStack(env, n_stack=4), or "
            "make Atari games with sb3_twm.common.atari.make_twm_atari_env.",
            stacklevel=3,
        )
