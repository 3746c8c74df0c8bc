"""
A tiny TWM on Pong that finishes in about 45 s on an idle 2-core CPU (minutes when the cores are busy): the whole
pipeline (random prefill, pretraining, world-model and actor-critic updates in imagination, save, load, predict) with
small networks. It will not learn to play in 1,000 steps; it shows the moving parts.

    python examples/quickstart.py
"""

import time

import numpy as np

from sb3_twm import TWM
from sb3_twm.common.atari import make_twm_atari_env

TINY = dict(
    learning_starts=500,
    buffer_size=5000,
    batch_size=8,
    sequence_length=8,
    imagination_batch_size=32,
    imagination_horizon=8,
    train_ratio=0.5,
    pretrain_budget=20_000,
    world_model_kwargs=dict(
        embed_dim=64,
        num_heads=2,
        head_dim=32,
        num_layers=2,
        feedforward_dim=128,
        memory_length=8,
        z_head_dims=[128],
        reward_head_dims=[64],
        discount_head_dims=[64],
    ),
    policy_kwargs=dict(net_arch=[64, 64], latent_categoricals=8, latent_classes=8, cnn_channels=8, encoder_hidden_dims=[128]),
)


def main() -> None:
    start = time.time()
    env = make_twm_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0)
    model = TWM("CnnPolicy", env, seed=0, verbose=1, **TINY)
    world_model_params = sum(p.numel() for p in model.world_model.parameters())
    policy_params = sum(p.numel() for p in model.policy.parameters())
    print(f"world model: {world_model_params:,} parameters; acting policy (encoder + actor): {policy_params:,}")
    model.learn(1000, log_interval=1)
    print(f"trained {model.num_timesteps} env steps, {model._n_updates} training steps "
          f"(each: a world-model update on {model.batch_size}x{model.sequence_length} and an actor-critic update "
          f"on {model.imagination_batch_size} imagined rollouts of {model.imagination_horizon} steps)")  # fmt: skip
    model.save("twm_quickstart")
    loaded = TWM.load("twm_quickstart", env=env)
    obs = env.reset()
    actions, _ = loaded.predict(np.repeat(obs, 4, axis=0), deterministic=False)
    print(f"saved twm_quickstart.zip, reloaded it and predicted actions {actions.tolist()} for 4 observations")
    print(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
