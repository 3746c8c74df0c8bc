"""The balanced-KL terms, the thresholded entropy and the Gaussian NLL against hand-computed values."""

import math

import pytest
import torch as th

from sb3_twm.common.distributions import normalized_latent_entropy
from sb3_twm.world_model.losses import (
    HALF_LOG_TWO_PI,
    consistency_loss,
    dynamics_cross_entropy,
    gaussian_nll,
    thresholded_entropy_loss,
)


def test_thresholded_entropy_is_a_hinge():
    entropy = th.tensor([0.02, 0.06])  # mean 0.04
    assert thresholded_entropy_loss(entropy, 0.1).item() == pytest.approx(0.06)
    # More random than the threshold: the term switches off.
    assert thresholded_entropy_loss(th.tensor([0.3, 0.5]), 0.1).item() == 0.0
    # Weighted mean: (1 * 0.02 + 0 * 0.06) / 2 = 0.01.
    weighted = thresholded_entropy_loss(entropy, 0.1, weights=th.tensor([1.0, 0.0]))
    assert weighted.item() == pytest.approx(0.09)


def test_thresholded_entropy_gradient_only_below_threshold():
    entropy = th.tensor([0.5], requires_grad=True)
    thresholded_entropy_loss(entropy, 0.1).backward()
    assert entropy.grad.item() == 0.0
    entropy = th.tensor([0.05], requires_grad=True)
    thresholded_entropy_loss(entropy, 0.1).backward()
    assert entropy.grad.item() == pytest.approx(-1.0)


def test_normalized_latent_entropy():
    uniform = th.zeros(1, 3, 4)  # 3 categoricals of 4 classes, uniform
    assert normalized_latent_entropy(uniform).item() == pytest.approx(1.0)
    peaked = th.tensor([[[100.0, 0.0, 0.0, 0.0]] * 3])
    assert normalized_latent_entropy(peaked).item() == pytest.approx(0.0, abs=1e-6)
    # One categorical with probabilities (1/2, 1/2, 0, 0): entropy ln 2 over the maximum 2 ln 4 (2 categoricals).
    half = th.tensor([[[0.0, 0.0, -1e9, -1e9], [0.0, 0.0, -1e9, -1e9]]])
    assert normalized_latent_entropy(half).item() == pytest.approx(2 * math.log(2) / (2 * math.log(4)))


def _hand_cross_entropy(p: th.Tensor, q_logits: th.Tensor) -> float:
    q = q_logits.softmax(-1)
    return -(p * q.log()).sum().item()


def test_balanced_kl_terms_match_hand_values():
    posterior = th.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])  # (B=1, T=1, K=2, C=2)
    prior = th.tensor([[[[0.5, 0.5], [1.0, -1.0]]]])
    expected_dynamics = _hand_cross_entropy(posterior.softmax(-1), prior)
    expected_consistency = _hand_cross_entropy(prior.softmax(-1), posterior)
    assert dynamics_cross_entropy(posterior, prior).item() == pytest.approx(expected_dynamics, rel=1e-6)
    assert consistency_loss(posterior, prior).item() == pytest.approx(expected_consistency, rel=1e-6)
    # KL(q || p) = CE(q, p) - H(q): the rewritten balanced KL is the sum of its separately weighted parts.
    q = posterior.softmax(-1)
    kl = (q * (q.log() - prior.log_softmax(-1))).sum().item()
    entropy = -(q * q.log()).sum().item()
    assert expected_dynamics - entropy == pytest.approx(kl, rel=1e-6)


def test_balanced_kl_gradients_go_to_one_side_each():
    posterior = th.randn(2, 3, 4, 5, requires_grad=True)
    prior = th.randn(2, 3, 4, 5, requires_grad=True)
    dynamics_cross_entropy(posterior, prior).backward()
    assert posterior.grad is None and prior.grad is not None
    prior.grad = None
    consistency_loss(posterior, prior).backward()
    assert prior.grad is None and posterior.grad is not None


def test_dynamics_cross_entropy_weights_mask_steps():
    posterior = th.randn(1, 2, 3, 4)
    prior = th.randn(1, 2, 3, 4)
    first_only = dynamics_cross_entropy(posterior, prior, weights=th.tensor([[1.0, 0.0]]))
    assert first_only.item() == pytest.approx(dynamics_cross_entropy(posterior[:, :1], prior[:, :1]).item(), rel=1e-6)


def test_gaussian_nll():
    mean = th.tensor([[0.0, 1.0]])
    target = th.tensor([[1.0, 1.0]])
    assert gaussian_nll(mean, target).item() == pytest.approx(0.25 + HALF_LOG_TWO_PI)
    assert gaussian_nll(mean, target, sum_dims=(-1,)).item() == pytest.approx(0.5 + 2 * HALF_LOG_TWO_PI)


def test_gaussian_nll_refuses_means_and_targets_of_different_shapes():
    # Broadcasting (B, T, 1) predictions against (B, T) targets would silently compute a (B, T, T) loss.
    with pytest.raises(ValueError, match=r"one shape, got \(2, 3, 1\) and \(2, 3\)"):
        gaussian_nll(th.zeros(2, 3, 1), th.zeros(2, 3))
