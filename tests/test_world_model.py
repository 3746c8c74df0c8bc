"""World-model training on recorded Pong frames, and imagination from its latents."""

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_twm.common.buffers import TWMReplayBuffer
from sb3_twm.world_model import (
    DynamicsModel,
    ImaginationStart,
    ObservationModel,
    WorldModel,
    WorldModelBatch,
    imagine,
    make_decoder,
    make_encoder,
)
from sb3_twm.world_model.losses import HALF_LOG_TWO_PI

SPACE = spaces.Box(0, 255, (4, 64, 64), np.uint8)


def tiny_world_model(num_actions: int = 6, lr: float = 1e-3) -> WorldModel:
    th.manual_seed(0)
    encoder = make_encoder(SPACE, 8, 8, cnn_channels=8, hidden_dims=[128])
    decoder = make_decoder(SPACE, encoder.latent_dim, cnn_channels=8)
    dynamics = DynamicsModel(
        num_actions, 8, 8, embed_dim=64, num_heads=2, head_dim=32, num_layers=2, feedforward_dim=128, memory_length=8,
        z_head_dims=[128], reward_head_dims=[64], discount_head_dims=[64],
    )  # fmt: skip
    settings = {"lr": lr, "eps": 1e-5, "weight_decay": 1e-6, "max_grad_norm": 100.0}
    return WorldModel(ObservationModel(encoder, decoder), dynamics, settings, settings)


def fill_buffer(recording) -> TWMReplayBuffer:
    buffer = TWMReplayBuffer(len(recording["actions"]), SPACE, spaces.Discrete(6), device="cpu")
    observations = recording["observations"]
    for t in range(len(observations)):
        next_obs = observations[min(t + 1, len(observations) - 1)]
        buffer.add(observations[t][None], next_obs[None], recording["actions"][t : t + 1], recording["rewards"][t : t + 1],
                   recording["dones"][t : t + 1], [{}])  # fmt: skip
    return buffer


def to_batch(sample) -> WorldModelBatch:
    return WorldModelBatch(
        th.as_tensor(sample.observations).float() / 255.0,
        th.as_tensor(sample.actions),
        th.tanh(th.as_tensor(sample.rewards)),
        th.as_tensor(sample.terminated),
        th.as_tensor(sample.truncated),
    )


def test_training_on_pong_lowers_reconstruction_and_reward_losses(pong_recording):
    th.manual_seed(0)
    np.random.seed(0)
    buffer = fill_buffer(pong_recording)
    world_model = tiny_world_model()
    history = []
    for _ in range(120):
        output, terms, _ = world_model.train_step(to_batch(buffer.sample_sequences(8, 16)))
        history.append({key: value.item() for key, value in terms.items()})
    assert output.z.shape == (8, 17, 64) and output.dones.shape == (8, 17)
    pixels = 4 * 64 * 64
    first = np.mean([h["reconstruction_loss"] for h in history[:5]]) - pixels * HALF_LOG_TWO_PI
    last = np.mean([h["reconstruction_loss"] for h in history[-5:]]) - pixels * HALF_LOG_TWO_PI
    # Squared reconstruction error (the NLL without its constant) drops by more than 10x.
    assert last < first / 10, (first, last)
    first_reward = np.mean([h["reward_loss"] for h in history[:5]]) - HALF_LOG_TWO_PI
    last_reward = np.mean([h["reward_loss"] for h in history[-10:]]) - HALF_LOG_TWO_PI
    assert last_reward < first_reward / 3, (first_reward, last_reward)
    assert all(np.isfinite(list(h.values())).all() for h in history)


def test_each_optimizer_updates_only_its_model():
    world_model = tiny_world_model()
    batch = WorldModelBatch(
        th.rand(2, 6, 4, 64, 64), th.randint(0, 6, (2, 5)), th.randn(2, 5), th.zeros(2, 5, dtype=th.bool),
        th.zeros(2, 5, dtype=th.bool),
    )  # fmt: skip
    before = {name: p.clone() for name, p in world_model.named_parameters()}
    world_model.train_step(batch)
    changed = {name for name, p in world_model.named_parameters() if not th.equal(p, before[name])}
    assert any(name.startswith("dynamics_model.") for name in changed)
    assert any(name.startswith("observation_model.encoder.") for name in changed)
    assert any(name.startswith("observation_model.decoder.") for name in changed)
    assert world_model.observation_optimizer is not world_model.dynamics_optimizer
    observation_params = {id(p) for g in world_model.observation_optimizer.param_groups for p in g["params"]}
    dynamics_params = {id(p) for g in world_model.dynamics_optimizer.param_groups for p in g["params"]}
    assert not observation_params & dynamics_params


def test_pretraining_steps_touch_one_model_each():
    world_model = tiny_world_model()
    encoder_before = [p.clone() for p in world_model.observation_model.parameters()]
    dynamics_before = [p.clone() for p in world_model.dynamics_model.parameters()]
    world_model.pretrain_dynamics_step(
        th.randn(2, 7, 8, 8), th.randint(0, 6, (2, 6)), th.randn(2, 6), th.zeros(2, 6, dtype=th.bool),
        th.zeros(2, 6, dtype=th.bool),
    )  # fmt: skip
    assert all(th.equal(a, b) for a, b in zip(encoder_before, world_model.observation_model.parameters()))
    assert not all(th.equal(a, b) for a, b in zip(dynamics_before, world_model.dynamics_model.parameters()))
    terms = world_model.pretrain_observation_step(th.rand(5, 4, 64, 64)).metrics
    assert "reconstruction_loss" in terms and "consistency_loss" not in terms


def test_imagination_shapes_weights_and_restarts():
    world_model = tiny_world_model(num_actions=3)
    dynamics = world_model.dynamics_model.train()
    N, H, latent = 6, 5, 64
    z = th.zeros(N, latent)
    z[:, ::8] = 1.0
    restarts = []

    def restart(count):
        restarts.append(count)
        return z[:count]

    start = ImaginationStart(z, th.zeros(N, dtype=th.long), th.zeros(N), th.zeros(N, dtype=th.bool), z)
    trajectories = imagine(dynamics, start, lambda latents: th.randint(0, 3, (latents.shape[0],)), H, 0.1, restart)
    assert dynamics.training  # the training mode is restored
    assert trajectories.z.shape == (N, H + 1, latent)
    assert trajectories.actions.shape == (N, H) and trajectories.rewards.shape == (N, H)
    assert trajectories.weights.shape == (N, H + 1)
    assert th.all(trajectories.weights[:, 0] == 1.0)
    # Untrained discount head: sigmoid(0.99) ~ 0.73 per step, so 0.73^8 < 0.1 would restart after 8 steps;
    # weights are cumulative products of the predicted discounts until then.
    expected = th.cumprod(trajectories.discounts, dim=1)
    assert th.allclose(trajectories.weights[:, 1:], expected, atol=1e-6)
    assert not trajectories.dones.any() and not restarts
    # A threshold above every discount restarts every rollout after every step, from fresh latents.
    restarted = imagine(dynamics, start, lambda latents: th.randint(0, 3, (latents.shape[0],)), H, 0.99, restart)
    assert restarted.dones.all() and restarts == [N] * H
    assert th.all(restarted.weights == 1.0)


def test_imagination_with_most_likely_latents():
    world_model = tiny_world_model(num_actions=3)
    dynamics = world_model.dynamics_model
    N, H, latent = 6, 4, 64
    z = th.zeros(N, latent)
    z[:, ::8] = 1.0
    start = ImaginationStart(z, th.zeros(N, dtype=th.long), th.zeros(N), th.zeros(N, dtype=th.bool), z)

    def rollout(temperature: float, seed: int) -> th.Tensor:
        th.manual_seed(seed)
        return imagine(dynamics, start, lambda latents: th.ones(latents.shape[0], dtype=th.long), H, 0.0,
                       lambda count: z[:count], temperature).z  # fmt: skip

    # Temperature 0: each next latent is the argmax of the dynamics model's prediction, whatever the generator.
    most_likely = rollout(0.0, 0)
    assert th.equal(most_likely, rollout(0.0, 1))
    dynamics.eval()  # as imagination evaluates it: no dropout
    memory = dynamics.start_memory(z, th.zeros(N, dtype=th.long))
    prediction, _ = dynamics.step(memory, th.zeros(N), th.zeros(N, dtype=th.bool), z, th.ones(N, dtype=th.long))
    first = prediction.z_logits[:, 0].argmax(-1)  # (N, K)
    assert th.equal(most_likely[:, 1].view(N, 8, 8).argmax(-1), first)
    # The default samples.
    assert not th.equal(rollout(1.0, 0), rollout(1.0, 1))
