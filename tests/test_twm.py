"""The TWM algorithm behind SB3's interface: learn with callbacks, predict, save/load, determinism, bad input."""


import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_twm import TWM, TWMPolicy
from sb3_twm.common.atari import make_twm_atari_env


class CountingCallback(BaseCallback):
    def __init__(self, stop_after: int | None = None):
        super().__init__()
        self.stop_after = stop_after
        self.counts = {"training_start": 0, "rollout_start": 0, "rollout_end": 0, "step": 0, "training_end": 0}

    def _on_training_start(self) -> None:
        self.counts["training_start"] += 1

    def _on_rollout_start(self) -> None:
        self.counts["rollout_start"] += 1

    def _on_rollout_end(self) -> None:
        self.counts["rollout_end"] += 1

    def _on_step(self) -> bool:
        self.counts["step"] += 1
        assert {"new_obs", "rewards", "dones", "infos"} <= set(self.locals)
        return self.stop_after is None or self.counts["step"] < self.stop_after

    def _on_training_end(self) -> None:
        self.counts["training_end"] += 1


class RecordingLogger(BaseCallback):
    """Collects every key the logger writes."""

    def __init__(self):
        super().__init__()
        self.keys: set[str] = set()

    def _on_training_start(self) -> None:
        logger = self.model.logger
        original = logger.dump

        def dump(step=0):
            self.keys.update(logger.name_to_value)
            original(step)

        logger.dump = dump

    def _on_step(self) -> bool:
        return True


def parameters(model: TWM) -> dict[str, th.Tensor]:
    named = {}
    for prefix, module in (("policy", model.policy), ("world_model", model.world_model), ("critic", model.critic)):
        named.update({f"{prefix}.{name}": value.detach().clone() for name, value in module.state_dict().items()})
    return named


def test_learn_calls_callbacks_counts_steps_and_logs(pong_env, tiny_kwargs, tmp_path):
    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    counter, recorder = CountingCallback(), RecordingLogger()
    model.learn(400, callback=CallbackList([counter, recorder]), log_interval=1)
    assert model.num_timesteps == 400
    assert counter.counts["training_start"] == 1 and counter.counts["training_end"] == 1
    assert counter.counts["step"] == 400
    assert counter.counts["rollout_start"] == counter.counts["rollout_end"] == 400
    # 200 steps past the prefill at 0.25 training steps per env step.
    assert model._n_updates == 50
    assert model._pretrained
    model.dump_logs()
    recorder.keys.update(model.logger.name_to_value)
    logged = set(model.logger.name_to_value) | recorder.keys
    for key in ("train/world_model/reconstruction_loss", "train/world_model/reward_loss",
                "train/world_model/latent_cross_entropy", "train/world_model/discount_loss",
                "train/actor_critic/actor_loss", "train/actor_critic/critic_loss", "train/actor_critic/entropy",
                "train/actor_critic/return", "train/imagination/reward"):  # fmt: skip
        assert any(k.endswith(key.split("/", 1)[1]) for k in logged), key
    csv = (tmp_path / "progress.csv").read_text()
    assert "time/fps" in csv and "train/world_model/reconstruction_loss" in csv


def test_callback_can_stop_training(pong_env, tiny_kwargs):
    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    counter = CountingCallback(stop_after=1)
    model.learn(400, callback=counter)
    assert counter.counts["step"] == 1 and model.num_timesteps == 1


def test_episode_statistics_reach_the_logger(tiny_kwargs, tmp_path):
    env = make_twm_atari_env("BreakoutNoFrameskip-v4", seed=0)
    model = TWM("CnnPolicy", env, seed=0, **{**tiny_kwargs, "train_ratio": 0.02})
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(400, log_interval=1)
    assert len(model.ep_info_buffer) > 0
    csv = (tmp_path / "progress.csv").read_text()
    assert "rollout/ep_rew_mean" in csv and "rollout/ep_len_mean" in csv


def test_predict_shapes_single_and_vectorised(pong_env, tiny_kwargs):
    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    obs = pong_env.reset()  # (1, 64, 64, 4) channel-last, as the VecEnv gives it
    for deterministic in (True, False):
        actions, state = model.predict(obs, deterministic=deterministic)
        assert actions.shape == (1,) and actions.dtype.kind == "i" and state is None
        single, _ = model.predict(obs[0], deterministic=deterministic)
        assert np.ndim(single) == 0 and 0 <= int(single) < 6
        batch, _ = model.predict(np.repeat(obs, 5, axis=0), deterministic=deterministic)
        assert batch.shape == (5,)
        channel_first, _ = model.predict(obs.transpose(0, 3, 1, 2), deterministic=deterministic)
        assert channel_first.shape == (1,)
    deterministic_actions = [model.predict(obs, deterministic=True)[0][0] for _ in range(3)]
    assert len(set(deterministic_actions)) == 1


def test_inference_policy_is_encoder_and_actor_only(pong_env):
    model = TWM("CnnPolicy", pong_env, seed=0, learning_starts=5000)
    names = {name.split(".")[0] for name, _ in model.policy.named_parameters()}
    assert names == {"encoder", "actor"}
    policy_params = {id(p) for p in model.policy.parameters()}
    assert not policy_params & {id(p) for p in model.world_model.dynamics_model.parameters()}
    assert not policy_params & {id(p) for p in model.world_model.observation_model.decoder.parameters()}
    assert model.policy.encoder is model.world_model.observation_model.encoder

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(model.policy.actor) == 1_315_846
    assert count(model.critic) == 1_313_281
    assert count(model.policy) == 4_442_838
    assert count(model.world_model) == 19_013_926
    assert count(model.world_model) + count(model.policy.actor) + count(model.critic) == 21_643_053


def test_defaults_equal_the_specification(pong_env):
    model = TWM("CnnPolicy", pong_env)
    assert (model.buffer_size, model.learning_starts, model.batch_size, model.sequence_length) == (100_000, 5000, 100, 16)
    assert (model.gamma, model.gae_lambda, model.buffer_temperature) == (0.99, 0.95, 20.0)
    assert (model.imagination_batch_size, model.imagination_horizon, model.discount_threshold) == (400, 15, 0.1)
    assert (model.ent_coef, model.entropy_threshold, model.target_update_interval) == (0.01, 0.1, 1)
    assert model.critic_target is model.critic
    assert model.steps_per_env_step == pytest.approx(1.3157894736842106)
    assert model.reward_transform == "tanh"
    lrs = [g["lr"] for o in model._optimizers() for g in o.param_groups]
    assert lrs == [1e-4, 1e-4, 1e-4, 1e-5]
    assert [o.defaults["eps"] for o in model._optimizers()] == [1e-5] * 4
    assert [o.defaults["weight_decay"] for o in model._optimizers()] == [1e-6] * 4
    assert (model.world_model.observation_max_grad_norm, model.world_model.dynamics_max_grad_norm) == (100.0, 100.0)
    assert (model.actor_critic.actor_max_grad_norm, model.actor_critic.critic_max_grad_norm) == (1.0, 1.0)
    dynamics = model.world_model.dynamics_model
    assert dynamics.memory_length == 16 and dynamics.memory_tokens == 50
    assert model.world_model.reward_coef == 10.0 and model.world_model.discount_coef == 50.0
    observation_model = model.world_model.observation_model
    assert (observation_model.latent_entropy_coef, observation_model.consistency_coef) == (5.0, 0.01)


def test_save_load_identical_predictions_and_parameters(pong_env, tiny_kwargs, tmp_path):
    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    model.learn(300)
    path = tmp_path / "twm.zip"
    model.save(path)
    loaded = TWM.load(path, env=pong_env)
    before, after = parameters(model), parameters(loaded)
    assert before.keys() == after.keys()
    assert all(th.equal(before[k], after[k]) for k in before)
    for original, restored in zip(model._optimizers(), loaded._optimizers()):
        assert original.state_dict()["state"].keys() == restored.state_dict()["state"].keys()
    obs = pong_env.reset()
    batch = np.repeat(obs, 4, axis=0)
    assert np.array_equal(model.predict(batch, deterministic=True)[0], loaded.predict(batch, deterministic=True)[0])
    assert loaded._pretrained and loaded.num_timesteps == 300
    # No integer tensors in the policy (SB3's save/load tests randomise every entry).
    assert all(t.is_floating_point() for t in loaded.policy.state_dict().values())
    # Continue learning: with its dataset, training goes on at once.
    model.save_replay_buffer(tmp_path / "dataset.pkl")
    loaded.load_replay_buffer(tmp_path / "dataset.pkl")
    loaded.learn(100, reset_num_timesteps=False)
    assert loaded.num_timesteps == 400
    assert loaded._n_updates == model._n_updates + 25
    # Without it, training waits (with a warning) until a batch can be drawn from fresh steps.
    fresh = TWM.load(path, env=pong_env)
    with pytest.warns(UserWarning, match="load_replay_buffer"):
        fresh.learn(6, reset_num_timesteps=False)
    assert fresh._n_updates == model._n_updates


def test_policy_save_and_load(pong_env, tiny_kwargs, tmp_path):
    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    model.policy.save(tmp_path / "policy.pth")
    policy = TWMPolicy.load(tmp_path / "policy.pth")
    obs = pong_env.reset()
    assert np.array_equal(policy.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def test_replay_buffer_save_and_load(pong_env, tiny_kwargs, tmp_path):
    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    model.learn(250)
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    other = TWM("CnnPolicy", pong_env, seed=1, **tiny_kwargs)
    other.load_replay_buffer(tmp_path / "buffer.pkl")
    assert other.replay_buffer.size() == 250
    assert np.array_equal(other.replay_buffer.observations[:250], model.replay_buffer.observations[:250])


def test_seeded_runs_are_identical(tiny_kwargs):
    runs = []
    for _ in range(2):
        env = make_twm_atari_env("PongNoFrameskip-v4", seed=0)
        model = TWM("CnnPolicy", env, seed=3, **tiny_kwargs)
        model.learn(280)
        runs.append(parameters(model))
        env.close()
    assert all(th.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_multiple_envs(tiny_kwargs):
    env = make_twm_atari_env("PongNoFrameskip-v4", n_envs=2, seed=0)
    model = TWM("CnnPolicy", env, seed=0, **tiny_kwargs)
    model.learn(400)
    assert model.num_timesteps == 400
    assert model.replay_buffer.n_envs == 2 and model.replay_buffer.size() == 200
    assert model._n_updates == 50


def test_progress_bar(pong_env, tiny_kwargs):
    model = TWM("CnnPolicy", pong_env, seed=0, **{**tiny_kwargs, "learning_starts": 300})
    model.learn(100, progress_bar=True)
    assert model.num_timesteps == 100


class ImageEnv(gym.Env):
    """A tiny image env of a given observation shape (channel-last or channel-first)."""

    def __init__(self, shape, action_space=None):
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.action_space = action_space or spaces.Discrete(3)
        self._steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._steps = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self._steps += 1
        return self.observation_space.sample(), float(action == 1), self._steps >= 20, False, {}


@pytest.mark.parametrize("shape", [(84, 84, 3), (1, 64, 64)])
def test_other_image_shapes(shape, tiny_kwargs):
    model = TWM("CnnPolicy", ImageEnv(shape), seed=0, **{**tiny_kwargs, "pretrain_budget": 200})
    model.learn(260)
    assert model.observation_space.shape[0] == min(shape)  # channel-first after SB3's VecTransposeImage
    decoder = model.world_model.observation_model.decoder
    assert decoder(th.zeros(1, model.policy.latent_dim)).shape[1:] == model.observation_space.shape


@pytest.mark.parametrize(
    "env, kwargs, message",
    [
        (ImageEnv((64, 64, 4), spaces.Box(-np.inf, np.inf, (2,))), {}, "finite bounds on Box actions"),
        (ImageEnv((64, 64, 4), spaces.MultiDiscrete([2, 3])), {}, "Discrete and Box action spaces"),
        (ImageEnv((32, 32, 4)), {}, "at least 46x46"),
        ("CartPole-v1", {}, "CnnPolicy needs uint8 image observations"),
        (ImageEnv((64, 64, 4)), {"batch_size": 0}, "batch_size must be a positive integer"),
        (ImageEnv((64, 64, 4)), {"learning_starts": 10}, "set learning_starts >= "),
        (ImageEnv((64, 64, 4)), {"imagination_batch_size": 10_000}, "imagination_batch_size"),
        (ImageEnv((64, 64, 4)), {"gamma": 1.5}, "gamma must be in"),
        (ImageEnv((64, 64, 4)), {"reward_transform": "log"}, "reward_transform must be one of"),
        (ImageEnv((64, 64, 4)), {"reward_scale": 0.0}, "reward_scale must be a finite number > 0"),
        (ImageEnv((64, 64, 4)), {"world_model_kwargs": {"layers": 3}}, "Unknown world_model_kwargs"),
        (ImageEnv((64, 64, 4)), {"buffer_temperature": 0.0}, "buffer_temperature must be > 0"),
        (ImageEnv((64, 64, 4)), {"replay_buffer_kwargs": {"termination_weight": 0.0}}, "termination_weight must be"),
        (ImageEnv((64, 64, 4)), {"train_ratio": -1.0}, "train_ratio must be > 0"),
        (ImageEnv((64, 64, 4)), {"critic_optimizer_kwargs": {"lr": -1.0}}, "lr must be >= 0"),
        (ImageEnv((64, 64, 4)), {"critic_optimizer_kwargs": {"momentum": 0.9}}, "Unknown optimizer settings"),
    ],
)
def test_invalid_input_is_refused_with_a_clear_message(env, kwargs, message, tiny_kwargs):
    with pytest.raises(ValueError, match=message):
        TWM("CnnPolicy", env, **{**tiny_kwargs, **kwargs})


def test_termination_weight_reaches_the_dataset_and_survives_save_load(tiny_kwargs, tmp_path):
    kwargs = {**tiny_kwargs, "policy_kwargs": {"latent_categoricals": 4, "latent_classes": 4}}
    model = TWM("MlpPolicy", "CartPole-v1", replay_buffer_kwargs={"termination_weight": 5.0}, **kwargs)
    assert model.replay_buffer.termination_weight == 5.0
    model.save(tmp_path / "model.zip")
    assert TWM.load(tmp_path / "model.zip").replay_buffer.termination_weight == 5.0
    assert TWM("MlpPolicy", "CartPole-v1", **kwargs).replay_buffer.termination_weight == 1.0


def test_dict_observations_are_refused(tiny_kwargs):
    dict_env = ImageEnv((64, 64, 4))
    dict_env.observation_space = spaces.Dict({"image": spaces.Box(0, 255, (64, 64, 4), np.uint8)})
    with pytest.raises(ValueError, match="FlattenObservation"):
        TWM("CnnPolicy", dict_env, **tiny_kwargs)
    with pytest.raises(ValueError, match="FlattenObservation"):
        TWM("MlpPolicy", DummyVecEnv([lambda: dict_env]), **tiny_kwargs)


def test_mixed_precision_is_off_on_cpu_by_default_and_trains_when_asked(pong_env, tiny_kwargs):
    assert not TWM("CnnPolicy", pong_env, **tiny_kwargs)._autocast_enabled
    model = TWM("CnnPolicy", pong_env, seed=0, mixed_precision=True, **tiny_kwargs)
    assert model._autocast_enabled
    # Autocast really runs: the dynamics model's and the actor's layers compute in bf16, in pretraining and in the
    # training steps after it (model._pretrained tells which).
    dtypes: dict[tuple[str, bool], set] = {(part, phase): set() for part in ("dynamics", "actor") for phase in (0, 1)}

    def recorder(part: str):
        return lambda module, inputs, output: dtypes[part, model._pretrained].add(output.dtype)

    model.world_model.dynamics_model.z_head[-1].register_forward_hook(recorder("dynamics"))
    model.policy.actor[-1].register_forward_hook(recorder("actor"))
    model.learn(300)
    assert all(th.bfloat16 in found for found in dtypes.values()), dtypes
    assert model._n_updates == 25
    assert all(th.isfinite(p).all() and p.dtype == th.float32 for p in model.world_model.parameters())
    assert all(th.isfinite(p).all() for p in model.critic.parameters())


def test_replay_buffer_passes_sb3s_save_load_checks(tiny_kwargs, tmp_path):
    """SB3's own ``test_save_load_replay_buffer`` (stable-baselines3 2.9.2, tests/test_save_load.py), on TWM."""
    from copy import deepcopy

    kwargs = {**tiny_kwargs, "learning_starts": 100, "buffer_size": 1000}
    kwargs["policy_kwargs"] = dict(net_arch=[64], latent_categoricals=4, latent_classes=4)
    model = TWM("MlpPolicy", "CartPole-v1", **kwargs)
    model.learn(150)
    old_replay_buffer = deepcopy(model.replay_buffer)
    model.save_replay_buffer(tmp_path / "replay_buffer.pkl")
    model.replay_buffer = None
    for device in ["cpu", "cuda"]:
        model.device = th.device(device)
        model.load_replay_buffer(tmp_path / "replay_buffer.pkl")
        assert model.replay_buffer.device.type == model.device.type
    for name in ("observations", "actions", "rewards", "dones", "timeouts"):
        assert np.allclose(getattr(old_replay_buffer, name), getattr(model.replay_buffer, name)), name
    assert old_replay_buffer.dones.sum() > 0  # CartPole's episodes ended in 150 random steps
    infos = [[{"TimeLimit.truncated": truncated}] for truncated in old_replay_buffer.timeouts]
    model.replay_buffer.extend(
        old_replay_buffer.observations,
        old_replay_buffer.observations,
        old_replay_buffer.actions,
        old_replay_buffer.rewards,
        old_replay_buffer.dones,
        infos,
    )


def test_world_model_train_steps_sets_the_updates_per_training_step(tiny_kwargs, monkeypatch):
    model = TWM("CnnPolicy", make_twm_atari_env("PongNoFrameskip-v4", seed=0), world_model_train_steps=3, **tiny_kwargs)
    calls = {"world_model": 0, "actor_critic": 0}
    world_model_step, actor_critic_update = model.world_model.train_step, model.actor_critic.update

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    model.learn(200)  # the prefill: nothing trains yet
    monkeypatch.setattr(model.world_model, "train_step", counting("world_model", world_model_step))
    monkeypatch.setattr(model.actor_critic, "update", counting("actor_critic", actor_critic_update))
    model.learn(40, reset_num_timesteps=False)
    assert model._n_updates == 10 and calls == {"world_model": 30, "actor_critic": 10}


@pytest.mark.parametrize("shares", [(0.6, 0.3, 0.7), (0.2, 0.0, 0.5)])
def test_pretraining_spends_each_share_of_its_budget(tiny_kwargs, shares, tmp_path):
    observation, dynamics, actor_critic = shares
    kwargs = dict(tiny_kwargs, pretrain_observation_share=observation, pretrain_dynamics_share=dynamics,
                  pretrain_actor_critic_share=actor_critic, train_ratio=0.01)  # fmt: skip
    model = TWM("CnnPolicy", make_twm_atari_env("PongNoFrameskip-v4", seed=0), seed=0, **kwargs)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    # The sampled steps of every pretraining batch of the dynamics model and the actor-critic.
    sizes: dict[str, list[int]] = {"dynamics_model": [], "actor_critic": []}
    dynamics_step, actor_critic_update = model.world_model.pretrain_dynamics_step, model.actor_critic.pretrain_update

    def recorded_dynamics_step(logits, actions, *args):
        sizes["dynamics_model"].append(actions.shape[0] * (actions.shape[1] - 1))
        return dynamics_step(logits, actions, *args)

    def recorded_actor_critic_update(z, rewards, discounts):
        sizes["actor_critic"].append(rewards.numel())
        return actor_critic_update(z, rewards, discounts)

    model.world_model.pretrain_dynamics_step = recorded_dynamics_step
    model.actor_critic.pretrain_update = recorded_actor_critic_update
    model.learn(201)
    logged = model.logger.name_to_value
    budget = kwargs["pretrain_budget"]
    # Observation model: passes over the 200 frames in batches of 4 x 8 = 32 (the last one of 8), until the share
    # is spent (the last batch may overdraw it).
    spent, updates = 0, 0
    while spent < observation * budget:
        for frames in [32] * 6 + [8]:
            spent, updates = spent + frames, updates + 1
            if spent >= observation * budget:
                break
    assert logged["pretrain/observation_model_updates"] == updates
    # Dynamics model and actor-critic (batches of at most 4 x 8 and 16 x 5 sampled steps): each spends its share and
    # stops there (only the last batch overdraws it).
    for key, share in (("dynamics_model", dynamics), ("actor_critic", actor_critic)):
        spent = sizes[key]
        assert logged[f"pretrain/{key}_updates"] == len(spent)
        if share == 0:
            assert not spent
        else:
            assert sum(spent[:-1]) < share * budget <= sum(spent), (key, len(spent), sum(spent), share * budget)
            assert max(spent) <= {"dynamics_model": 4 * 8, "actor_critic": 16 * 5}[key]


def test_non_finite_updates_are_applied_when_the_check_is_off(tiny_kwargs, monkeypatch, recwarn):
    model = TWM("CnnPolicy", make_twm_atari_env("PongNoFrameskip-v4", seed=0), seed=0, skip_non_finite_updates=False,
                **tiny_kwargs)  # fmt: skip
    model.learn(204)
    to_world_model_batch = model.replay_buffer.to_world_model_batch
    monkeypatch.setattr(
        model.replay_buffer,
        "to_world_model_batch",
        lambda batch, env=None: to_world_model_batch(batch, env)._replace(rewards=th.full((4, 9), float("nan"))),
    )
    with pytest.raises(RuntimeError, match="probability tensor contains"):
        # The NaN update is applied, and imagination then samples from NaN predictions.
        model.train(gradient_steps=4, batch_size=model.batch_size)
    assert model._skipped_updates == 0 and not [w for w in recwarn if "skipped an update" in str(w.message)]
    assert not all(th.isfinite(p).all() for p in model.world_model.dynamics_model.parameters())


def test_metrics_are_running_sums_of_bounded_size():
    from stable_baselines3.common.logger import Logger

    from sb3_twm.common.metrics import Metrics

    metrics = Metrics()
    values = th.rand(5000, generator=th.Generator().manual_seed(0))
    for value in values:
        metrics.record("world_model", {"loss": value})
    assert len(metrics._sums) == 1 and metrics._sums["world_model/loss"].numel() == 1  # not 5,000 tensors
    logger = Logger(folder=None, output_formats=[])
    metrics.write(logger)
    assert logger.name_to_value["train/world_model/loss"] == pytest.approx(values.double().mean().item(), rel=1e-12)
    assert metrics._sums == {}
