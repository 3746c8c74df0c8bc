"""Box (continuous) action spaces: the quantised actor, the dataset, the world model, save/load and the zoo sampler."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from configurations import TINY_MLP_POLICY_KWARGS, TINY_SCHEDULE_KWARGS
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_twm import TWM, MlpPolicy
from sb3_twm.common.actions import BinnedActions, CategoricalActions, make_action_distribution
from sb3_twm.common.buffers import TWMReplayBuffer
from sb3_twm.common.checkpoints import CheckpointError
from sb3_twm.twm.actor_critic import actor_loss
from sb3_twm.world_model.dynamics_model import DynamicsModel

LOW, HIGH = np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32)


class TargetEnv(gym.Env):
    """Two action dimensions with different bounds; the reward is higher the closer the action is to a target."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Box(-1, 1, (3,), np.float32)
        self.action_space = spaces.Box(LOW, HIGH, dtype=np.float32)
        self.actions: list[np.ndarray] = []
        self._steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._steps = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, np.float32)), action
        self.actions.append(np.array(action))
        self._steps += 1
        reward = -float(np.abs(np.asarray(action) - np.array([1.0, 7.5])).sum())
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return obs, reward, False, self._steps >= 20, {}


def tiny(**overrides):
    kwargs = {**TINY_SCHEDULE_KWARGS, "policy_kwargs": {**TINY_MLP_POLICY_KWARGS, "action_bins": 5}}
    return {**kwargs, **overrides}


@pytest.fixture(scope="module")
def trained():
    model = TWM("MlpPolicy", TargetEnv(), seed=0, **tiny())
    model.learn(300)
    return model


def test_binned_actions_values_indices_and_entropy():
    distribution = BinnedActions(action_dim=2, bins=5)
    assert distribution.num_logits == 10
    indices = th.tensor([[0, 4], [2, 3]])
    values = distribution.values(indices)
    assert th.allclose(values, th.tensor([[-1.0, 1.0], [0.0, 0.5]]))
    assert th.equal(distribution.indices(values), indices)
    assert th.equal(distribution.indices(th.tensor([[0.26, -0.74]])), th.tensor([[3, 1]]))  # nearest bin
    # Uniform logits: maximal normalised entropy 1, and each action has probability (1/5)^2.
    uniform = th.zeros(3, 10)
    log_probs, entropy = distribution.log_prob_and_entropy(uniform, distribution.values(th.zeros(3, 2, dtype=th.long)))
    assert th.allclose(entropy, th.ones(3)) and th.allclose(log_probs, th.full((3,), 2 * np.log(0.2)))
    assert th.allclose(distribution.normalized_entropy(uniform), th.ones(3))
    # A peaked first dimension halves the normalised entropy; the mode is the peak.
    peaked = th.zeros(1, 10)
    peaked[0, 3] = 100.0
    assert th.allclose(distribution.normalized_entropy(peaked), th.tensor([0.5]), atol=1e-4)
    assert th.allclose(distribution.mode(peaked), th.tensor([[0.5, -1.0]]))
    samples = distribution.sample(peaked.expand(200, -1))
    assert samples.shape == (200, 2) and th.all(samples[:, 0] == 0.5)
    assert set(distribution.indices(samples[:, 1]).tolist()) == {0, 1, 2, 3, 4}


def test_binned_actor_loss_sums_log_probabilities_over_dimensions():
    distribution = BinnedActions(action_dim=2, bins=3)
    logits = th.randn(4, 5, 6, generator=th.Generator().manual_seed(0), requires_grad=True)
    actions = distribution.values(th.randint(0, 3, (4, 5, 2), generator=th.Generator().manual_seed(1)))
    advantages, weights = th.randn(4, 5), th.rand(4, 5)
    loss, _ = actor_loss(logits, actions, advantages, weights, 0.0, 0.1, distribution)
    per_dimension = logits.view(4, 5, 2, 3).log_softmax(-1).gather(-1, distribution.indices(actions)[..., None])
    expected = -(weights * per_dimension.squeeze(-1).sum(-1) * advantages).mean()
    assert th.allclose(loss, expected)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_discrete_actions_keep_their_categorical():
    distribution = make_action_distribution(spaces.Discrete(4))
    assert isinstance(distribution, CategoricalActions) and distribution.num_logits == 4


@pytest.mark.parametrize(
    "space, message",
    [
        (spaces.Box(-np.inf, np.inf, (2,), np.float32), "finite bounds"),
        (spaces.Box(np.array([0.0, 1.0], np.float32), np.array([0.0, 2.0], np.float32)), "high > low"),
        (spaces.MultiDiscrete([2, 3]), "Discrete and Box action spaces"),
    ],
)
def test_unsupported_action_spaces_say_what_to_do(space, message):
    with pytest.raises(ValueError, match=message):
        MlpPolicy(spaces.Box(-1, 1, (3,), np.float32), space, lambda _: 1e-3)


def test_action_bins_must_be_at_least_two():
    with pytest.raises(ValueError, match="action_bins must be an integer >= 2"):
        TWM("MlpPolicy", TargetEnv(), **tiny(policy_kwargs={**TINY_MLP_POLICY_KWARGS, "action_bins": 1}))


def test_predict_gives_actions_on_the_grid_within_the_bounds(trained):
    env = TargetEnv()
    obs, _ = env.reset(seed=3)
    grid = [np.linspace(low, high, 5) for low, high in zip(LOW, HIGH)]
    for deterministic in (True, False):
        for _ in range(20):
            action, _ = trained.predict(obs, deterministic=deterministic)
            assert action.shape == (2,) and env.action_space.contains(action)
            for value, values in zip(action, grid):
                assert np.min(np.abs(values - value)) < 1e-5, (action, grid)
    first, _ = trained.predict(obs, deterministic=True)
    again, _ = trained.predict(obs, deterministic=True)
    np.testing.assert_array_equal(first, again)


def test_training_stores_scaled_actions_and_imagines_binned_ones(trained):
    assert trained.world_model.dynamics_model.continuous_actions
    assert isinstance(trained.world_model.dynamics_model.action_embedding[0], th.nn.Linear)
    buffer = trained.replay_buffer
    stored = buffer.actions[: buffer.size()]
    assert stored.shape == (buffer.size(), 1, 2) and stored.dtype == np.float32
    assert np.all(np.abs(stored) <= 1.0)
    # The random prefill covers the range; the actor's steps lie on the grid of 5 values.
    assert len(np.unique(stored[:200])) > 100
    learned = stored[200:]
    assert np.allclose(learned, np.round((learned + 1) * 2) / 2 - 1, atol=1e-5)
    batch = buffer.sample_world_model_batch(4, 8)
    assert batch.actions.dtype == th.float32 and batch.actions.shape == (4, 9, 2)
    update = trained.world_model.train_step(batch)
    trajectories = trained.imagine(update.output)
    assert trajectories.actions.shape == (trained.imagination_batch_size, trained.imagination_horizon, 2)
    bins = trained.policy.action_distribution
    assert th.allclose(bins.values(bins.indices(trajectories.actions)), trajectories.actions)
    assert trained._n_updates > 0 and trained._skipped_updates == 0


def test_dreams_of_box_actions(trained):
    from sb3_twm.twm.dreaming import dream_from_env

    dream = trained.dream(sequences=2, steps=12, context=4)
    assert dream.actions.shape == (2, 12, 2) and dream.imagined.shape == (2, 12, 3)
    # Played fresh: the actions reach the dataset scaled to [-1, 1], on the actor's grid.
    played = dream_from_env(trained, DummyVecEnv([TargetEnv]), steps=10, context=3)
    assert played.actions.shape == (1, 10, 2)
    given = played.actions[0, :3]
    assert th.all(given.abs() <= 1.0) and th.allclose(given, th.round((given + 1) * 2) / 2 - 1, atol=1e-5)


def test_continuous_action_embedding_receives_gradients():
    model = DynamicsModel(3, 4, 4, embed_dim=16, num_heads=2, head_dim=8, num_layers=1, feedforward_dim=32,
                          memory_length=4, z_head_dims=[16], reward_head_dims=[16], discount_head_dims=[16],
                          continuous_actions=True)  # fmt: skip
    z = th.nn.functional.one_hot(th.randint(0, 4, (2, 5, 4)), 4).float().flatten(2)
    actions = th.rand(2, 5, 3) * 2 - 1
    prediction = model(z, actions, th.zeros(2, 4), th.zeros(2, 4, dtype=th.bool))
    assert prediction.z_logits.shape == (2, 5, 4, 4)
    prediction.reward.sum().backward()
    assert model.action_embedding[0].weight.grad.abs().sum() > 0
    # Different actions, different predictions.
    other = model(z, -actions, th.zeros(2, 4), th.zeros(2, 4, dtype=th.bool))
    assert not th.allclose(prediction.reward, other.reward)


def test_save_and_load_round_trip(trained, tmp_path):
    trained.save(tmp_path / "model.zip")
    trained.save_replay_buffer(tmp_path / "dataset")
    loaded = TWM.load(tmp_path / "model.zip", env=DummyVecEnv([TargetEnv]))
    loaded.load_replay_buffer(tmp_path / "dataset.npz")
    assert loaded.action_space == trained.action_space
    assert loaded.policy_kwargs["action_bins"] == 5
    obs = np.random.default_rng(0).uniform(-1, 1, (8, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], trained.predict(obs, deterministic=True)[0])
    np.testing.assert_array_equal(loaded.replay_buffer.actions, trained.replay_buffer.actions)
    # The policy alone too.
    trained.policy.save(tmp_path / "policy.zip")
    policy = MlpPolicy.load(tmp_path / "policy.zip")
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], trained.predict(obs, deterministic=True)[0])


@pytest.mark.parametrize("value", [np.nan, 3.0])
def test_a_dataset_with_actions_outside_the_range_is_refused(trained, tmp_path, value):
    model = TWM("MlpPolicy", TargetEnv(), seed=0, **tiny())
    model.replay_buffer = trained.replay_buffer
    actions = trained.replay_buffer.actions.copy()
    try:
        trained.replay_buffer.actions[5, 0, 1] = value
        model.save_replay_buffer(tmp_path / "dataset")
    finally:
        trained.replay_buffer.actions[...] = actions
    fresh = TWM("MlpPolicy", TargetEnv(), seed=0, **tiny())
    with pytest.raises(CheckpointError, match="actions outside the action space"):
        fresh.load_replay_buffer(tmp_path / "dataset.npz")


def test_several_envs_store_one_action_vector_each():
    env = DummyVecEnv([TargetEnv, TargetEnv])
    model = TWM("MlpPolicy", env, seed=1, **tiny(learning_starts=100, pretrain_budget=500))
    model.learn(160)
    assert model.replay_buffer.actions.shape[1:] == (2, 2)
    assert model._n_updates > 0
    buffer = TWMReplayBuffer(10, spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2, 2)), n_envs=2)
    buffer.add(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 2, 2)) * 0.5, np.zeros(2), np.zeros(2), [{}, {}])
    assert buffer.actions.shape == (10 // 2, 2, 4) and np.all(buffer.actions[0] == 0.5)


def test_zoo_sampler_searches_action_bins_for_box_actions_only():
    optuna = pytest.importorskip("optuna")
    from sb3_twm.zoo.hyperparams_opt import sample_twm_params

    base = {"hyperparams": {"policy": "MlpPolicy", "learning_starts": 200, "policy_kwargs": TINY_MLP_POLICY_KWARGS}}
    continuous = sample_twm_params(optuna.trial.FixedTrial(_fixed(action_bins=7)), 2, 1, base)
    assert continuous["policy_kwargs"]["action_bins"] == 7
    discrete_trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    discrete = sample_twm_params(discrete_trial, 0, 1, base)
    assert "action_bins" not in discrete.get("policy_kwargs", {}) and "action_bins" not in discrete_trial.params


def _fixed(**values):
    params = {"learning_rate": 3e-4, "critic_lr": 1e-4, "ent_coef": 0.01, "entropy_threshold": 0.1,
              "latent_entropy_coef": 1.0, "latent_entropy_threshold": 0.1, "discount_threshold": 0.1,
              "buffer_temperature": 20.0, "imagination_horizon": 10, "batch_size": 100, "imagination_batch_size": 400,
              "embed_dim": 256, "num_layers": 10, "actor_critic_width": 32}  # fmt: skip
    return {**params, **values}


# The short learning check for Box actions (the Pendulum check itself is `python -m sb3_twm.benchmark learn-pendulum`,
# ~20 minutes a seed): the Pendulum settings on TargetEnv, where the reward says how far each action dimension is from
# a target that lies on the grid of 5 values. Random actions score about -88 per 20-step episode, the target 0.
# Calibration (2026-12-02, 2 CPU cores): 700 steps (160 training steps) took ~33 s; seeds 0/1 scored -0.8/-20.0 (with
# 1,000 steps 0.0/-20.0).
SMOKE_HYPERPARAMS = {"learning_starts": 300, "train_ratio": 0.4, "policy_kwargs": {"action_bins": 5}}
SMOKE_STEPS = 700
SMOKE_MIN_RETURN = -30.0


@pytest.mark.slow
def test_return_rises_well_above_random():
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_twm.benchmark.learn_pendulum import PENDULUM_HYPERPARAMS
    from sb3_twm.benchmark.learning import make_model, merge_hyperparams

    hyperparams = merge_hyperparams(PENDULUM_HYPERPARAMS, SMOKE_HYPERPARAMS)
    hyperparams.pop("normalize")  # TargetEnv's observations are noise of unit scale
    model = make_model(TargetEnv(), 0, hyperparams, device="cpu")
    model.learn(SMOKE_STEPS)
    returns, _ = evaluate_policy(model, TargetEnv(), n_eval_episodes=5, deterministic=True, return_episode_rewards=True)
    assert np.mean(returns) > SMOKE_MIN_RETURN, f"mean return {np.mean(returns):.1f} over 5 episodes: {returns}"
