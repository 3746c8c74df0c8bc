"""
The actor-critic losses of TWM, computed on imagined (or, in pretraining, real) latent trajectories: lambda-returns
over predicted discounts, a Gaussian critic, and REINFORCE with the thresholded entropy loss.
"""

import math

import torch as th
from torch.distributions import Categorical

from sb3_twm.world_model.losses import HALF_LOG_TWO_PI, thresholded_entropy_loss


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
) -> tuple[th.Tensor, dict[str, th.Tensor]]:
    """
    REINFORCE on the advantages plus the thresholded entropy loss on the weighted normalised policy entropy.

    :param logits: ``(N, H, num_actions)``.
    :param actions: ``(N, H)``.
    :param advantages: ``(N, H)`` (no gradient).
    :param weights: ``(N, H)``.
    :param ent_coef: Weight of the thresholded entropy loss.
    :param entropy_threshold: Normalised entropy below which it is active.
    :return: Scalar loss and its terms.
    """
    distribution = Categorical(logits=logits.float())
    log_probs = distribution.log_prob(actions)
    entropy = distribution.entropy() / math.log(max(logits.shape[-1], 2))
    reinforce = -(weights * log_probs * advantages).mean()
    entropy_loss = thresholded_entropy_loss(entropy, entropy_threshold, weights)
    return reinforce + ent_coef * entropy_loss, {
        "policy_gradient_loss": reinforce,
        "entropy_loss": entropy_loss,
        "entropy": entropy.mean(),
    }
