"""
The actor-critic of TWM, trained only on latent trajectories: imagined ones, and in the one-off pretraining real ones.
Lambda-returns over predicted discounts, a Gaussian critic, and REINFORCE with the thresholded entropy loss
(the reference's ``ActorCritic.optimize``, ``optimize_pretrain`` and ``sync_target``, jrobine/twm ``actor_critic.py``).
"""

import copy
from typing import Any

import torch as th
from torch import nn

from sb3_twm.common.actions import ActionDistribution, CategoricalActions
from sb3_twm.common.optim import make_adam, optimizer_step
from sb3_twm.common.type_aliases import ImaginedTrajectories, Update
from sb3_twm.world_model.losses import HALF_LOG_TWO_PI, thresholded_entropy_loss

# Adam settings of the actor and the critic (``actor_*``/``critic_*`` of the reference). The actor's ``lr`` comes from
# the algorithm's ``learning_rate``; the critic has its own.
ACTOR_OPTIMIZER_DEFAULTS: dict[str, float] = {"eps": 1e-5, "weight_decay": 1e-6, "max_grad_norm": 1.0}
CRITIC_OPTIMIZER_DEFAULTS: dict[str, float] = {"lr": 1e-5, "eps": 1e-5, "weight_decay": 1e-6, "max_grad_norm": 1.0}


@th.no_grad()
def lambda_returns(
    rewards: th.Tensor, values: th.Tensor, discounts: th.Tensor, dones: th.Tensor, gae_lambda: float
) -> tuple[th.Tensor, th.Tensor]:
    """
    GAE-style advantages and lambda-returns. The discounts are the world model's predictions (already about
    ``gamma`` or 0), so gamma is not applied again; a done step does not bootstrap.

    :param rewards: ``(N, H)``.
    :param values: ``(N, H+1)`` critic values of every state.
    :param discounts: ``(N, H)`` discount after each step.
    :param dones: ``(N, H)`` bool, the trajectory restarted after the step.
    :param gae_lambda: lambda.
    :return: Advantages ``(N, H)`` and returns ``(N, H)`` (advantages + values).
    """
    # rewards, discounts, dones: (N, H); values: (N, H+1)
    continues = discounts * (~dones).to(discounts.dtype)
    deltas = rewards + continues * values[:, 1:] - values[:, :-1]
    advantages = th.zeros_like(rewards)
    advantage = th.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        advantage = deltas[:, t] + gae_lambda * continues[:, t] * advantage
        advantages[:, t] = advantage
    return advantages, advantages + values[:, :-1]


def critic_loss(values: th.Tensor, returns: th.Tensor, weights: th.Tensor) -> th.Tensor:
    """
    Weighted Gaussian negative log-likelihood (unit variance) of the returns under the predicted values.

    :param values: ``(N, H)``.
    :param returns: ``(N, H)`` (no gradient).
    :param weights: ``(N, H)`` imagination weights.
    :return: Scalar loss.
    """
    return (weights * (0.5 * (values.float() - returns).pow(2) + HALF_LOG_TWO_PI)).mean()


def actor_loss(
    logits: th.Tensor,
    actions: th.Tensor,
    advantages: th.Tensor,
    weights: th.Tensor,
    ent_coef: float,
    entropy_threshold: float,
    action_distribution: ActionDistribution | None = None,
) -> tuple[th.Tensor, dict[str, th.Tensor]]:
    """
    REINFORCE on the advantages plus the thresholded entropy loss on the weighted normalised policy entropy.

    :param logits: ``(N, H, num_logits)``.
    :param actions: ``(N, H)`` discrete actions, or ``(N, H, action_dim)`` values of quantised Box actions.
    :param advantages: ``(N, H)`` (no gradient).
    :param weights: ``(N, H)``.
    :param ent_coef: Weight of the thresholded entropy loss.
    :param entropy_threshold: Normalised entropy below which it is active.
    :param action_distribution: How the logits define the policy (default: one categorical over the last axis).
    :return: Scalar loss and its terms.
    """
    if action_distribution is None:
        action_distribution = CategoricalActions(logits.shape[-1])
    log_probs, entropy = action_distribution.log_prob_and_entropy(logits, actions)
    reinforce = -(weights * log_probs * advantages).mean()
    entropy_loss = thresholded_entropy_loss(entropy, entropy_threshold, weights)
    return reinforce + ent_coef * entropy_loss, {
        "policy_gradient_loss": reinforce,
        "entropy_loss": entropy_loss,
        "entropy": entropy.mean(),
    }


class ActorCritic(nn.Module):
    """
    The actor (shared with the acting policy), the critic, its target and both optimisers. The critic steps first,
    then the actor, as in the reference. The algorithm decides when to :meth:`sync_target`.

    :param actor: Latents ``(..., K*C)`` to action logits (the policy's actor).
    :param critic: Latents to a value ``(..., 1)``.
    :param gae_lambda: Lambda of the lambda-returns.
    :param ent_coef: Weight of the actor's thresholded entropy loss.
    :param entropy_threshold: Normalised policy entropy below which that loss is active.
    :param normalize_advantage: Normalise advantages per batch.
    :param separate_target: Bootstrap from a target copy of the critic (synchronised by :meth:`sync_target`) instead
        of the critic itself.
    :param actor_optimizer_kwargs: Adam settings of the actor: ``lr``, and ``eps``, ``weight_decay``, ``max_grad_norm``
        (defaults: ``ACTOR_OPTIMIZER_DEFAULTS``), optionally ``betas``.
    :param critic_optimizer_kwargs: Adam settings of the critic (defaults: ``CRITIC_OPTIMIZER_DEFAULTS``).
    :param skip_non_finite_updates: Skip an optimiser step whose gradients are not finite.
    :param action_distribution: How the actor's outputs define the policy (default: one categorical over them).
    """

    def __init__(
        self,
        actor: nn.Module,
        critic: nn.Module,
        gae_lambda: float = 0.95,
        ent_coef: float = 0.01,
        entropy_threshold: float = 0.1,
        normalize_advantage: bool = False,
        separate_target: bool = False,
        actor_optimizer_kwargs: dict[str, Any] | None = None,
        critic_optimizer_kwargs: dict[str, Any] | None = None,
        skip_non_finite_updates: bool = False,
        action_distribution: ActionDistribution | None = None,
    ) -> None:
        super().__init__()
        self.actor = actor
        self.action_distribution = action_distribution
        self.critic = critic
        self.critic_target = copy.deepcopy(critic) if separate_target else critic
        if separate_target:
            self.critic_target.requires_grad_(False)
        self.gae_lambda = gae_lambda
        self.ent_coef = ent_coef
        self.entropy_threshold = entropy_threshold
        self.normalize_advantage = normalize_advantage
        self.skip_non_finite_updates = skip_non_finite_updates
        actor_settings = {**ACTOR_OPTIMIZER_DEFAULTS, **(actor_optimizer_kwargs or {})}
        critic_settings = {**CRITIC_OPTIMIZER_DEFAULTS, **(critic_optimizer_kwargs or {})}
        self.actor_optimizer = make_adam(actor.parameters(), actor_settings)
        self.critic_optimizer = make_adam(critic.parameters(), critic_settings)
        self.actor_max_grad_norm = actor_settings["max_grad_norm"]
        self.critic_max_grad_norm = critic_settings["max_grad_norm"]

    def sync_target(self) -> None:
        """Copy the critic into its target (nothing to do without a separate target)."""
        if self.critic_target is not self.critic:
            self.critic_target.load_state_dict(self.critic.state_dict())

    def update(self, trajectories: ImaginedTrajectories) -> Update:
        """
        One update on imagined rollouts: critic on the lambda-returns, actor by REINFORCE plus thresholded entropy,
        both weighted by the cumulative predicted discounts.

        :param trajectories: ``N`` rollouts of ``H`` steps.
        :return: The detached metrics and the number of skipped optimiser steps.
        """
        # z: (N, H+1, K*C); actions, rewards, discounts, dones: (N, H); weights: (N, H+1)
        weights = trajectories.weights[:, :-1]
        advantages, returns, values, critic_metrics, critic_stepped = self._update_critic(
            trajectories.z, trajectories.rewards, trajectories.discounts, trajectories.dones, weights
        )
        logits = self.actor(trajectories.z[:, :-1])
        policy_loss, terms = actor_loss(
            logits,
            trajectories.actions,
            advantages,
            weights,
            self.ent_coef,
            self.entropy_threshold,
            self._distribution(logits),
        )
        actor_grad_norm, actor_stepped = self._step_actor(policy_loss)
        metrics = self._metrics(critic_metrics, policy_loss, values, returns, advantages, terms, actor_grad_norm)
        return Update(metrics, 2 - critic_stepped - actor_stepped)

    def pretrain_update(self, z: th.Tensor, rewards: th.Tensor, discounts: th.Tensor) -> Update:
        """
        One update on real latent sequences (the reference's ``optimize_pretrain``): critic on the lambda-returns, the
        actor only maximising its normalised entropy.

        :param z: ``(N, H+1, K*C)`` latents.
        :param rewards: ``(N, H)``.
        :param discounts: ``(N, H)`` ``gamma * (1 - done)``.
        :return: The detached metrics and the number of skipped optimiser steps.
        """
        # z: (N, H+1, K*C); rewards, discounts: (N, H)
        no_restarts = th.zeros_like(discounts, dtype=th.bool)
        advantages, returns, values, critic_metrics, critic_stepped = self._update_critic(
            z, rewards, discounts, no_restarts, th.ones_like(discounts)
        )
        logits = self.actor(z[:, :-1])
        # The log-softmax formula of the entropy here, the distribution's in actor_loss: they differ in the last bit
        # (up to ~5e-7), and each is kept so that training computes what it always computed.
        entropy = self._distribution(logits).normalized_entropy(logits).mean()
        policy_loss = -self.ent_coef * entropy
        actor_grad_norm, actor_stepped = self._step_actor(policy_loss)
        terms = {"entropy": entropy}
        metrics = self._metrics(critic_metrics, policy_loss, values, returns, advantages, terms, actor_grad_norm)
        return Update(metrics, 2 - critic_stepped - actor_stepped)

    def _update_critic(
        self, z: th.Tensor, rewards: th.Tensor, discounts: th.Tensor, dones: th.Tensor, weights: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, dict[str, th.Tensor], bool]:
        # z: (N, H+1, K*C); rewards, discounts, dones, weights: (N, H)
        with th.no_grad():
            values = self.critic_target(z).squeeze(-1).float()  # (N, H+1), float32 also under autocast
        advantages, returns = lambda_returns(rewards, values, discounts, dones, self.gae_lambda)
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        value_loss = critic_loss(self.critic(z[:, :-1]).squeeze(-1), returns, weights)
        critic_grad_norm, stepped = optimizer_step(
            self.critic_optimizer, value_loss, self.critic_max_grad_norm, self.skip_non_finite_updates, "critic"
        )
        return advantages, returns, values, {"critic_loss": value_loss, "critic_grad_norm": critic_grad_norm}, stepped

    def _distribution(self, logits: th.Tensor) -> ActionDistribution:
        return self.action_distribution or CategoricalActions(logits.shape[-1])

    def _step_actor(self, loss: th.Tensor) -> tuple[th.Tensor, bool]:
        return optimizer_step(self.actor_optimizer, loss, self.actor_max_grad_norm, self.skip_non_finite_updates, "actor")

    @staticmethod
    def _metrics(
        critic_metrics: dict[str, th.Tensor],
        policy_loss: th.Tensor,
        values: th.Tensor,
        returns: th.Tensor,
        advantages: th.Tensor,
        terms: dict[str, th.Tensor],
        actor_grad_norm: th.Tensor,
    ) -> dict[str, th.Tensor]:
        return {
            "critic_loss": critic_metrics["critic_loss"].detach(),
            "actor_loss": policy_loss.detach(),
            "value": values.mean(),
            "return": returns[:, 0].mean(),
            "advantage": advantages.mean(),
            "critic_grad_norm": critic_metrics["critic_grad_norm"],
            "actor_grad_norm": actor_grad_norm,
            **{key: value.detach() for key, value in terms.items()},
        }
