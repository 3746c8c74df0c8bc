"""
The loss terms of TWM.

The paper rewrites the balanced KL of DreamerV2, ``KL(q || p) = CE(q, p) - H(q)``, into three terms that are
weighted on their own: the dynamics model's cross-entropy against the encoder's (detached) posterior, the
encoder's cross-entropy against the dynamics model's (detached) prior ("consistency"), and a thresholded
entropy term on the encoder.
"""

import math

import torch as th
import torch.nn.functional as F

from sb3_twm.common.distributions import latent_cross_entropy

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def thresholded_entropy_loss(normalized_entropy: th.Tensor, threshold: float, weights: th.Tensor | None = None) -> th.Tensor:
    """
    ``relu(threshold - mean(normalized_entropy))``: zero while the distribution is more random than the
    threshold, and pushes the entropy up once it falls below it.

    :param normalized_entropy: Entropies divided by their maximum, any shape.
    :param threshold: Entropy level (normalised) below which the term is active.
    :param weights: Optional weights of the mean (same shape), e.g. imagination weights.
    :return: Scalar loss (multiply by the coefficient outside).
    """
    if weights is None:
        mean_entropy = normalized_entropy.mean()
    else:
        mean_entropy = (weights * normalized_entropy).mean()
    return F.relu(threshold - mean_entropy)


def dynamics_cross_entropy(
    posterior_logits: th.Tensor, prior_logits: th.Tensor, weights: th.Tensor | None = None
) -> th.Tensor:
    """
    The dynamics model's half of the balanced KL: ``CE(sg(q), p)`` summed over the categoricals.

    :param posterior_logits: Encoder logits of the next observations ``(B, T, K, C)`` (detached here).
    :param prior_logits: Dynamics model's predicted logits ``(B, T, K, C)``.
    :param weights: ``(B, T)`` weights; the loss is their weighted mean (0 after an episode end).
    :return: Scalar loss.
    """
    cross_entropy = latent_cross_entropy(posterior_logits.detach().softmax(-1), prior_logits)
    if weights is None:
        return cross_entropy.mean()
    return (weights * cross_entropy).sum() / weights.sum().clamp_min(1.0)


def consistency_loss(posterior_logits: th.Tensor, prior_logits: th.Tensor) -> th.Tensor:
    """
    The encoder's half of the balanced KL: ``CE(sg(p), q)`` summed over the categoricals, mean over batch and time.

    :param posterior_logits: Encoder logits ``(B, T, K, C)``.
    :param prior_logits: Dynamics model's predicted logits for the same steps ``(B, T, K, C)`` (detached here).
    :return: Scalar loss.
    """
    return latent_cross_entropy(prior_logits.detach().softmax(-1), posterior_logits).mean()


def gaussian_nll(mean: th.Tensor, target: th.Tensor, sum_dims: tuple[int, ...] = ()) -> th.Tensor:
    """
    Negative log-likelihood of a unit-variance Gaussian (constant included, so the value is a true NLL):
    ``mean over the other axes of sum over sum_dims of 0.5 (mean - target)^2 + 0.5 log(2 pi)``.

    :param mean: Predicted means.
    :param target: Targets, same shape.
    :param sum_dims: Axes summed before the mean (e.g. the pixels of a frame).
    :return: Scalar loss.
    """
    if mean.shape != target.shape:
        raise ValueError(
            f"gaussian_nll needs means and targets of one shape, got {tuple(mean.shape)} and {tuple(target.shape)}."
        )
    summed = math.prod(mean.shape[dim] for dim in sum_dims)
    # One fused squared-error reduction (and one fused backward) instead of five element-wise passes over the
    # reconstructions: the same value, and much less memory traffic on a 100 x 16 x 4 x 64 x 64 batch.
    squared_error = F.mse_loss(mean.to(target.dtype), target, reduction="sum")
    return 0.5 * squared_error * (summed / max(mean.numel(), 1)) + HALF_LOG_TWO_PI * summed
