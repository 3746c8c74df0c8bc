"""
The one-off pretraining of TWM on the random prefill (jrobine/twm ``trainer.py`` ``run``): the observation model alone
on shuffled single frames, then the dynamics model alone on sequences of the now fixed encoder's latents, then the
actor-critic on real latent sequences (critic on lambda-returns, actor maximising its entropy). Each phase spends its
share of ``pretrain_budget`` sampled steps, pass after pass over the data.
"""

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch as th

from sb3_twm.common.type_aliases import Update, WorldModelBatch

if TYPE_CHECKING:
    from sb3_twm.twm.twm import TWM

Batch = TypeVar("Batch")


def spend(budget: float, passes: Callable[[], Iterator[Batch]], size: Callable[[Batch], int]) -> Iterator[Batch]:
    """
    Batches from pass after pass over the data until ``budget`` sampled steps are spent (the last batch may overdraw).

    :param budget: Sampled steps to spend.
    :param passes: Starts a new pass (one shuffled epoch).
    :param size: Sampled steps of a batch.
    :return: Iterator over the batches.
    """
    while budget > 0:
        for batch in passes():
            yield batch
            budget -= size(batch)
            if budget <= 0:
                return


def observation_batches(model: "TWM") -> Iterator[th.Tensor]:
    """
    :param model: The algorithm.
    :return: One shuffled pass over every stored frame, in batches of ``batch_size * sequence_length`` features.
    """
    observations = model.replay_buffer.all_observations()
    frames_per_batch = model.batch_size * model.sequence_length
    permutation = np.random.permutation(len(observations))
    for start in range(0, len(observations), frames_per_batch):
        indices = permutation[start : start + frames_per_batch]
        yield model.replay_buffer.observation_features(observations[np.sort(indices)], model._vec_normalize_env)


def pretrain(model: "TWM") -> None:
    """
    Pretrain the world model and the actor-critic of ``model`` on its dataset (the random prefill).

    :param model: The algorithm; its metrics and counters record the updates.
    """
    budget = model.pretrain_budget
    if budget <= 0:
        return
    model.world_model.train()
    buffer, env = model.replay_buffer, model._vec_normalize_env

    def frames(features: th.Tensor) -> int:
        return len(features)

    def steps(batch: WorldModelBatch) -> int:
        return batch.actions.shape[0] * (batch.actions.shape[1] - 1)

    updates = 0
    for features in spend(model.pretrain_observation_share * budget, lambda: observation_batches(model), frames):
        model._record_update("pretrain_world_model", model.world_model.pretrain_observation_step(features))
        updates += 1
    _log(model, "observation model", updates)

    updates = 0
    batches = spend(
        model.pretrain_dynamics_share * budget,
        lambda: buffer.world_model_batches(model.sequence_length, model.batch_size, env),
        steps,
    )
    for batch in batches:
        with th.no_grad():
            logits = model.policy.encoder(batch.observations)
        update = model.world_model.pretrain_dynamics_step(
            logits, batch.actions, batch.rewards, batch.terminated, batch.truncated
        )
        model._record_update("pretrain_world_model", update)
        updates += 1
    _log(model, "dynamics model", updates)

    updates = 0
    batches = spend(
        model.pretrain_actor_critic_share * budget,
        lambda: buffer.world_model_batches(model.imagination_horizon, model.imagination_batch_size, env),
        steps,
    )
    for batch in batches:
        model._record_update("pretrain_actor_critic", _actor_critic_step(model, batch))
        updates += 1
    _log(model, "actor-critic", updates)


def _log(model: "TWM", part: str, updates: int) -> None:
    model.logger.record(f"pretrain/{part.replace(' ', '_').replace('-', '_')}_updates", updates)
    if model.verbose >= 1:
        print(f"TWM pretraining: {updates} {part} updates")


def _actor_critic_step(model: "TWM", batch: WorldModelBatch) -> Update:
    # observations: (N, H+2, *obs_shape); actions, rewards, terminated, truncated: (N, H+1)
    with th.no_grad():
        z = model.policy.encoder.latent(batch.observations[:, 1:], temperature=1.0)  # (N, H+1, K*C)
    dones = (batch.terminated | batch.truncated)[:, 1:]
    discounts = model.gamma * (~dones).float()
    update = model.actor_critic.pretrain_update(z, batch.rewards[:, 1:], discounts)
    model._count_actor_critic_update()
    return update
