"""The learning checks' diagnostics (sb3_twm/benchmark/diagnostics.py): what the world model and critic make of play."""

import copy
import json
from typing import Any

import numpy as np
import pytest
import torch as th
from configurations import TINY_MLP_POLICY_KWARGS, TINY_SCHEDULE_KWARGS

from sb3_twm.benchmark import diagnostics
from sb3_twm.benchmark.learning import make_eval_env, make_model, run_seed
from sb3_twm.common.metrics import Metrics

ENV_ID = "CartPole-v1"
TINY_CARTPOLE: dict[str, Any] = {
    "policy": "MlpPolicy",
    **copy.deepcopy(TINY_SCHEDULE_KWARGS),
    "policy_kwargs": copy.deepcopy(TINY_MLP_POLICY_KWARGS),
    "normalize": {"norm_obs": True, "norm_reward": False},
}


def test_termination_cause() -> None:
    assert diagnostics.termination_cause(ENV_ID, np.array([2.41, 0.3, 0.05, 0.0])) == "cart off track"
    assert diagnostics.termination_cause(ENV_ID, np.array([-0.5, 0.0, -0.22, 0.0])) == "pole fell"
    assert diagnostics.termination_cause("Acrobot-v1", np.zeros(6)) == "terminated"


@pytest.fixture(scope="module")
def trained() -> Any:
    model = make_model(ENV_ID, 0, TINY_CARTPOLE, device="cpu")
    model.learn(300)
    return model


def test_played_episodes_are_original_observations(trained: Any) -> None:
    eval_env = make_eval_env(ENV_ID, 5, TINY_CARTPOLE)
    eval_env.obs_rms = copy.deepcopy(trained.get_vec_normalize_env().obs_rms)
    episodes = diagnostics.play_episodes(trained, eval_env, 3)
    assert len(episodes) == 3
    for episode in episodes:
        length = len(episode["rewards"])
        assert episode["observations"].shape == (length, 4) and episode["actions"].shape == (length,)
        np.testing.assert_array_equal(episode["rewards"], np.ones(length, dtype=np.float32))
        # Unnormalised: every state the episode went through is within CartPole's limits, the terminal one beyond.
        assert np.all(np.abs(episode["observations"][:, 0]) <= diagnostics.CARTPOLE_X_LIMIT)
        assert np.all(np.abs(episode["observations"][:, 2]) <= diagnostics.CARTPOLE_ANGLE_LIMIT)
        assert episode["terminated"] == (length < 500)
        if episode["terminated"]:
            terminal = episode["terminal_observation"]
            assert abs(terminal[0]) > diagnostics.CARTPOLE_X_LIMIT or abs(terminal[2]) > diagnostics.CARTPOLE_ANGLE_LIMIT


def test_diagnose_scores_episodes_and_dataset(trained: Any) -> None:
    eval_env = make_eval_env(ENV_ID, 5, TINY_CARTPOLE)
    eval_env.obs_rms = copy.deepcopy(trained.get_vec_normalize_env().obs_rms)
    visits = trained.replay_buffer.visits.copy()
    result = diagnostics.diagnose(trained, eval_env, ENV_ID, 3)
    assert sum(result["causes"].values()) == 3
    assert result["causes"].get("truncated", 0) == sum(length == 500 for length in result["episode_lengths"])
    for key in ("episode_terminal_probability", "episode_max_false_termination", "latent_entropy", "actor_entropy"):
        assert 0.0 <= result[key] <= 1.0, key
    assert tuple(result["reconstruction_error"]) == diagnostics.CARTPOLE_FEATURES
    assert all(value >= 0.0 for value in result["reconstruction_error"].values())
    assert -1.0 <= result["value_return_correlation"] <= 1.0
    open_loop = result["open_loop_error"]
    if max(result["episode_lengths"]) >= trained.imagination_horizon + 2:
        assert set(open_loop) == {"model", "most likely latents", "no change", "decoder", "model vs latent",
                                  "latent no change"}  # fmt: skip
        assert all(tuple(errors) == diagnostics.CARTPOLE_FEATURES for errors in open_loop.values())
    else:
        assert open_loop is None
    dataset = result["dataset"]
    assert sum(dataset["counts"].values()) == int(trained.replay_buffer.terminated.sum()) > 0
    assert set(dataset["terminal_probability"]) <= set(dataset["counts"])
    assert all(0.0 <= value <= 1.0 for value in dataset["terminal_probability"].values())
    # Diagnosing changes nothing of the run: the dataset's visit counts and the networks' modes are as they were.
    np.testing.assert_array_equal(trained.replay_buffer.visits, visits)
    assert trained.world_model.dynamics_model.training == trained.world_model.training


def test_run_seed_records_and_plots_diagnostics(tmp_path: Any) -> None:
    records = tmp_path / "seed-0-evaluations.jsonl"
    result = run_seed(0, 300, 150, ENV_ID, TINY_CARTPOLE, threshold=400.0, n_eval_episodes=2, verbose=0,
                      diagnose_episodes=2, records_path=str(records))  # fmt: skip
    assert len(result["diagnostics"]) == len(result["steps"]) == 3
    # Training metrics since the logs were last written: the imagined returns the plot shows, once training ran.
    assert "actor_critic/return" in result["diagnostics"][-1]["training"]
    # The records written as the run went are the run's curves.
    (read,) = diagnostics.results_from_records([str(records)])
    assert read["seed"] == 0 and read["steps"] == result["steps"] == [0, 150, 300]
    assert read["deterministic_mean_return"] == result["deterministic_mean_return"]
    assert read["diagnostics"] == result["diagnostics"]
    assert diagnostics.main([str(tmp_path)]) == 0
    assert (tmp_path / "diagnostics.png").stat().st_size > 10_000


def test_records_from_before_env_steps_were_counted_read_as_agent_steps(tmp_path: Any) -> None:
    # Runs without a frame skip wrote only the agent's step: the env's is the same.
    record = {"step": 1000, "deterministic_mean_return": 20.0, "mean_return": 18.0, "diagnostics": {"causes": {}}}
    path = tmp_path / "seed-3-evaluations.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "step": 2000, "env_steps": 3990}) + "\n")
    (read,) = diagnostics.results_from_records([str(path)])
    assert read["seed"] == 3 and read["steps"] == [1000, 2000] and read["env_steps"] == [1000, 3990]


def test_metric_means() -> None:
    metrics = Metrics()
    for value in (1.0, 2.0, 6.0):
        metrics.record("actor_critic", {"return": th.tensor(value)})
    assert metrics.means() == {"actor_critic/return": 3.0}


def test_diagnose_skips_the_dataset_once_it_has_wrapped_around() -> None:
    model = make_model(ENV_ID, 1, {**TINY_CARTPOLE, "buffer_size": 250}, device="cpu")
    model.learn(300)
    assert model.replay_buffer.full
    eval_env = make_eval_env(ENV_ID, 5, TINY_CARTPOLE)
    eval_env.obs_rms = copy.deepcopy(model.get_vec_normalize_env().obs_rms)
    result = diagnostics.diagnose(model, eval_env, ENV_ID, 1)
    assert result["dataset"] == diagnostics.EMPTY_DATASET_DIAGNOSTICS
    assert sum(result["causes"].values()) == 1
    with pytest.raises(ValueError, match="has not wrapped around"):
        diagnostics.dataset_diagnostics(model, ENV_ID)


def test_reconstruction_errors_are_in_observation_units(trained: Any) -> None:
    # Feature errors of 1 normalised unit are one standard deviation of each feature in the observation's units.
    errors = np.array([[1.0, 2.0, 0.0, 1.0], [3.0, 0.0, 2.0, 1.0]])
    vec_normalize = trained.get_vec_normalize_env()
    scale = np.sqrt(vec_normalize.obs_rms.var + vec_normalize.epsilon)
    by_feature = diagnostics.errors_by_feature(trained, errors, ENV_ID)
    assert tuple(by_feature) == diagnostics.CARTPOLE_FEATURES
    np.testing.assert_allclose(list(by_feature.values()), errors.mean(0) * scale)
    assert list(diagnostics.errors_by_feature(trained, errors, "MyCartLikeEnv-v0")) == [
        f"feature {index}" for index in range(4)
    ]


def test_open_loop_errors_follow_the_played_actions(trained: Any) -> None:
    eval_env = make_eval_env(ENV_ID, 5, TINY_CARTPOLE)
    eval_env.obs_rms = copy.deepcopy(trained.get_vec_normalize_env().obs_rms)
    (episode,) = diagnostics.play_episodes(trained, eval_env, 1)
    horizon = trained.imagination_horizon
    length = horizon + 12
    episode = {**episode, "observations": np.repeat(episode["observations"][:1], length, 0),
               "actions": np.zeros(length, dtype=np.int64), "rewards": np.ones(length, dtype=np.float32)}  # fmt: skip
    state = th.get_rng_state()
    errors = diagnostics.open_loop_errors(trained, [episode], ENV_ID)
    # It draws from its own generator, and the same episodes give the same errors.
    assert th.equal(th.get_rng_state(), state)
    assert errors == diagnostics.open_loop_errors(trained, [episode], ENV_ID)
    # A state that never changes: predicting no change is exact, for the states and for their latents.
    assert set(errors["no change"].values()) == set(errors["latent no change"].values()) == {0.0}
    # The decoder's error is the reconstruction error of that state.
    scores = diagnostics._score_sequences(trained, episode["observations"][None, :2], episode["actions"][None, :2],
                                          episode["rewards"][None, :2])  # fmt: skip
    reconstruction = diagnostics.errors_by_feature(trained, scores["reconstruction_error"][0, :1].numpy(), ENV_ID)
    np.testing.assert_allclose(list(errors["decoder"].values()), list(reconstruction.values()), rtol=1e-5)
    other_actions = {**episode, "actions": np.ones(length, dtype=np.int64)}
    assert diagnostics.open_loop_errors(trained, [other_actions], ENV_ID)["model"] != errors["model"]
    short = {key: value[: horizon + 1] for key, value in episode.items() if key in ("observations", "actions", "rewards")}
    assert diagnostics.open_loop_errors(trained, [short], ENV_ID) is None
