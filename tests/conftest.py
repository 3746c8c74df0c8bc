"""Shared fixtures: tiny TWM configurations (the real sizes are exercised by the shape/parameter-count tests)."""

import copy
from typing import Any

import numpy as np
import pytest
import torch as th
from configurations import TINY_TWM_KWARGS

from sb3_twm.common.atari import make_twm_atari_env

th.set_num_threads(1)


@pytest.fixture
def tiny_kwargs() -> dict[str, Any]:
    """A fresh copy of the tiny TWM keyword arguments."""
    return copy.deepcopy(TINY_TWM_KWARGS)


@pytest.fixture
def pong_env():
    """One PongNoFrameskip-v4 env with TWM's preprocessing (observations (1, 64, 64, 4) uint8)."""
    env = make_twm_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0)
    yield env
    env.close()


@pytest.fixture(scope="session")
def pong_recording() -> dict[str, np.ndarray]:
    """1,500 random-action steps of Pong (transposed frames, actions, raw rewards, dones), recorded once per session."""
    env = make_twm_atari_env("PongNoFrameskip-v4", n_envs=1, seed=1)
    rng = np.random.default_rng(0)
    observations, actions, rewards, dones = [], [], [], []
    obs = env.reset()
    for _ in range(1500):
        action = rng.integers(env.action_space.n, size=1)
        observations.append(obs[0].transpose(2, 0, 1))
        obs, reward, done, _ = env.step(action)
        actions.append(action[0])
        rewards.append(reward[0])
        dones.append(done[0])
    env.close()
    return {
        "observations": np.stack(observations),
        "actions": np.array(actions),
        "rewards": np.array(rewards, dtype=np.float32),
        "dones": np.array(dones),
    }
