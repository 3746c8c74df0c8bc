"""
Dreams: what the world model makes of real sequences, for people to look at. Each step of a real sequence is shown
three ways: the real observation, its reconstruction (encoded, then decoded), and the world model's own version:
for the first ``context`` steps the decoded real latents the dynamics model is fed, after them an open-loop
continuation, the dynamics model alone (its sampled next latents, its predicted rewards fed back, actions from the
policy), decoded. Predicted rewards and discounts are given for every step, next to the real ones.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch as th

from sb3_twm.common.distributions import sample_one_hot
from sb3_twm.common.type_aliases import WorldModelBatch
from sb3_twm.world_model.dynamics_model import DynamicsModel
from sb3_twm.world_model.observation_model import ObservationModel

__all__ = ["Dream", "dream"]


class Dream(NamedTuple):
    """
    ``B`` real sequences of ``T`` steps as the world model sees them (features: images scaled to [0, 1]).
    """

    real: th.Tensor  # (B, T, *obs_shape) the real observations
    reconstructed: th.Tensor  # (B, T, *obs_shape) decoded argmax latents of the real observations
    imagined: th.Tensor  # (B, T, *obs_shape) decoded latents: real for t < context, the dynamics model's after
    real_rewards: th.Tensor  # (B, T) rewards as the world model learns them (transformed, e.g. tanh)
    predicted_rewards: th.Tensor  # (B, T)
    real_discounts: th.Tensor  # (B, T) gamma * (1 - terminated)
    predicted_discounts: th.Tensor  # (B, T)
    actions: th.Tensor  # (B, T), or (B, T, A) for Box actions: real for t < context, the policy's after
    context: int  # steps fed from the real sequence before the open loop starts


@th.no_grad()
def dream(
    observation_model: ObservationModel,
    dynamics_model: DynamicsModel,
    policy: Callable[[th.Tensor], th.Tensor],
    batch: WorldModelBatch,
    context: int,
    discount_factor: float,
) -> Dream:
    """
    The world model's view of real sequences (see the module docstring). Draws from torch's generator (sampled
    latents, the policy's actions): callers that must not change a run fork it (``torch.random.fork_rng``).

    :param observation_model: Encoder and decoder.
    :param dynamics_model: The dynamics model (evaluated without dropout).
    :param policy: Maps latents ``(B, K*C)`` to actions ``(B,)`` (Box actions: ``(B, A)`` values in ``[-1, 1]``).
    :param batch: ``B`` real sequences: the step in front (index 0) is the memory's first step; steps 1..T are shown.
    :param context: Steps of the sequence given to the dynamics model before it goes on alone (``1 <= context <= T``).
    :param discount_factor: gamma of the real discounts.
    :return: The dream.
    """
    # observations: (B, T+2, *obs_shape); actions (or (B, T+1, A)), rewards, terminated, truncated: (B, T+1)
    steps = batch.actions.shape[1] - 1
    if not 1 <= context <= steps:
        raise ValueError(f"context must be in [1, {steps}] (the sequence's steps), got {context}.")
    encoder, decoder = observation_model.encoder, observation_model.decoder
    modules = (encoder, decoder, dynamics_model)
    training = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        real = batch.observations[:, 1 : steps + 1]
        z_real = encoder.latent(batch.observations[:, : steps + 1], temperature=0.0)  # (B, T+1, K*C)
        dones = batch.terminated | batch.truncated
        memory = dynamics_model.start_memory(z_real[:, 0], batch.actions[:, 0])
        previous_rewards, previous_dones = batch.rewards[:, 0], dones[:, 0]
        z = z_real[:, 1]
        open_loop_z, actions, rewards, discounts = [], [], [], []
        for step in range(1, steps + 1):
            action = batch.actions[:, step] if step <= context else policy(z)
            prediction, memory = dynamics_model.step(memory, previous_rewards, previous_dones, z, action)
            reward = prediction.reward[:, 0].float()
            discount = prediction.discount_logits[:, 0].float().sigmoid()
            if step > context:
                open_loop_z.append(z)
            actions.append(action)
            rewards.append(reward)
            discounts.append(discount)
            if step < context:
                z, previous_rewards, previous_dones = z_real[:, step + 1], batch.rewards[:, step], dones[:, step]
            else:
                # The open loop: the model's own next latent, reward and episode end are what it sees next.
                next_z = sample_one_hot(prediction.z_logits[:, 0].float(), temperature=1.0, straight_through=False)
                z, previous_rewards, previous_dones = next_z.flatten(-2), reward, discount < 0.5
        reconstructed = decoder(z_real[:, 1:]).float()
        # The given steps are the real latents: their frames are the reconstructions, only the open loop is decoded.
        open_loop = decoder(th.stack(open_loop_z, dim=1).to(z_real.dtype)).float() if open_loop_z else None
        imagined = reconstructed if open_loop is None else th.cat([reconstructed[:, :context], open_loop], dim=1)
        return Dream(
            real=real,
            reconstructed=reconstructed,
            imagined=imagined,
            real_rewards=batch.rewards[:, 1:].float(),
            predicted_rewards=th.stack(rewards, dim=1),
            real_discounts=discount_factor * (~batch.terminated[:, 1:]).float(),
            predicted_discounts=th.stack(discounts, dim=1),
            actions=th.stack(actions, dim=1),
            context=context,
        )
    finally:
        for module, was_training in zip(modules, training):
            module.train(was_training)
