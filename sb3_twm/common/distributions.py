"""The discrete latent of TWM: independent one-hot categoricals with straight-through gradients."""

import math

import torch as th
import torch.nn.functional as F


def sample_one_hot(logits: th.Tensor, temperature: float = 1.0, straight_through: bool = True) -> th.Tensor:
    """
    Sample one-hot vectors from categoricals over the last axis.

    :param logits: Unnormalised log-probabilities ``(..., num_classes)``.
    :param temperature: 0 takes the argmax (acting), 1 samples (training and imagination).
    :param straight_through: Add ``probs - sg(probs)`` so gradients reach the logits.
    :return: One-hot tensor of the same shape as ``logits``.
    """
    num_classes = logits.shape[-1]
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), num_classes).to(logits.dtype)
    logits = logits / temperature
    probs = logits.softmax(-1)
    flat_probs = probs.reshape(-1, num_classes)
    indices = th.multinomial(flat_probs.detach().float(), 1).view(probs.shape[:-1])
    one_hot = F.one_hot(indices, num_classes).to(logits.dtype)
    if straight_through:
        one_hot = one_hot + probs - probs.detach()
    return one_hot


def categorical_entropy(logits: th.Tensor) -> th.Tensor:
    """
    Entropy of categoricals over the last axis.

    :param logits: ``(..., num_classes)``.
    :return: ``(...)``.
    """
    log_probs = logits.float().log_softmax(-1)  # float32 also under bf16 autocast
    return -(log_probs.exp() * log_probs).sum(-1)


def normalized_latent_entropy(logits: th.Tensor) -> th.Tensor:
    """
    Entropy of a latent of ``K`` independent categoricals of ``C`` classes, divided by its maximum ``K ln C``.

    :param logits: ``(..., K, C)``.
    :return: ``(...)`` in [0, 1].
    """
    num_categoricals, num_classes = logits.shape[-2:]
    return categorical_entropy(logits).sum(-1) / (num_categoricals * math.log(num_classes))


def latent_cross_entropy(target_probs: th.Tensor, logits: th.Tensor) -> th.Tensor:
    """
    Cross-entropy ``-sum p log q`` of a latent, summed over its categoricals.

    :param target_probs: Probabilities ``p`` of shape ``(..., K, C)``.
    :param logits: Logits of ``q`` of shape ``(..., K, C)``.
    :return: ``(...)``.
    """
    return -(target_probs.float() * logits.float().log_softmax(-1)).sum((-2, -1))
