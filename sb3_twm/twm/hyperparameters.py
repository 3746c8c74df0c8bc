"""
Checks of TWM's hyperparameters and the one derived from them (training steps per env step).

The defaults themselves are written once, where they are used: ``TWM.__init__``'s signature (the algorithm's
keywords), ``WorldModel.build``'s constructors (``world_model_kwargs``: see
:func:`~sb3_twm.world_model.world_model.world_model_defaults`), ``OPTIMIZER_DEFAULTS`` of the world model and
``ACTOR_OPTIMIZER_DEFAULTS``/``CRITIC_OPTIMIZER_DEFAULTS`` of the actor-critic, and ``TWMPolicy.__init__``
(``policy_kwargs``). ``tests/test_defaults.py`` checks the README's table against them.
"""

import math
from typing import TYPE_CHECKING

import numpy as np

from sb3_twm.common.buffers import REWARD_TRANSFORMS, TWMReplayBuffer
from sb3_twm.common.checks import check_keys, check_non_negative_number, check_positive_ints, check_widths
from sb3_twm.common.optim import OPTIMIZER_KEYS
from sb3_twm.world_model.world_model import world_model_keys

if TYPE_CHECKING:
    from sb3_twm.twm.twm import TWM


def training_steps_per_env_step(model: "TWM") -> float:
    """
    :param model: The algorithm.
    :return: ``train_ratio``, or what the budgets imply, as the reference derives it: the training steps that
        ``budget - pretrain_budget`` sampled steps pay for, spread over the env steps after the prefill (1.316 at the
        defaults).
    """
    if model.train_ratio is not None:
        return float(model.train_ratio)
    samples_per_step = (
        model.world_model_train_steps * model.batch_size * model.sequence_length
        + model.imagination_batch_size * model.imagination_horizon
    )
    training_steps = (model.budget - model.pretrain_budget) / samples_per_step
    return training_steps / (model.buffer_size - model.learning_starts)


def check_hyperparameters(model: "TWM") -> None:
    """
    Raise a ``ValueError`` naming the fix for any invalid hyperparameter of ``model``.

    :param model: The algorithm, before its networks are built.
    """
    check_positive_ints(
        {
            "buffer_size": model.buffer_size,
            "batch_size": model.batch_size,
            "sequence_length": model.sequence_length,
            "world_model_train_steps": model.world_model_train_steps,
            "imagination_batch_size": model.imagination_batch_size,
            "imagination_horizon": model.imagination_horizon,
            "target_update_interval": model.target_update_interval,
            "stats_window_size": model._stats_window_size,
        }
    )
    _check_schedule(model)
    _check_dataset_sizes(model)
    for name, value in (("gamma", model.gamma), ("gae_lambda", model.gae_lambda)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}.")
    if not 0.0 <= model.discount_threshold < 1.0:
        raise ValueError(f"discount_threshold must be in [0, 1), got {model.discount_threshold}.")
    if not model.buffer_temperature > 0:
        raise ValueError(f"buffer_temperature must be > 0, got {model.buffer_temperature}.")
    if model.reward_transform not in REWARD_TRANSFORMS:
        raise ValueError(f"reward_transform must be one of {sorted(REWARD_TRANSFORMS)}, got {model.reward_transform!r}.")
    if isinstance(model.reward_scale, bool) or not isinstance(model.reward_scale, (int, float)) or not (
        0.0 < model.reward_scale < math.inf
    ):
        raise ValueError(f"reward_scale must be a finite number > 0, got {model.reward_scale!r}.")
    for name in ("ent_coef", "entropy_threshold", "pretrain_budget", "pretrain_observation_share",
                 "pretrain_dynamics_share", "pretrain_actor_critic_share"):  # fmt: skip
        if getattr(model, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(model, name)}.")
    if not (isinstance(model.log_dream_interval, int) and model.log_dream_interval >= 0):
        raise ValueError(f"log_dream_interval must be an integer >= 0 (0: no dreams), got {model.log_dream_interval!r}.")
    _check_nested_kwargs(model)
    if model.replay_buffer_class is not None and not issubclass(model.replay_buffer_class, TWMReplayBuffer):
        raise ValueError(
            f"replay_buffer_class must be a subclass of TWMReplayBuffer (it samples sequences), "
            f"got {model.replay_buffer_class.__name__}."
        )


def _check_schedule(model: "TWM") -> None:
    if model.learning_starts < 0:
        raise ValueError(f"learning_starts must be >= 0, got {model.learning_starts}.")
    frequency = model.train_freq[0] if isinstance(model.train_freq, tuple) else model.train_freq
    if isinstance(frequency, bool) or not isinstance(frequency, (int, np.integer)) or frequency <= 0:
        raise ValueError(f"train_freq must be a positive number of steps (or (n, 'episode')), got {model.train_freq!r}.")
    if model.gradient_steps < -1:
        raise ValueError(f"gradient_steps must be >= 0, or -1 to follow train_ratio, got {model.gradient_steps}.")
    if model.train_ratio is not None and not model.train_ratio > 0:
        raise ValueError(f"train_ratio must be > 0 (training steps per env step), got {model.train_ratio}.")
    if model.train_ratio is None and model.gradient_steps < 0:
        if model.buffer_size <= model.learning_starts:
            raise ValueError(
                "train_ratio cannot be derived from the budgets when buffer_size <= learning_starts: set train_ratio."
            )
        if model.budget <= model.pretrain_budget:
            raise ValueError(f"budget={model.budget} must exceed pretrain_budget={model.pretrain_budget}.")


def _check_dataset_sizes(model: "TWM") -> None:
    per_env_prefill = model.learning_starts // model.n_envs
    candidates = (per_env_prefill - model.sequence_length + 1) * model.n_envs
    if candidates < model.batch_size:
        needed = (math.ceil(model.batch_size / model.n_envs) + model.sequence_length - 1) * model.n_envs
        raise ValueError(
            f"learning_starts={model.learning_starts} random steps cannot fill a first batch of {model.batch_size} "
            f"sequences of {model.sequence_length} steps with {model.n_envs} env(s): set learning_starts >= {needed} "
            "or lower batch_size/sequence_length."
        )
    if model.buffer_size // model.n_envs < per_env_prefill:
        raise ValueError(
            f"buffer_size={model.buffer_size} is smaller than learning_starts={model.learning_starts}: "
            "the dataset must hold the random prefill."
        )
    if model.imagination_batch_size > model.batch_size * model.sequence_length:
        raise ValueError(
            f"imagination_batch_size={model.imagination_batch_size} exceeds the {model.batch_size * model.sequence_length} "
            "start states of a world-model batch (batch_size * sequence_length): lower it or raise those."
        )


def _check_nested_kwargs(model: "TWM") -> None:
    keys = world_model_keys()
    check_keys("world_model_kwargs", model.world_model_kwargs, [key for group in keys.values() for key in group])
    for key in ("z_head_dims", "reward_head_dims", "discount_head_dims"):
        check_widths(f"world_model_kwargs[{key!r}]", model.world_model_kwargs.get(key, []))
    for key in (*keys["observation_model"], *keys["world_model"]):  # the loss weights
        check_non_negative_number(f"world_model_kwargs[{key!r}]", model.world_model_kwargs.get(key, 0.0))
    for name in ("observation", "dynamics", "actor", "critic"):
        check_keys("optimizer settings", getattr(model, f"{name}_optimizer_kwargs"), OPTIMIZER_KEYS)
    net_arch = model.policy_kwargs.get("net_arch")
    for name, widths in (net_arch.items() if isinstance(net_arch, dict) else [("net_arch", net_arch)]):
        check_widths(f"policy_kwargs net_arch {name!r}" if name != "net_arch" else "policy_kwargs['net_arch']", widths)
    for key in ("encoder_hidden_dims", "decoder_hidden_dims"):
        check_widths(f"policy_kwargs[{key!r}]", model.policy_kwargs.get(key))
