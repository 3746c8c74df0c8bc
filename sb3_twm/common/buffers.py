"""Experience dataset of TWM.

TWM trains its world model on sequences of real experience and restarts imagination from
stored observations. Everything the agent ever experienced (up to ``buffer_size`` steps per
environment) is kept, and sequences are drawn with *recency-balanced* sampling: each start
index counts how often it was drawn, and the probability of a start is
``softmax(-visits / temperature)``. Fresh data (never visited) is therefore preferred without
forgetting old data entirely.

The buffer subclasses SB3's :class:`~stable_baselines3.common.buffers.ReplayBuffer` so that
``save_replay_buffer`` / ``load_replay_buffer`` and the off-policy collection loop accept it,
but it stores the frames only once, as SB3's memory-optimised layout does (``optimize_memory_usage``
is True and ``next_observations`` is None): the next observation of step ``t`` is the observation
stored at ``t + 1``, and the newest next observation per environment is kept separately in
``latest_next_observations``. SB3's ``dones`` and ``timeouts`` arrays are read-only float32 arrays
computed from the ``terminated`` and ``truncated`` flags it keeps, on each access (small: no frames are copied).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from sb3_twm.common.type_aliases import SequenceBatch, WorldModelBatch

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a dependency of SB3, but stay optional like SB3
    psutil = None

# Applied to the rewards of training batches (the reference's ``env_reward_transform``); the dataset keeps raw rewards.
REWARD_TRANSFORMS: dict[str, Callable[[th.Tensor], th.Tensor]] = {
    "tanh": th.tanh,
    "sign": th.sign,
    "none": lambda reward: reward,
}


class TWMReplayBuffer(ReplayBuffer):
    """
    Dataset of experience for TWM with recency-balanced sequence sampling.

    Stores every transition (observations as given by the env, actions, raw rewards,
    terminated and truncated flags) in a circular buffer with SB3's ``[time, env]`` layout.

    :param buffer_size: Max number of transitions stored, in total over all envs
        (divided by ``n_envs`` like in SB3)
    :param observation_space: Observation space
    :param action_space: Action space: ``spaces.Discrete`` (stored as int64) or ``spaces.Box`` (stored flattened as
        float32, in the scaled ``[-1, 1]`` range SB3's off-policy algorithms store)
    :param device: PyTorch device used by SB3's ``sample()``
    :param n_envs: Number of parallel environments
    :param optimize_memory_usage: Accepted for SB3 compatibility and ignored: this buffer always
        stores a single copy of the observations (the attribute is always True)
    :param handle_timeout_termination: Record ``TimeLimit.truncated`` infos as truncations instead
        of terminations
    :param temperature: Temperature of the recency-balanced sampling; larger values make the
        sampling closer to uniform
    :param reward_transform: Applied to the rewards of training batches (``"tanh"``, ``"sign"`` or
        ``"none"``); the dataset itself keeps the raw rewards
    :param normalize_images: Scale image observations of training batches to [0, 1]
    :param reward_scale: Multiplies the rewards of training batches before ``reward_transform`` (1: unchanged)
    :param termination_weight: Sequences in which an episode terminates are drawn this many times as often as their
        visit counts alone make them (1: the paper's sampling, unchanged). Terminations are one step per episode, and
        rarer the better the agent plays, yet they are all the world model learns them from, and the imagination
        starts near them all the critic learns their cost from.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    visits: np.ndarray
    latest_next_observations: np.ndarray

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        temperature: float = 20.0,
        reward_transform: str = "none",
        normalize_images: bool = True,
        reward_scale: float = 1.0,
        termination_weight: float = 1.0,
    ):
        if int(buffer_size) <= 0:
            raise ValueError(f"buffer_size must be a positive integer, got {buffer_size}")
        if int(n_envs) <= 0:
            raise ValueError(f"n_envs must be a positive integer, got {n_envs}")
        if not (float(temperature) > 0.0 and np.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        if reward_transform not in REWARD_TRANSFORMS:
            raise ValueError(f"reward_transform must be one of {sorted(REWARD_TRANSFORMS)}, got {reward_transform!r}")
        if not (float(reward_scale) > 0.0 and np.isfinite(reward_scale)):
            raise ValueError(f"reward_scale must be a finite number > 0, got {reward_scale}")
        if isinstance(termination_weight, bool) or not (float(termination_weight) > 0.0 and np.isfinite(termination_weight)):
            raise ValueError(
                f"termination_weight must be a finite number > 0 (1: the paper's sampling), got {termination_weight}"
            )
        if not isinstance(action_space, (spaces.Discrete, spaces.Box)):
            raise ValueError(
                "TWMReplayBuffer only supports spaces.Discrete and spaces.Box action spaces, got "
                f"{type(action_space).__name__}"
            )
        if isinstance(observation_space, (spaces.Dict, spaces.Tuple)):
            raise ValueError(
                f"TWMReplayBuffer only supports array observation spaces, got {type(observation_space).__name__}"
            )

        # Skip ReplayBuffer.__init__ on purpose: it would allocate a second full copy of the
        # frames (next_observations), which does not fit for 100k Atari steps.
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=int(n_envs))
        self.buffer_size = max(int(buffer_size) // self.n_envs, 1)
        # SB3's memory-optimised layout: one copy of the frames, no next_observations array.
        self.optimize_memory_usage = True
        self.next_observations = None
        self.handle_timeout_termination = handle_timeout_termination
        self.temperature = float(temperature)
        self.reward_transform = reward_transform
        self.reward_scale = float(reward_scale)
        self.termination_weight = float(termination_weight)
        self.normalize_images = normalize_images

        # np.zeros only reserves virtual memory: pages are committed as data is written.
        self.observations = np.zeros((self.buffer_size, self.n_envs, *self.obs_shape), dtype=observation_space.dtype)
        # Per step and env: one discrete action, or SB3's action_dim values of a flattened Box action.
        self.discrete_actions = isinstance(action_space, spaces.Discrete)
        self.action_shape: tuple[int, ...] = () if self.discrete_actions else (self.action_dim,)
        action_dtype = np.int64 if self.discrete_actions else np.float32
        self.actions = np.zeros((self.buffer_size, self.n_envs, *self.action_shape), dtype=action_dtype)
        self.rewards = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        self.terminated = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self.truncated = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self.visits = np.zeros((self.buffer_size, self.n_envs), dtype=np.float64)
        self.latest_next_observations = np.zeros((self.n_envs, *self.obs_shape), dtype=observation_space.dtype)

        if psutil is not None:
            total_bytes = sum(
                a.nbytes
                for a in (self.observations, self.actions, self.rewards, self.terminated, self.truncated, self.visits)
            )
            available = psutil.virtual_memory().available
            if total_bytes > available:
                warnings.warn(
                    "This system does not have apparently enough memory to store the complete "
                    f"replay buffer {total_bytes / 1e9:.2f}GB > {available / 1e9:.2f}GB",
                    stacklevel=2,
                )

    # ------------------------------------------------------------------ storage

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """
        Store one step of all envs (same signature as SB3's ``ReplayBuffer.add``).

        :param obs: ``(n_envs, *obs_shape)`` observations the actions were taken at
        :param next_obs: ``(n_envs, *obs_shape)`` next observations (terminal observation on done);
            only the newest one per env is kept, older ones are the following stored ``obs``
        :param action: ``(n_envs,)`` discrete actions, or ``(n_envs, *shape)`` scaled Box actions
        :param reward: ``(n_envs,)`` raw rewards
        :param done: ``(n_envs,)`` episode ended after this step
        :param infos: per-env info dicts, ``TimeLimit.truncated`` marks truncations
        """
        obs = np.asarray(obs).reshape((self.n_envs, *self.obs_shape))
        next_obs = np.asarray(next_obs).reshape((self.n_envs, *self.obs_shape))
        done = np.asarray(done).reshape(self.n_envs).astype(bool)
        if self.handle_timeout_termination:
            truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos], dtype=bool)
            truncated &= done  # a truncation flag without done would describe a step that goes on
        else:
            truncated = np.zeros(self.n_envs, dtype=bool)

        # Assignment copies into the buffer, so later in-place changes by the caller are harmless.
        self.observations[self.pos] = obs
        self.latest_next_observations[...] = next_obs
        self.actions[self.pos] = np.asarray(action).reshape((self.n_envs, *self.action_shape))
        self.rewards[self.pos] = np.asarray(reward).reshape(self.n_envs)
        self.terminated[self.pos] = done & ~truncated
        self.truncated[self.pos] = truncated
        # The slot now holds new data, its old visit count would wrongly suppress it.
        self.visits[self.pos] = 0

        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    def mark_episode_boundary(self) -> None:
        """
        Mark the last stored step of every env as truncated.

        Used when collection resumes after a fresh env reset, so that no sequence silently
        joins two unrelated trajectories. No-op when the buffer is empty.
        """
        if self.size() == 0:
            return
        self.truncated[(self.pos - 1) % self.buffer_size] = True

    @property
    def dones(self) -> np.ndarray:
        """
        SB3's ``ReplayBuffer.dones``: ``(buffer_size, n_envs)`` float32, 1 where the episode ended after the step
        (terminated or truncated). A read-only array computed from the flags.
        """
        dones = (self.terminated | self.truncated).astype(np.float32)
        dones.flags.writeable = False
        return dones

    @property
    def timeouts(self) -> np.ndarray:
        """
        SB3's ``ReplayBuffer.timeouts``: ``(buffer_size, n_envs)`` float32, 1 where the episode was truncated
        (``TimeLimit.truncated``) after the step. A read-only array computed from the flags.
        """
        timeouts = self.truncated.astype(np.float32)
        timeouts.flags.writeable = False
        return timeouts

    # ------------------------------------------------------------------ indexing helpers

    def num_stored_steps(self) -> int:
        """
        :return: Number of stored transitions over all envs (``size() * n_envs``)
        """
        return self.size() * self.n_envs

    def _physical(self, logical: np.ndarray) -> np.ndarray:
        # Oldest stored step sits at ``pos`` once the ring has wrapped, at 0 before.
        offset = self.pos if self.full else 0
        return (offset + logical) % self.buffer_size

    def _check_sequence_args(self, batch_size: int, sequence_length: int) -> int:
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if int(sequence_length) <= 0:
            raise ValueError(f"sequence_length must be a positive integer, got {sequence_length}")
        return self.size() - int(sequence_length) + 1

    def _gather(self, starts: np.ndarray, env_indices: np.ndarray, sequence_length: int) -> SequenceBatch:
        """
        Gather sequences (with context step and final next observation) from logical starts.

        :param starts: ``(B,)`` logical start indices, ``starts + sequence_length <= size()``
        :param env_indices: ``(B,)`` env of each sequence
        :param sequence_length: ``T``
        :return: the batch
        """
        count = self.size()
        starts = np.asarray(starts, dtype=np.int64)
        env_indices = np.asarray(env_indices, dtype=np.int64)
        # (B, T + 2): logical k - 1 .. k + T
        logical = starts[:, None] + np.arange(-1, sequence_length + 1, dtype=np.int64)[None, :]
        # Clip both ends to stored data: index -1 borrows step 0, index ``count`` is patched below.
        physical = self._physical(np.clip(logical, 0, count - 1))
        env_col = env_indices[:, None]

        observations = self.observations[physical, env_col]  # (B, T + 2, *obs_shape)
        past_end = logical == count
        if past_end.any():
            # The frame after the newest step exists only as the latest next observation.
            observations[past_end] = self.latest_next_observations[np.broadcast_to(env_col, logical.shape)[past_end]]

        step_phys = physical[:, :-1]  # (B, T + 1): logical k - 1 .. k + T - 1
        before_start = logical[:, :-1] < 0
        actions = self.actions[step_phys, env_col]
        rewards = self.rewards[step_phys, env_col]
        # No action or reward precedes the oldest stored step.
        actions[before_start] = 0
        rewards[before_start] = 0.0
        return SequenceBatch(
            observations=observations,
            actions=actions,
            rewards=rewards,
            terminated=self.terminated[step_phys, env_col],
            truncated=self.truncated[step_phys, env_col],
            starts=starts,
            env_indices=env_indices,
        )

    # ------------------------------------------------------------------ sampling

    def sample_sequences(self, batch_size: int, sequence_length: int) -> SequenceBatch:
        """
        Draw ``batch_size`` distinct sequences with recency-balanced sampling.

        Candidate starts are all ``(k, env)`` with ``0 <= k <= size() - sequence_length``; the
        probability of a start is ``softmax(-visits / temperature)`` over all candidates. The
        draw uses the global torch RNG (seeded by SB3) and increments the visit count of each
        drawn start slot.

        :param batch_size: Number of sequences ``B``
        :param sequence_length: Length ``T`` of each sequence
        :return: a :class:`SequenceBatch` (observations ``(B, T + 2, ...)``, the rest ``(B, T + 1)``)
        """
        n_starts = self._check_sequence_args(batch_size, sequence_length)
        n_candidates = max(n_starts, 0) * self.n_envs
        if n_candidates < batch_size:
            needed = int(sequence_length) - 1 + -(-int(batch_size) // self.n_envs)
            raise ValueError(
                f"Not enough data to sample {batch_size} distinct sequences of length {sequence_length}: "
                f"{n_candidates} candidate starts available, at least {needed} stored steps per env "
                f"are needed ({self.size()} stored)"
            )

        # (n_starts, n_envs) physical slots of all candidate starts, flattened as k * n_envs + env
        start_phys = self._physical(np.arange(n_starts, dtype=np.int64))
        logits = th.from_numpy(-self.visits[start_phys].reshape(-1) / self.temperature)
        if self.termination_weight != 1.0:
            terminating = self._terminating_starts(n_starts, int(sequence_length)).reshape(-1)
            logits = logits + math.log(self.termination_weight) * th.from_numpy(terminating.astype(np.float64))
        probs = th.softmax(logits, dim=0)
        flat = th.multinomial(probs, int(batch_size), replacement=False).numpy()
        starts, env_indices = np.divmod(flat, self.n_envs)

        # Only the start slot counts a visit: it is what the sampling distribution is over.
        np.add.at(self.visits, (start_phys[starts], env_indices), 1)
        return self._gather(starts, env_indices, int(sequence_length))

    def _terminating_starts(self, n_starts: int, sequence_length: int) -> np.ndarray:
        """
        :param n_starts: Candidate starts per env (logical ``0 .. n_starts - 1``).
        :param sequence_length: ``T``.
        :return: ``(n_starts, n_envs)`` bool: an episode terminates at one of the trained steps ``k .. k + T - 1`` of
            the sequence starting at ``k``.
        """
        terminated = self.terminated[self._physical(np.arange(self.size(), dtype=np.int64))]  # (size, n_envs)
        counts = np.concatenate([np.zeros((1, self.n_envs), dtype=np.int64), np.cumsum(terminated, axis=0)])
        return counts[sequence_length : sequence_length + n_starts] > counts[:n_starts]

    def latest_sequences(self, count: int, sequence_length: int) -> SequenceBatch:
        """
        The most recent sequences, for looking at (dreams): the newest window of each env, then the windows before
        them, ``count`` in all. Draws no random numbers and counts no visits.

        :param count: Number of sequences
        :param sequence_length: Length ``T`` of each sequence
        :return: a :class:`SequenceBatch` (observations ``(count, T + 2, ...)``, the rest ``(count, T + 1)``)
        """
        n_starts = self._check_sequence_args(count, sequence_length)
        if n_starts * self.n_envs < count:
            raise ValueError(
                f"Not enough data for {count} sequences of length {sequence_length}: {self.size()} steps stored per env"
            )
        flat = np.arange(count, dtype=np.int64)
        starts = n_starts - 1 - (flat // self.n_envs) * int(sequence_length)
        envs = flat % self.n_envs
        # Windows before the newest ones overlap them when the dataset is short: go back one step at a time instead.
        starts = np.where(starts >= 0, starts, n_starts - 1 - flat // self.n_envs)
        return self._gather(starts, envs, int(sequence_length))

    def uniform_sequence_batches(self, sequence_length: int, batch_size: int) -> Iterator[SequenceBatch]:
        """
        Iterate once over non-overlapping sequences of all envs in random order (pretraining).

        Per env, windows start at a random offset in ``[0, min(T, n_starts))`` and follow at
        stride ``T``; all windows are shuffled together (global numpy RNG) and cut into batches.
        Visit counts are not changed.

        :param sequence_length: Length ``T`` of each sequence
        :param batch_size: Maximum number of sequences per batch (the last one may be smaller)
        :return: iterator over :class:`SequenceBatch`
        """
        n_starts = self._check_sequence_args(batch_size, sequence_length)
        if n_starts <= 0:
            raise ValueError(
                f"Not enough data for sequences of length {sequence_length}: "
                f"{self.size()} steps stored per env, at least {sequence_length} are needed"
            )
        # Index arrays are built eagerly so bad arguments fail at call time, not at first next().
        all_starts, all_envs = [], []
        for env in range(self.n_envs):
            # Limiting the offset to n_starts guarantees every env contributes at least one window.
            offset = np.random.randint(0, min(sequence_length, n_starts))
            env_starts = np.arange(offset, n_starts, sequence_length, dtype=np.int64)
            all_starts.append(env_starts)
            all_envs.append(np.full_like(env_starts, env))
        starts = np.concatenate(all_starts)
        envs = np.concatenate(all_envs)
        order = np.random.permutation(len(starts))
        starts, envs = starts[order], envs[order]
        return self._iterate_batches(starts, envs, int(sequence_length), int(batch_size))

    def _iterate_batches(
        self, starts: np.ndarray, envs: np.ndarray, sequence_length: int, batch_size: int
    ) -> Iterator[SequenceBatch]:
        for i in range(0, len(starts), batch_size):
            yield self._gather(starts[i : i + batch_size], envs[i : i + batch_size], sequence_length)

    def sample_observations(self, batch_size: int) -> np.ndarray:
        """
        Sample stored single observations uniformly (global numpy RNG), e.g. to start imagination.

        :param batch_size: Number of observations
        :return: ``(batch_size, *obs_shape)`` observations
        """
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        total = self.num_stored_steps()
        if total == 0:
            raise ValueError("Cannot sample observations from an empty buffer")
        # Stored slots are physical 0 .. size()-1 whether or not the ring wrapped; order is irrelevant.
        steps, envs = np.divmod(np.random.randint(0, total, size=int(batch_size)), self.n_envs)
        return self.observations[steps, envs]

    def all_observations(self) -> np.ndarray:
        """
        All stored observations in storage order (not time order), without copying.

        :return: ``(size() * n_envs, *obs_shape)`` view of the stored observations
        """
        return self.observations[: self.size()].reshape(-1, *self.obs_shape)

    # ------------------------------------------------------------------ tensors for the networks

    def observation_features(self, observations: np.ndarray, env: VecNormalize | None = None) -> th.Tensor:
        """
        Observations as the networks take them: normalised with ``env``'s current statistics (the ones the policy
        acts on; the dataset keeps the env's original observations, as SB3's buffers do), images scaled.

        :param observations: ``(..., *obs_shape)`` as stored
        :param env: The ``VecNormalize`` wrapper of the training env, if any
        :return: float32 features on the buffer's device
        """
        if env is not None:
            observations = env.normalize_obs(observations).astype(np.float32, copy=False)
        tensor = th.as_tensor(observations, device=self.device)
        return preprocess_obs(tensor, self.observation_space, self.normalize_images).float()

    def action_tensor(self, actions: np.ndarray) -> th.Tensor:
        """
        :param actions: Actions as stored
        :return: Long for discrete actions, float32 for Box ones, on the buffer's device
        """
        return th.as_tensor(actions, device=self.device, dtype=th.long if self.discrete_actions else th.float32)

    def training_rewards(self, rewards: np.ndarray, env: VecNormalize | None = None) -> th.Tensor:
        """
        :param rewards: Raw rewards as stored
        :param env: The ``VecNormalize`` wrapper of the training env, if any (an identity unless it normalises rewards)
        :return: The rewards the world model trains on: normalised, scaled by ``reward_scale``, then transformed
        """
        rewards = rewards if env is None else env.normalize_reward(rewards)
        rewards = th.as_tensor(rewards, device=self.device, dtype=th.float32)
        if self.reward_scale != 1.0:
            rewards = rewards * self.reward_scale
        return REWARD_TRANSFORMS[self.reward_transform](rewards)

    def to_world_model_batch(self, batch: SequenceBatch, env: VecNormalize | None = None) -> WorldModelBatch:
        """
        :param batch: Sequences as stored
        :param env: The ``VecNormalize`` wrapper of the training env, if any (rewards too: an identity unless it
            normalises rewards)
        :return: The same sequences as tensors for the world model (features, transformed rewards)
        """
        return WorldModelBatch(
            self.observation_features(batch.observations, env),
            self.action_tensor(batch.actions),
            self.training_rewards(batch.rewards, env),
            th.as_tensor(batch.terminated, device=self.device),
            th.as_tensor(batch.truncated, device=self.device),
        )

    def sample_world_model_batch(
        self, batch_size: int, sequence_length: int, env: VecNormalize | None = None
    ) -> WorldModelBatch:
        """
        :meth:`sample_sequences` (recency-balanced, counts visits) as tensors ready for the world model.

        :param batch_size: Number of sequences ``B``
        :param sequence_length: Length ``T`` of each sequence
        :param env: The ``VecNormalize`` wrapper of the training env, if any
        :return: The batch
        """
        return self.to_world_model_batch(self.sample_sequences(batch_size, sequence_length), env)

    def world_model_batches(
        self, sequence_length: int, batch_size: int, env: VecNormalize | None = None
    ) -> Iterator[WorldModelBatch]:
        """
        :meth:`uniform_sequence_batches` (one pass, random order) as tensors ready for the world model.

        :param sequence_length: Length ``T`` of each sequence
        :param batch_size: Maximum number of sequences per batch
        :param env: The ``VecNormalize`` wrapper of the training env, if any
        :return: Iterator over the batches
        """
        batches = self.uniform_sequence_batches(sequence_length, batch_size)
        return (self.to_world_model_batch(batch, env) for batch in batches)

    def sample_observation_features(self, batch_size: int, env: VecNormalize | None = None) -> th.Tensor:
        """
        :meth:`sample_observations` (uniform, global numpy RNG) as features, e.g. to restart imagination.

        :param batch_size: Number of observations
        :param env: The ``VecNormalize`` wrapper of the training env, if any
        :return: ``(batch_size, *obs_shape)`` float32 features
        """
        return self.observation_features(self.sample_observations(batch_size), env)

    # ------------------------------------------------------------------ SB3 compatibility

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """
        Single transitions, uniformly over the stored steps (SB3's ``BaseBuffer.sample``): every stored step has its
        next observation here, so none is excluded as in SB3's memory-optimised ``ReplayBuffer.sample``.

        :param batch_size: Number of transitions.
        :param env: Associated VecEnv to normalize observations/rewards.
        :return: SB3 replay samples as torch tensors.
        """
        return BaseBuffer.sample(self, batch_size, env=env)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """
        Single transitions for SB3's ``sample()``, rebuilding next observations from the next slot.

        The true next observation after a truncation is not stored (the following slot holds the
        reset observation), so truncations are reported as ``done`` here: cutting the return is a
        smaller error than bootstrapping from an unrelated state.

        :param batch_inds: physical time indices in ``[0, size())``
        :param env: associated VecEnv to normalize observations/rewards
        :return: SB3 replay samples as torch tensors
        """
        batch_inds = np.asarray(batch_inds, dtype=np.int64)
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        next_obs = self.observations[(batch_inds + 1) % self.buffer_size, env_indices]
        is_newest = batch_inds == (self.pos - 1) % self.buffer_size
        next_obs[is_newest] = self.latest_next_observations[env_indices[is_newest]]
        dones = self.terminated[batch_inds, env_indices] | self.truncated[batch_inds, env_indices]
        data = (
            self._normalize_obs(self.observations[batch_inds, env_indices], env),
            self.actions[batch_inds, env_indices].reshape(len(batch_inds), -1),
            self._normalize_obs(next_obs, env),
            dones.astype(np.float32).reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))
