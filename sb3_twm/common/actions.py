"""
The actor's action distributions. ``Discrete`` actions: one categorical (the paper's). ``Box`` actions: each dimension
quantised to evenly spaced values in ``[-1, 1]`` (SB3's scaled action range, rescaled to the env's bounds by the
policy), one independent categorical per dimension. The quantised actor keeps the paper's actor loss unchanged:
REINFORCE on the summed log-probabilities, and the thresholded entropy on the entropy normalised by its maximum.
"""

import math

import numpy as np
import torch as th
from gymnasium import spaces
from torch.distributions import Categorical

from sb3_twm.common.checks import check_action_space
from sb3_twm.common.distributions import categorical_entropy

# Values per action dimension of a Box action space: odd, so that 0 is one of them.
DEFAULT_ACTION_BINS = 11


def entropy_scale(num_actions: int) -> float:
    """:return: The maximum entropy of a categorical policy, ``ln(num_actions)`` (1 actions: ln 2), which normalises it."""
    return math.log(max(num_actions, 2))


class CategoricalActions:
    """
    ``Discrete(n)`` actions: the actor's ``n`` logits define one categorical.

    :param num_actions: ``n``.
    """

    continuous = False

    def __init__(self, num_actions: int) -> None:
        self.num_actions = int(num_actions)
        self.num_logits = self.num_actions
        # What the dynamics model embeds: one of num_actions actions (the rows of an embedding table).
        self.embedding_size = self.num_actions

    def sample(self, logits: th.Tensor) -> th.Tensor:
        """
        :param logits: ``(N, n)``.
        :return: ``(N,)`` sampled actions (int64).
        """
        return th.multinomial(logits.softmax(-1), 1).squeeze(-1)

    def mode(self, logits: th.Tensor) -> th.Tensor:
        """:return: ``(...)`` the most likely actions of ``logits`` ``(..., n)``."""
        return logits.argmax(-1)

    def log_prob_and_entropy(self, logits: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        :param logits: ``(..., n)``.
        :param actions: ``(...)`` int64.
        :return: The log-probabilities of ``actions`` and the entropy divided by ``ln n``, both ``(...)``.
        """
        distribution = Categorical(logits=logits.float())
        return distribution.log_prob(actions), distribution.entropy() / entropy_scale(self.num_actions)

    def normalized_entropy(self, logits: th.Tensor) -> th.Tensor:
        """:return: ``(...)`` the entropy of ``logits`` ``(..., n)`` divided by ``ln n`` (log-softmax formula)."""
        return categorical_entropy(logits) / entropy_scale(self.num_actions)


class BinnedActions:
    """
    ``Box`` actions, flattened to ``action_dim`` dimensions, each quantised to ``bins`` evenly spaced values in
    ``[-1, 1]``: the actor's ``action_dim * bins`` logits define one categorical per dimension. Actions are the
    values (float32, scaled like SB3's ``policy.scale_action``); the entropy is normalised by its maximum,
    ``action_dim * ln bins``, so the entropy threshold means what it means for discrete actions.

    :param action_dim: Number of action dimensions.
    :param bins: Values per dimension (at least 2).
    """

    continuous = True

    def __init__(self, action_dim: int, bins: int) -> None:
        self.action_dim = int(action_dim)
        self.bins = int(bins)
        self.num_logits = self.action_dim * self.bins
        # What the dynamics model embeds: a vector of action_dim values.
        self.embedding_size = self.action_dim
        self._step = 2.0 / (self.bins - 1)

    def values(self, indices: th.Tensor) -> th.Tensor:
        """:return: The action values ``-1 + index * 2 / (bins - 1)`` of bin indices (float32)."""
        return indices.float() * self._step - 1.0

    def indices(self, actions: th.Tensor) -> th.Tensor:
        """:return: The nearest bin index (int64) of each action value in ``[-1, 1]``."""
        return ((actions.float() + 1.0) / self._step).round().long().clamp(0, self.bins - 1)

    def _per_dimension(self, logits: th.Tensor) -> th.Tensor:
        return logits.view(*logits.shape[:-1], self.action_dim, self.bins)

    def sample(self, logits: th.Tensor) -> th.Tensor:
        """
        :param logits: ``(N, action_dim * bins)``.
        :return: ``(N, action_dim)`` sampled action values.
        """
        probs = self._per_dimension(logits).softmax(-1)
        indices = th.multinomial(probs.reshape(-1, self.bins), 1).view(probs.shape[:-1])
        return self.values(indices)

    def mode(self, logits: th.Tensor) -> th.Tensor:
        """:return: ``(..., action_dim)`` the most likely value of each dimension."""
        return self.values(self._per_dimension(logits).argmax(-1))

    def log_prob_and_entropy(self, logits: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        :param logits: ``(..., action_dim * bins)``.
        :param actions: ``(..., action_dim)`` action values (bin values; others count as their nearest bin).
        :return: The log-probabilities of ``actions`` (summed over dimensions) and the normalised entropy, ``(...)``.
        """
        distribution = Categorical(logits=self._per_dimension(logits.float()))
        log_probs = distribution.log_prob(self.indices(actions)).sum(-1)
        return log_probs, distribution.entropy().sum(-1) / (self.action_dim * entropy_scale(self.bins))

    def normalized_entropy(self, logits: th.Tensor) -> th.Tensor:
        """:return: ``(...)`` the entropy of all dimensions divided by ``action_dim * ln bins``."""
        return categorical_entropy(self._per_dimension(logits)).sum(-1) / (self.action_dim * entropy_scale(self.bins))


ActionDistribution = CategoricalActions | BinnedActions


def make_action_distribution(action_space: spaces.Space, action_bins: int = DEFAULT_ACTION_BINS) -> ActionDistribution:
    """
    :param action_space: A ``Discrete`` space, or a ``Box`` with finite bounds (:func:`check_action_space`).
    :param action_bins: Values per dimension of a ``Box`` space.
    :return: The actor's distribution for that space.
    """
    check_action_space(action_space)
    if isinstance(action_space, spaces.Discrete):
        return CategoricalActions(int(action_space.n))
    if isinstance(action_bins, bool) or not isinstance(action_bins, (int, np.integer)) or action_bins < 2:
        raise ValueError(f"action_bins must be an integer >= 2 (values per action dimension), got {action_bins!r}.")
    return BinnedActions(int(np.prod(action_space.shape)), int(action_bins))
