"""The data that passes between TWM's parts: dataset samples, world-model batches and outputs, imagined rollouts."""

from typing import NamedTuple

import numpy as np
import torch as th


class SequenceBatch(NamedTuple):
    """
    Sequences as the dataset stores them (numpy arrays): ``B`` sequences of ``T`` steps with one context step in front.

    Time index ``0`` is the context step (logical ``k - 1``), indices ``1 .. T`` are the sequence proper (logical
    ``k .. k + T - 1``) and, for observations only, index ``T + 1`` is the observation following the last step
    (logical ``k + T``).

    :param observations: ``(B, T + 2, *obs_shape)`` observations (dtype of the observation space)
    :param actions: ``(B, T + 1)`` int64 actions taken at the observation with the same time index (Box actions:
        ``(B, T + 1, action_dim)`` float32, scaled to ``[-1, 1]``)
    :param rewards: ``(B, T + 1)`` float32 raw rewards received after those actions
    :param terminated: ``(B, T + 1)`` bool, the episode ended by termination after that step
    :param truncated: ``(B, T + 1)`` bool, the episode was cut (time limit, reset) after that step
    :param starts: ``(B,)`` int64 logical start index ``k`` of each sequence (0 = oldest stored step)
    :param env_indices: ``(B,)`` int64 environment index of each sequence
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    starts: np.ndarray
    env_indices: np.ndarray


class WorldModelBatch(NamedTuple):
    """
    Sequences ready for the networks (tensors on the model's device): ``B`` sequences of ``T`` steps with one context
    step in front and the next observation at the end. Index 0 is the context step, 1..T the sequence, T+1
    (observations only) the next observation.
    """

    observations: th.Tensor  # (B, T+2, *obs_shape) float features (normalised, images scaled to [0, 1])
    actions: th.Tensor  # (B, T+1) long, or (B, T+1, A) float for Box actions
    rewards: th.Tensor  # (B, T+1) float32, transformed for training (e.g. tanh)
    terminated: th.Tensor  # (B, T+1) bool
    truncated: th.Tensor  # (B, T+1) bool


class WorldModelOutput(NamedTuple):
    """What one world-model update leaves for imagination: the latents it used, detached."""

    z: th.Tensor  # (B, T+1, K*C) sampled latents of the context and sequence steps
    actions: th.Tensor  # (B, T+1), or (B, T+1, A)
    rewards: th.Tensor  # (B, T+1)
    dones: th.Tensor  # (B, T+1) bool


class WorldModelUpdate(NamedTuple):
    """The result of one world-model update."""

    output: WorldModelOutput  # the latents for imagination starts
    metrics: dict[str, th.Tensor]  # detached loss terms and gradient norms
    skipped_updates: int  # optimiser steps skipped because their gradients were not finite (0, 1 or 2)


class Update(NamedTuple):
    """The result of an update without an output for the next stage (pretraining steps, the actor-critic)."""

    metrics: dict[str, th.Tensor]  # detached loss terms
    skipped_updates: int  # optimiser steps skipped because their gradients were not finite


class ImaginationStart(NamedTuple):
    """Where ``N`` imagined rollouts start: one real context step (which builds the memory) and the start latent."""

    context_z: th.Tensor  # (N, K*C) latent of the real step before the start
    context_actions: th.Tensor  # (N,) action taken there, or (N, A)
    context_rewards: th.Tensor  # (N,) its (transformed) reward, the first reward token
    context_dones: th.Tensor  # (N,) bool, whether an episode ended after it
    z: th.Tensor  # (N, K*C) the start latents


class ImaginedTrajectories(NamedTuple):
    """A batch of imagined rollouts of ``H`` steps."""

    z: th.Tensor  # (N, H+1, K*C) latents, the start included
    actions: th.Tensor  # (N, H), or (N, H, A) values of quantised Box actions
    rewards: th.Tensor  # (N, H) predicted reward of each step
    discounts: th.Tensor  # (N, H) predicted discount after each step
    dones: th.Tensor  # (N, H) bool: the rollout restarted after this step
    weights: th.Tensor  # (N, H+1) cumulative predicted discounts, 1 at the start and after a restart
