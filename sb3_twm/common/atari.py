"""
TWM's Atari preprocessing, built only from SB3's own wrappers: ``AtariWrapper`` (64x64 grayscale, frame skip 4 with
max-pool, up to 30 no-ops, raw rewards, life loss ends the agent's episode) and ``VecFrameStack(4)``, on
``*NoFrameskip-v4`` games (no sticky actions; ALE's 108k-frame cap is the 27k-step time limit).
"""

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


def register_atari_envs() -> None:
    """Register ALE's games with Gymnasium (``PongNoFrameskip-v4`` etc.); ale-py ships the ROMs."""
    import ale_py

    gym.register_envs(ale_py)


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

    :param env_id: A ``*NoFrameskip-v4`` game id.
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
    env = make_atari_env(env_id, n_envs=n_envs, seed=seed, wrapper_kwargs=wrapper_kwargs, **kwargs)
    return VecFrameStack(env, n_stack=frame_stack)
