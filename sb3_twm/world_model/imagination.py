"""Imagination: rolling the dynamics model forward from real latents, with actions from a policy."""

from collections.abc import Callable

import torch as th

from sb3_twm.common.distributions import sample_one_hot
from sb3_twm.common.type_aliases import ImaginationStart, ImaginedTrajectories, WorldModelOutput
from sb3_twm.world_model.dynamics_model import DynamicsModel


def select_starts(output: WorldModelOutput, count: int) -> ImaginationStart:
    """
    Choose ``count`` imagination starts among the windows ``(z_j, z_{j+1})`` of a world-model batch: one real context
    step, then the start latent (the reference's ``_train_step``). Draws from torch's generator.

    :param output: The latents of a world-model update, ``B`` sequences of ``T+1`` steps.
    :param count: How many starts (at most ``B * T``).
    :return: The starts.
    """
    # z: (B, T+1, K*C); actions, rewards, dones: (B, T+1)
    num_sequences, num_steps = output.actions.shape[0], output.actions.shape[1] - 1
    chosen = th.randperm(num_sequences * num_steps, device=output.z.device)[:count]
    sequence, step = chosen // num_steps, chosen % num_steps
    return ImaginationStart(
        output.z[sequence, step],
        output.actions[sequence, step],
        output.rewards[sequence, step],
        output.dones[sequence, step],
        output.z[sequence, step + 1],
    )


@th.no_grad()
def imagine(
    dynamics_model: DynamicsModel,
    start: ImaginationStart,
    policy: Callable[[th.Tensor], th.Tensor],
    horizon: int,
    discount_threshold: float,
    restart: Callable[[int], th.Tensor],
    temperature: float = 1.0,
) -> ImaginedTrajectories:
    """
    Roll out ``horizon`` steps from real starts. One real step ``(context_z, context_action)`` builds the
    Transformer-XL memory; each imagined step then adds only its new tokens. A rollout whose cumulative predicted
    discount falls below ``discount_threshold`` counts as done and continues from a fresh start latent.

    :param dynamics_model: The dynamics model (evaluated without dropout).
    :param start: Context steps and start latents of ``N`` rollouts.
    :param policy: Maps latents ``(N, K*C)`` to actions ``(N,)``.
    :param horizon: Number of imagined steps.
    :param discount_threshold: Cumulative discount below which a rollout restarts.
    :param restart: Returns ``n`` fresh start latents ``(n, K*C)`` (encoded real observations).
    :param temperature: Of the next latents: 1 samples them (training), 0 takes the most likely ones.
    :return: The trajectories.
    """
    # start.z, start.context_z: (N, K*C); start.context_actions, context_rewards, context_dones: (N,)
    was_training = dynamics_model.training
    dynamics_model.eval()
    memory = dynamics_model.start_memory(start.context_z, start.context_actions)
    z, rewards, dones = start.z, start.context_rewards, start.context_dones
    cumulative = th.ones_like(start.context_rewards)
    all_z, all_actions, all_rewards, all_discounts, all_dones, all_weights = [z], [], [], [], [], [cumulative]
    for _ in range(horizon):
        actions = policy(z)
        prediction, memory = dynamics_model.step(memory, rewards, dones, z, actions)
        next_z = sample_one_hot(prediction.z_logits[:, 0], temperature=temperature, straight_through=False).flatten(-2)
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
