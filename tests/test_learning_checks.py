"""The learning checks' harness (sb3_twm/benchmark/learning.py): envs as the zoo makes them, env steps, the verdict."""

import copy
import sys
from typing import Any

import numpy as np
import pytest
from configurations import TINY_MLP_POLICY_KWARGS, TINY_SCHEDULE_KWARGS
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecNormalize

from sb3_twm.benchmark.learn_cartpole import CARTPOLE_HYPERPARAMS, TASK
from sb3_twm.benchmark.learning import env_steps, format_table, judge, make_env, make_eval_env, make_model

pytest.importorskip("rl_zoo3")

FRAME_SKIP: dict[str, Any] = {
    "policy": "MlpPolicy",
    **copy.deepcopy(TINY_SCHEDULE_KWARGS),
    "policy_kwargs": copy.deepcopy(TINY_MLP_POLICY_KWARGS),
    "env_wrapper": [{"rl_zoo3.wrappers.FrameSkip": {"skip": 2}}],
    "normalize": {"norm_obs": True, "norm_reward": False},
}


def test_env_wrapper_repeats_each_action_and_env_steps_count_the_envs_own():
    # Random steps only (the prefill is longer than the run): what is measured is the env, not learning.
    model = make_model("CartPole-v1", 0, {**FRAME_SKIP, "learning_starts": 1000})
    with pytest.warns(UserWarning, match="only collects random-action steps"):
        model.learn(120)
    env = model.get_env()
    assert isinstance(env, VecNormalize)
    # Two CartPole steps per agent step, one fewer when an episode ends on the first of them (~11 agent steps each).
    assert 1.7 * 120 < env_steps(env) <= 2 * 120
    # Monitor sits under the frame skip: returns and lengths are CartPole's own (1 per env step).
    (episode, *_) = model.ep_info_buffer
    assert episode["r"] == episode["l"] > 1
    eval_env = make_eval_env("CartPole-v1", 1, FRAME_SKIP)
    assert type(eval_env.venv.envs[0]).__name__ == "FrameSkip"
    assert isinstance(eval_env.venv.envs[0].env, Monitor)


@pytest.mark.parametrize("dropped", [("env_wrapper",), ("env_wrapper", "normalize")])
def test_without_env_wrapper_env_steps_are_the_agents(dropped):
    # Without normalize either, TWM makes the env from its id (SB3's Monitor included).
    settings = {key: value for key, value in FRAME_SKIP.items() if key not in dropped}
    model = make_model("CartPole-v1", 0, {**settings, "learning_starts": 1000})
    with pytest.warns(UserWarning, match="only collects random-action steps"):
        model.learn(50)
    assert env_steps(model.get_env()) == 50


def test_cartpole_check_repeats_actions_within_its_env_step_budget():
    skip = CARTPOLE_HYPERPARAMS["env_wrapper"][0]["rl_zoo3.wrappers.FrameSkip"]["skip"]
    assert skip * CARTPOLE_HYPERPARAMS["n_timesteps"] == 20_000
    # Its prefill and training schedule per env step are those of the settings without the frame skip.
    assert skip * CARTPOLE_HYPERPARAMS["learning_starts"] == 1000
    assert CARTPOLE_HYPERPARAMS["train_ratio"] / skip == 0.5
    assert TASK.hold_threshold == 475.0 and TASK.min_successes == 3 and TASK.eval_freq * skip == 1000


def _result(returns: list[float], seconds: float = 100.0, threshold: float = 400.0) -> dict[str, Any]:
    reached = [1000 * (index + 1) for index, value in enumerate(returns) if value >= threshold]
    return {
        "first_step_at_threshold": reached[0] if reached else None,
        "last_five_mean_return": float(np.mean(returns[-5:])),
        "training_seconds": seconds,
    }


def test_a_seed_that_reaches_the_threshold_and_falls_back_does_not_hold():
    fell_back = _result([100, 500, 500, 200, 180, 170, 190, 160])
    assert judge(fell_back, None, 20) == {"within_time": True, "holds": True, "success": True}
    assert judge(fell_back, 475.0, 20) == {"within_time": True, "holds": False, "success": False}
    held = _result([100, 500, 480, 490, 500, 500, 500, 500])
    assert judge(held, 475.0, 20)["success"]
    assert not judge(held, 475.0, 1)["success"]  # 100 s of training against a 1-minute limit
    assert not judge(_result([100, 300, 350]), None, 20)["success"]


def test_the_table_shows_the_env_steps_of_each_evaluation():
    def result(seed: int, env_steps: list[int]) -> dict[str, Any]:
        return {
            "seed": seed,
            "steps": [0, 500, 1000],
            "env_steps": env_steps,
            "deterministic_mean_return": [10.0, 200.0, 500.0],
            "mean_return": [20.0, 180.0, 490.0],
            "last_five_mean_return": 236.7,
            "training_seconds": 50.0,
            "evaluation_seconds": 5.0,
            "total_seconds": 55.0,
            "first_step_at_threshold": env_steps[-1],
        }

    lines = format_table([result(0, [0, 990, 1996]), result(1, [0, 985, 1990])]).splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[:2]] == ["step", "env steps"]
    rows = [[cell.strip() for cell in line.split("|")] for line in lines[2:5]]
    assert [row[:2] for row in rows] == [["0", "0"], ["500", "985-990"], ["1000", "1990-1996"]]
    assert rows[2][2:] == ["500.0 / 490.0", "500.0 / 490.0"]


def test_env_wrapper_without_the_zoo_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rl_zoo3.utils", None)  # as if rl-zoo3 were not installed
    with pytest.raises(ImportError, match=r"pip install 'sb3-twm\[zoo\]'"):
        make_env("CartPole-v1", FRAME_SKIP)
    # Without env_wrapper the zoo is not needed.
    assert make_env("CartPole-v1", {}).num_envs == 1
