"""
What the attributes of a TWM checkpoint may be: the training state a checkpoint restores besides the constructor's
arguments, the type each attribute must have, and the classes a checkpoint may name. ``TWM.load``
(:mod:`sb3_twm.twm.checkpointing`) sets nothing from a file that these checks did not accept.
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.type_aliases import TrainFreq
from torch import nn

from sb3_twm.common.buffers import TWMReplayBuffer
from sb3_twm.common.checkpoints.values import SCHEDULE_CLASSES
from sb3_twm.twm.policies import TWMPolicy

__all__ = ["STATE_ATTRIBUTES", "allowed_class", "check_attribute", "constructor_defaults", "is_int"]


def is_int(value: Any, low: int = 0) -> bool:
    """:return: Whether ``value`` is an integer (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_episode_buffer(value: Any) -> bool:
    # SB3's episode statistics: a deque of {"r": return, "l": length, "t": time} (or success flags), or None.
    if value is None:
        return True
    if not isinstance(value, deque) or not (value.maxlen is None or value.maxlen >= 1):
        return False
    return all(
        isinstance(item, bool) or (isinstance(item, dict) and all(_is_number(v) or isinstance(v, bool) for v in item.values()))
        for item in value
    )


def _is_schedule(value: Any) -> bool:
    return f"{type(value).__module__}.{type(value).__qualname__}" in SCHEDULE_CLASSES


# The training state a checkpoint restores besides the constructor's arguments, each with what it must be: nothing
# else is ever set from a file.
STATE_ATTRIBUTES: dict[str, Callable[[Any], bool]] = {
    "policy_class": lambda value: isinstance(value, type) and issubclass(value, TWMPolicy),
    "observation_space": lambda value: isinstance(value, spaces.Box),
    "action_space": lambda value: isinstance(value, (spaces.Discrete, spaces.Box)),
    "n_envs": lambda value: is_int(value, 1),
    **{
        key: is_int
        for key in (
            "num_timesteps",
            "_total_timesteps",
            "_num_timesteps_at_start",
            "_episode_num",
            "_n_updates",
            "_actor_critic_updates",
            "_skipped_updates",
            "_untrained_env_steps",
        )
    },
    "_pretrained": lambda value: isinstance(value, bool),
    "_train_credit": lambda value: _is_number(value) and value >= 0,
    "_current_progress_remaining": _is_number,
    "_stats_window_size": lambda value: is_int(value, 1),
    "start_time": _is_number,
    "action_noise": lambda value: value is None,
    "use_sde": lambda value: value is False,
    "use_sde_at_warmup": lambda value: isinstance(value, bool),
    "sde_sample_freq": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "optimize_memory_usage": lambda value: isinstance(value, bool),
    "tau": _is_number,
    "n_steps": lambda value: is_int(value, 1),
    "ep_info_buffer": _is_episode_buffer,
    "ep_success_buffer": _is_episode_buffer,
    "_checkpoint": lambda value: isinstance(value, dict) and set(value) == {"version", "rng"},
}
# Constructor arguments whose default (None, or a number that may also be a schedule) does not tell what they are.
_ARGUMENT_CHECKS: dict[str, Callable[[Any], bool]] = {
    "learning_rate": lambda value: (_is_number(value) and value >= 0) or _is_schedule(value),
    "train_freq": lambda value: is_int(value, 1) or isinstance(value, (TrainFreq, tuple)),
    "train_ratio": lambda value: value is None or _is_number(value),
    "mixed_precision": lambda value: value is None or isinstance(value, bool),
    "seed": lambda value: value is None or (isinstance(value, int) and not isinstance(value, bool)),
    "tensorboard_log": lambda value: value is None or isinstance(value, str),
    "replay_buffer_class": lambda value: value is None or (isinstance(value, type) and issubclass(value, TWMReplayBuffer)),
    **{
        key: lambda value: value is None or (isinstance(value, dict) and all(isinstance(k, str) for k in value))
        for key in (
            "world_model_kwargs",
            "observation_optimizer_kwargs",
            "dynamics_optimizer_kwargs",
            "actor_optimizer_kwargs",
            "critic_optimizer_kwargs",
            "replay_buffer_kwargs",
            "policy_kwargs",
        )
    },
}
# Constructor arguments never taken from a file: the caller's (device, env) or not saved as such.
_NOT_FROM_FILE = frozenset({"self", "policy", "env", "device", "_init_setup_model", "stats_window_size"})


def constructor_defaults(cls: type) -> dict[str, Any]:
    """
    :param cls: ``TWM`` or a subclass.
    :return: The defaults of the constructor arguments a checkpoint may set.
    """
    parameters = inspect.signature(cls.__init__).parameters
    return {key: parameter.default for key, parameter in parameters.items() if key not in _NOT_FROM_FILE}


def check_attribute(key: str, value: Any, constructor: dict[str, Any]) -> None:
    """
    Raise ``ValueError`` unless a decoded attribute has the type the model needs (value ranges are checked by the
    hyperparameter checks when the model is built).

    :param key: The attribute.
    :param value: Its decoded value.
    :param constructor: ``constructor_defaults`` of the model's class.
    """
    check = STATE_ATTRIBUTES.get(key) or _ARGUMENT_CHECKS.get(key)
    if check is None:
        default = constructor[key]
        if isinstance(default, bool):
            check = lambda value: isinstance(value, bool)  # noqa: E731
        elif isinstance(default, int):
            check = lambda value: isinstance(value, int) and not isinstance(value, bool)  # noqa: E731
        elif isinstance(default, float):
            check = _is_number
        elif isinstance(default, str):
            check = lambda value: isinstance(value, str)  # noqa: E731
        else:
            return
    if not check(value):
        raise ValueError(f"{str(value)[:80]!r} is not a valid value for it")


def allowed_class(cls: type) -> bool:
    """
    :param cls: A class a checkpoint names.
    :return: Whether it is one a checkpoint may name: TWM's policies and datasets (and subclasses), torch's activations.
    """
    if issubclass(cls, (TWMPolicy, TWMReplayBuffer)):
        return True
    return issubclass(cls, nn.Module) and cls.__module__ == "torch.nn.modules.activation"
