"""
The one-off pretraining of TWM on the random prefill (jrobine/twm ``trainer.py`` ``run``): the observation model alone
on shuffled single frames, then the dynamics model alone on sequences of the now fixed encoder's latents, then the
actor-critic on real latent sequences (critic on lambda-returns, actor maximising its entropy). Each phase spends its
share of ``pretrain_budget`` sampled steps, pass after pass over the data.
"""

import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch as th

from sb3_twm.common.type_aliases import Update, WorldModelBatch

if TYPE_CHECKING:
    from sb3_twm.twm.twm import TWM

Batch = TypeVar("Batch")
# Seconds between progress lines of a pretraining phase (on CPU at the default sizes a phase runs for hours).
PRETRAINING_LOG_SECONDS = 30.0


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
    Pretrain the world model and the actor-critic of ``model`` on its dataset (the random prefill), reporting progress
    while it runs (:class:`PhaseProgress`).

    :param model: The algorithm; its metrics and counters record the updates.
    """
    budget = model.pretrain_budget
    if budget <= 0:
        return
    model.world_model.train()
    buffer, env = model.replay_buffer, model._vec_normalize_env
    started = time.perf_counter()

    def frames(features: th.Tensor) -> int:
        return len(features)

    def steps(batch: WorldModelBatch) -> int:
        return batch.actions.shape[0] * (batch.actions.shape[1] - 1)

    expected = expected_updates(model)
    share = model.pretrain_observation_share * budget
    progress = PhaseProgress(model, "observation model", expected["observation model"], started)
    for features in spend(share, lambda: observation_batches(model), frames):
        model._record_update("pretrain_world_model", model.world_model.pretrain_observation_step(features))
        progress.update()
    progress.finish()
    counts = {"observation model": progress.updates}

    share = model.pretrain_dynamics_share * budget
    progress = PhaseProgress(model, "dynamics model", expected["dynamics model"], started)
    for batch in spend(share, lambda: buffer.world_model_batches(model.sequence_length, model.batch_size, env), steps):
        with th.no_grad():
            logits = model.policy.encoder(batch.observations)
        update = model.world_model.pretrain_dynamics_step(
            logits, batch.actions, batch.rewards, batch.terminated, batch.truncated
        )
        model._record_update("pretrain_world_model", update)
        progress.update()
    progress.finish()
    counts["dynamics model"] = progress.updates

    share = model.pretrain_actor_critic_share * budget
    horizon, rollouts = model.imagination_horizon, model.imagination_batch_size
    progress = PhaseProgress(model, "actor-critic", expected["actor-critic"], started)
    for batch in spend(share, lambda: buffer.world_model_batches(horizon, rollouts, env), steps):
        model._record_update("pretrain_actor_critic", actor_critic_step(model, batch))
        progress.update()
    progress.finish()
    counts["actor-critic"] = progress.updates
    # Recorded after the progress lines, for the next regular log write.
    for part, updates in counts.items():
        model.logger.record(f"pretrain/{part.replace(' ', '_').replace('-', '_')}_updates", updates)


def expected_updates(model: "TWM", stored_per_env: int | None = None) -> dict[str, int]:
    """
    :param model: The algorithm.
    :param stored_per_env: Steps per env the prefill holds (default: what the dataset holds now).
    :return: Updates each pretraining phase makes: exact for the observation model (its passes are deterministic),
        close for the others (their windows start at a random offset, so a pass may have one window less).
    """
    if stored_per_env is None:
        stored_per_env = model.replay_buffer.size()
    budget, n_envs = model.pretrain_budget, model.n_envs
    frames_per_batch = model.batch_size * model.sequence_length
    sequences = (
        ("dynamics model", model.pretrain_dynamics_share, model.sequence_length, model.batch_size),
        ("actor-critic", model.pretrain_actor_critic_share, model.imagination_horizon, model.imagination_batch_size),
    )
    counts = {
        "observation model": _observation_updates(
            model.pretrain_observation_share * budget, stored_per_env * n_envs, frames_per_batch
        )
    }
    for part, share, length, batch_size in sequences:
        windows = max(math.ceil((stored_per_env - length + 1) / length), 1) * n_envs  # per pass, from offset 0
        passes, rest = divmod(share * budget, windows * length)
        counts[part] = int(passes) * math.ceil(windows / batch_size) + math.ceil(rest / (batch_size * length))
    return counts


def _observation_updates(budget: float, stored: int, frames_per_batch: int) -> int:
    # Exactly what spend() does with passes of full batches and one last partial batch.
    sizes = [frames_per_batch] * (stored // frames_per_batch)
    if stored % frames_per_batch:
        sizes.append(stored % frames_per_batch)
    full_passes, rest = divmod(budget, stored) if stored else (0, 0)
    updates = int(full_passes) * len(sizes)
    for size in sizes:
        if rest <= 0:
            break
        rest, updates = rest - size, updates + 1
    return updates


class PhaseProgress:
    """
    Progress of one pretraining phase while it runs: a line through SB3's logger (``pretrain/phase``,
    ``pretrain/phase_updates``, ``pretrain/phase_progress``, ``time/pretrain_seconds``,
    ``time/pretrain_phase_remaining_seconds``) when the phase starts, every ``PRETRAINING_LOG_SECONDS`` and when it
    ends, and a bar of its own with ``learn(progress_bar=True)``.

    :param model: The algorithm.
    :param part: The phase.
    :param expected_updates: How many updates the phase will make (for its progress and remaining time).
    :param started: When pretraining started (``time.perf_counter()``).
    """

    def __init__(self, model: "TWM", part: str, expected_updates: int, started: float) -> None:
        self.model, self.part, self.expected, self.started = model, part, max(int(expected_updates), 1), started
        self.updates, self.phase_started, self.logged, self.logged_updates = 0, time.perf_counter(), 0.0, -1
        self.bar = model._progress_bar
        self.task = self.bar.start_phase(f"pretraining: {part}", self.expected) if self.bar is not None else None
        self._log()

    def update(self) -> None:
        """One update done."""
        self.updates += 1
        if self.bar is not None:
            self.bar.advance(self.task)
        if time.perf_counter() - self.logged >= PRETRAINING_LOG_SECONDS:
            self._log()

    def finish(self) -> None:
        """The phase is over (the count it expected was an estimate for all but the observation model)."""
        self.expected = max(self.updates, 1)
        if self.updates != self.logged_updates or self.logged_progress != 1.0:
            self._log()
        if self.bar is not None:
            self.bar.finish_phase(self.task)
        if self.model.verbose >= 1:
            seconds = time.perf_counter() - self.phase_started
            print(f"TWM pretraining: {self.updates} {self.part} updates in {seconds:.0f} s")

    def _log(self) -> None:
        now = time.perf_counter()
        logger = self.model.logger
        logger.record("pretrain/phase", self.part)
        logger.record("pretrain/phase_updates", self.updates)
        self.logged_progress = min(self.updates / self.expected, 1.0)
        logger.record("pretrain/phase_progress", self.logged_progress)
        logger.record("time/pretrain_seconds", round(now - self.started, 1))
        if self.updates > 0:
            remaining = (now - self.phase_started) / self.updates * max(self.expected - self.updates, 0)
            logger.record("time/pretrain_phase_remaining_seconds", round(remaining))
        logger.dump(step=self.model.num_timesteps)
        self.logged, self.logged_updates = now, self.updates


def actor_critic_step(model: "TWM", batch: WorldModelBatch) -> Update:
    """
    One pretraining update of the actor-critic on real latent sequences.

    :param model: The algorithm.
    :param batch: ``N`` sequences of the imagination horizon ``H``.
    :return: The update's metrics and skipped steps.
    """
    # observations: (N, H+2, *obs_shape); actions, rewards, terminated, truncated: (N, H+1)
    with th.no_grad():
        z = model.policy.encoder.latent(batch.observations[:, 1:], temperature=1.0)  # (N, H+1, K*C)
    dones = (batch.terminated | batch.truncated)[:, 1:]
    discounts = model.gamma * (~dones).float()
    update = model.actor_critic.pretrain_update(z, batch.rewards[:, 1:], discounts)
    model._count_actor_critic_update()
    return update
