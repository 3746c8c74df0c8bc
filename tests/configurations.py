"""
The tiny TWM configuration every test uses (the one place it is written): far too small to learn, fast enough for CI.
The real sizes are exercised by the shape and parameter-count tests.
"""

from typing import Any

TINY_WORLD_MODEL_KWARGS: dict[str, Any] = dict(
    embed_dim=32,
    num_heads=2,
    head_dim=16,
    num_layers=2,
    feedforward_dim=64,
    memory_length=8,
    z_head_dims=[64],
    reward_head_dims=[32],
    discount_head_dims=[32],
)
TINY_POLICY_KWARGS: dict[str, Any] = dict(
    net_arch=[64, 64], latent_categoricals=8, latent_classes=8, cnn_channels=8, encoder_hidden_dims=[64]
)
TINY_MLP_POLICY_KWARGS: dict[str, Any] = dict(
    net_arch=[32, 32], latent_categoricals=4, latent_classes=4, encoder_hidden_dims=[32], decoder_hidden_dims=[32]
)
# Without policy_kwargs: the tests pick CNN or MLP ones.
TINY_SCHEDULE_KWARGS: dict[str, Any] = dict(
    learning_starts=200,
    buffer_size=2000,
    batch_size=4,
    sequence_length=8,
    imagination_batch_size=16,
    imagination_horizon=5,
    train_ratio=0.25,
    pretrain_budget=2000,
    world_model_kwargs=TINY_WORLD_MODEL_KWARGS,
)
TINY_TWM_KWARGS: dict[str, Any] = dict(TINY_SCHEDULE_KWARGS, policy_kwargs=TINY_POLICY_KWARGS)
# 400 Pong steps with it (200 random, pretraining, 50 training steps) take a few seconds on 2 CPU cores.
