"""
TWM's Atari preprocessing, built only from SB3's own wrappers: ``AtariWrapper`` (64x64 grayscale, frame skip 4 with
max-pool, up to 30 no-ops, raw rewards, life loss ends the agent's episode) and ``VecFrameStack(4)``, on ALE games
without sticky actions (the Atari 100k protocol; ALE's 108k-frame cap is the 27k-step time limit).
"""

import warnings
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

TWM_ATARI_WRAPPER_KWARGS: dict[str, Any] = {
    "noop_max": 30,
    "frame_skip": 4,
    "screen_size": 64,
    "terminal_on_life_loss": True,
    "clip_reward": False,
}
# What the ALE env itself must do under AtariWrapper: no frame skip of its own (the wrapper skips and max-pools) and no
# sticky actions (``ALE/*-v5`` ids repeat the previous action with probability 0.25 by default).
ALE_ENV_KWARGS: dict[str, Any] = {"frameskip": 1, "repeat_action_probability": 0.0}


def register_atari_envs() -> None:
    """Register ALE's games with Gymnasium (``PongNoFrameskip-v4``, ``ALE/Pong-v5``, ...); ale-py ships the ROMs."""
    import ale_py

    gym.register_envs(ale_py)


def is_atari_id(env_id: str) -> bool:
    """
    :param env_id: A Gymnasium id.
    :return: Whether it names an ALE game (after registering them).
    """
    register_atari_envs()
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        return False
    return str(spec.entry_point).startswith("ale_py")


def make_twm_atari_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    frame_stack: int = 4,
    evaluation: bool = False,
    **kwargs: Any,
) -> VecEnv:
    """
    Make vectorised Atari envs preprocessed as TWM expects.

    :param env_id: An ALE game id: ``*NoFrameskip-v4``, or ``ALE/*-v5`` (made without its own frame skip and sticky
        actions, as ``NoFrameskip-v4``; passing ``env_kwargs=dict(repeat_action_probability=...)`` keeps sticky actions,
        with a warning).
    :param n_envs: Number of envs.
    :param seed: Seed of the first env (the others get ``seed + i``).
    :param frame_stack: Frames stacked as channels.
    :param evaluation: Evaluation envs start without no-ops, as in the reference's evaluation. Scores are whole
        games either way: SB3's ``Monitor`` sits under the life-loss wrapper, and ``evaluate_policy`` counts its
        episodes.
    :param kwargs: Passed to SB3's ``make_atari_env`` (``vec_env_cls``, ``env_kwargs``, ``monitor_dir``, ...).
    :return: The VecEnv (observations ``(n_envs, 64, 64, frame_stack)`` uint8; SB3 algorithms transpose them).
    """
    register_atari_envs()
    wrapper_kwargs = {**TWM_ATARI_WRAPPER_KWARGS, **kwargs.pop("wrapper_kwargs", {})}
    if evaluation:
        wrapper_kwargs["noop_max"] = 0
    env_kwargs = {**ALE_ENV_KWARGS, **(kwargs.pop("env_kwargs", None) or {})}
    if env_kwargs["repeat_action_probability"] > 0:
        warnings.warn(
            f"{env_id} with sticky actions (repeat_action_probability={env_kwargs['repeat_action_probability']}): "
            "the Atari 100k protocol of TWM's paper uses none, so scores are not comparable with it.",
            stacklevel=2,
        )
    env = make_atari_env(env_id, n_envs=n_envs, seed=seed, wrapper_kwargs=wrapper_kwargs, env_kwargs=env_kwargs, **kwargs)
    return VecFrameStack(env, n_stack=frame_stack)
