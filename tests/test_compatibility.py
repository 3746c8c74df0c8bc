"""Checkpoints saved by earlier versions of sb3-twm load and train on (fixtures in tests/fixtures/)."""

import pathlib

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_twm import TWM
from sb3_twm.common.atari import make_twm_atari_env

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "v0.1-main-187bc71"


@pytest.mark.parametrize(
    "name, make_env, saved_steps",
    [
        ("cnn_pong", lambda: make_twm_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0), 240),
        ("mlp_acrobot", lambda: gym.make("Acrobot-v1"), 300),
    ],
)
def test_checkpoint_of_commit_187bc71_loads_and_continues(name, make_env, saved_steps):
    env = make_env()
    model = TWM.load(FIXTURES / f"{name}.zip", env=env)
    assert model.num_timesteps == saved_steps and model._pretrained
    model.load_replay_buffer(FIXTURES / f"{name}_dataset.npz")
    assert model.replay_buffer.size() * model.n_envs == min(saved_steps, model.buffer_size)
    before = {key: value.clone() for key, value in model.policy.state_dict().items()}
    updates = model._n_updates
    model.learn(40, reset_num_timesteps=False)
    assert model.num_timesteps == saved_steps + 40
    assert model._n_updates == updates + 10  # train_ratio 0.25
    after = model.policy.state_dict()
    assert any(not th.equal(before[key], after[key]) for key in before)
    assert all(th.isfinite(value).all() for value in after.values())
    obs = env.reset() if hasattr(env, "num_envs") else env.reset()[0]
    action, _ = model.predict(np.asarray(obs), deterministic=True)
    assert model.action_space.contains(int(np.asarray(action).reshape(-1)[0]))
