"""Lambda-returns, critic and actor losses of the actor-critic against hand-computed values."""

import math

import pytest
import torch as th

from sb3_twm.twm.actor_critic import actor_loss, critic_loss, lambda_returns
from sb3_twm.world_model.losses import HALF_LOG_TWO_PI


def test_lambda_returns_by_hand():
    rewards = th.tensor([[1.0, 2.0]])
    values = th.tensor([[0.5, 1.0, 4.0]])
    discounts = th.tensor([[0.9, 0.8]])
    dones = th.tensor([[False, False]])
    lam = 0.5
    delta1 = 2.0 + 0.8 * 4.0 - 1.0
    delta0 = 1.0 + 0.9 * 1.0 - 0.5
    a1 = delta1
    a0 = delta0 + lam * 0.9 * a1
    advantages, returns = lambda_returns(rewards, values, discounts, dones, lam)
    assert advantages[0].tolist() == pytest.approx([a0, a1])
    assert returns[0].tolist() == pytest.approx([a0 + 0.5, a1 + 1.0])


def test_lambda_returns_stop_at_dones():
    rewards = th.tensor([[1.0, 2.0]])
    values = th.tensor([[0.5, 1.0, 4.0]])
    discounts = th.tensor([[0.9, 0.8]])
    advantages, _ = lambda_returns(rewards, values, discounts, th.tensor([[True, False]]), 0.95)
    # A done step neither bootstraps from the next value nor sees the next advantage.
    assert advantages[0, 0].item() == pytest.approx(1.0 - 0.5)
    # lambda = 1 gives discounted Monte-Carlo returns bootstrapped at the end.
    _, mc = lambda_returns(rewards, values, discounts, th.tensor([[False, False]]), 1.0)
    assert mc[0, 0].item() == pytest.approx(1.0 + 0.9 * (2.0 + 0.8 * 4.0))


def test_critic_loss_is_weighted_gaussian_nll():
    values = th.tensor([[1.0, 2.0]])
    returns = th.tensor([[0.0, 2.0]])
    weights = th.tensor([[1.0, 0.5]])
    expected = (1.0 * (0.5 + HALF_LOG_TWO_PI) + 0.5 * HALF_LOG_TWO_PI) / 2
    assert critic_loss(values, returns, weights).item() == pytest.approx(expected)


def test_actor_loss_reinforce_and_thresholded_entropy():
    logits = th.log(th.tensor([[[0.7, 0.2, 0.1], [0.98, 0.01, 0.01]]]))
    actions = th.tensor([[0, 1]])
    advantages = th.tensor([[2.0, -1.0]])
    weights = th.tensor([[1.0, 0.5]])
    loss, terms = actor_loss(logits, actions, advantages, weights, ent_coef=0.01, entropy_threshold=0.1)
    reinforce = -(1.0 * math.log(0.7) * 2.0 + 0.5 * math.log(0.01) * -1.0) / 2
    assert terms["policy_gradient_loss"].item() == pytest.approx(reinforce, rel=1e-5)

    def entropy(p):
        return -sum(x * math.log(x) for x in p) / math.log(3)

    weighted_entropy = (1.0 * entropy([0.7, 0.2, 0.1]) + 0.5 * entropy([0.98, 0.01, 0.01])) / 2
    expected_entropy_loss = max(0.0, 0.1 - weighted_entropy)
    assert terms["entropy_loss"].item() == pytest.approx(expected_entropy_loss, abs=1e-6)
    assert loss.item() == pytest.approx(reinforce + 0.01 * expected_entropy_loss, rel=1e-5)
    # A nearly deterministic policy falls below the threshold and the entropy term switches on.
    peaked = th.log(th.tensor([[[0.999, 0.0005, 0.0005]]]))
    _, peaked_terms = actor_loss(peaked, th.tensor([[0]]), th.tensor([[0.0]]), th.tensor([[1.0]]), 0.01, 0.1)
    assert peaked_terms["entropy_loss"].item() > 0.05


def test_normalize_advantage_changes_the_actor_update_only():
    from torch import nn

    from sb3_twm.common.type_aliases import ImaginedTrajectories
    from sb3_twm.twm.actor_critic import ActorCritic

    th.manual_seed(0)
    n, horizon, latent = 16, 5, 8
    trajectories = ImaginedTrajectories(
        z=th.randn(n, horizon + 1, latent),
        actions=th.randint(0, 3, (n, horizon)),
        rewards=th.randn(n, horizon) * 3 + 1,
        discounts=th.full((n, horizon), 0.9),
        dones=th.zeros(n, horizon, dtype=th.bool),
        weights=th.ones(n, horizon + 1),
    )
    results = []
    for normalize in (False, True):
        th.manual_seed(1)
        actor, critic = nn.Linear(latent, 3), nn.Linear(latent, 1)
        actor_critic = ActorCritic(actor, critic, normalize_advantage=normalize,
                                   actor_optimizer_kwargs={"lr": 1e-3})  # fmt: skip
        metrics = actor_critic.update(trajectories).metrics
        results.append((metrics, actor.weight.detach().clone(), critic.weight.detach().clone()))
    (plain, plain_actor, plain_critic), (normalized, normalized_actor, normalized_critic) = results
    assert abs(plain["advantage"].item()) > 0.5 and abs(normalized["advantage"].item()) < 1e-6
    assert th.equal(plain_critic, normalized_critic)  # the critic learns from the returns either way
    assert not th.allclose(plain_actor, normalized_actor)
