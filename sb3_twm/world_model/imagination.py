"""Imagination: rolling the dynamics model forward from real latents, with actions from a policy."""

from collections.abc import Callable
from typing import NamedTuple

import torch as th

from sb3_twm.common.distributions import sample_one_hot
from sb3_twm.world_model.dynamics_model import DynamicsModel


class ImaginedTrajectories(NamedTuple):
    """A batch of imagined rollouts of ``H`` steps."""

    z: th.Tensor  # (N, H+1, K*C) latents, the start included
    actions: th.Tensor  # (N, H)
    rewards: th.Tensor  # (N, H) predicted reward of each step
    discounts: th.Tensor  # (N, H) predicted discount after each step
    dones: th.Tensor  # (N, H) bool: the rollout restarted after this step
    weights: th.Tensor  # (N, H+1) cumulative predicted discounts, 1 at the start and after a restart


@th.no_grad()
def imagine(
    dynamics_model: DynamicsModel,
    context_z: th.Tensor,
    context_actions: th.Tensor,
    context_rewards: th.Tensor,
    context_dones: th.Tensor,
    start_z: th.Tensor,
    policy: Callable[[th.Tensor], th.Tensor],
    horizon: int,
    discount_threshold: float,
    restart: Callable[[int], th.Tensor],
) -> ImaginedTrajectories:
    """
    Roll out ``horizon`` steps from real starts. One real step ``(context_z, context_action)`` builds the
    Transformer-XL memory; each imagined step then adds only its new tokens. A rollout whose cumulative predicted
    discount falls below ``discount_threshold`` counts as done and continues from a fresh start latent.

    :param dynamics_model: The dynamics model (evaluated without dropout).
    :param context_z: ``(N, K*C)`` latent of the real step before the start.
    :param context_actions: ``(N,)`` action taken there.
    :param context_rewards: ``(N,)`` its (transformed) reward, the first reward token.
    :param context_dones: ``(N,)`` whether an episode ended after it.
    :param start_z: ``(N, K*C)`` the start latents.
    :param policy: Maps latents ``(N, K*C)`` to actions ``(N,)``.
    :param horizon: Number of imagined steps.
    :param discount_threshold: Cumulative discount below which a rollout restarts.
    :param restart: Returns ``n`` fresh start latents ``(n, K*C)`` (encoded real observations).
    :return: The trajectories.
    """
    was_training = dynamics_model.training
    dynamics_model.eval()
    memory = dynamics_model.start_memory(context_z, context_actions)
    z, rewards, dones = start_z, context_rewards, context_dones
    cumulative = th.ones_like(context_rewards)
    all_z, all_actions, all_rewards, all_discounts, all_dones, all_weights = [z], [], [], [], [], [cumulative]
    for _ in range(horizon):
        actions = policy(z)
        prediction, memory = dynamics_model.step(memory, rewards, dones, z, actions)
        next_z = sample_one_hot(prediction.z_logits[:, 0], temperature=1.0, straight_through=False).flatten(-2)
        # float32 from here on, also under bf16 autocast: returns are computed from these.
        rewards = prediction.reward[:, 0].float()
        discounts = prediction.discount_logits[:, 0].float().sigmoid().clamp(0.0, 1.0)
        cumulative = cumulative * discounts
        dones = cumulative < discount_threshold
        if dones.any():
            restarted = dones.nonzero(as_tuple=True)[0]
            next_z = next_z.index_put((restarted,), restart(restarted.numel()).to(next_z.dtype))
            cumulative = th.where(dones, th.ones_like(cumulative), cumulative)
        all_z.append(next_z)
        all_actions.append(actions)
        all_rewards.append(rewards)
        all_discounts.append(discounts)
        all_dones.append(dones)
        all_weights.append(cumulative)
        z = next_z
    dynamics_model.train(was_training)
    return ImaginedTrajectories(
        th.stack([z.float() for z in all_z], 1),
        th.stack(all_actions, 1),
        th.stack(all_rewards, 1),
        th.stack(all_discounts, 1),
        th.stack(all_dones, 1),
        th.stack(all_weights, 1),
    )
