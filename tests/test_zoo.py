"""
rl-zoo3 integration: ``--algo twm`` in ``python -m rl_zoo3.train|enjoy|record_video`` through the start-up hook, the
hook-free ``python -m sb3_twm.zoo``, the packaged ``twm.yml``, and the Optuna sampler/converter.

The command-line tests run the zoo's literal commands in subprocesses (from a temporary directory) with the tiny
configuration of ``tests/configurations.py``; they need the package installed (``pip install -e ".[zoo]"``) so that
the hook is in site-packages.
"""

import argparse
import ast
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("rl_zoo3")
optuna = pytest.importorskip("optuna")

from configurations import TINY_TWM_KWARGS  # noqa: E402

from sb3_twm import TWM, zoo  # noqa: E402
from sb3_twm.zoo.hyperparams_opt import convert_twm_params, sample_twm_params  # noqa: E402

PONG = "PongNoFrameskip-v4"
HOOK_FILE = Path(__file__).resolve().parent.parent / "_sb3_twm_zoo.py"
COMMAND_TIMEOUT = 300


def twm_yml() -> dict[str, Any]:
    with open(zoo.default_config_path()) as file:
        return yaml.safe_load(file)


def tiny_params() -> list[str]:
    """The tiny test configuration as ``-params key:value ...`` arguments (values are Python literals)."""
    return ["-params", *(f"{key}:{value!r}" for key, value in TINY_TWM_KWARGS.items())]


def run(
    args: list[str], cwd: Path, no_hook: bool = False, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """
    ``python -m <args>`` (or ``python -c <code>``) in ``cwd``, with the hook on unless ``no_hook``, and one torch
    thread (far faster than two on a loaded 2-core machine).
    """
    env = {key: value for key, value in os.environ.items() if key != "SB3_TWM_NO_ZOO_HOOK"}
    env.update(OMP_NUM_THREADS="1", **(extra_env or {}))
    if no_hook:
        env["SB3_TWM_NO_ZOO_HOOK"] = "1"
    command = [sys.executable, *(args if args[0] == "-c" else ["-m", *args])]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def check(result: subprocess.CompletedProcess) -> str:
    """Assert exit code 0 (showing the output's end otherwise); return stdout."""
    message = f"exit code {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    assert result.returncode == 0, message
    return result.stdout


def algo_choices(help_text: str) -> list[str]:
    """The ``--algo {a2c,...}`` choices of a zoo script's ``--help``."""
    return help_text.split("--algo {", 1)[1].split("}", 1)[0].split(",")


# ----------------------------------------------------------------------------------------------------- the hook


def test_hook_module_is_stdlib_only_and_nothing_heavy_loads_at_start(tmp_path):
    tree = ast.parse(HOOK_FILE.read_text())
    top_level = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top_level |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert top_level <= set(sys.stdlib_module_names), top_level
    assert (HOOK_FILE.parent / "_sb3_twm_zoo.start").read_text().split() == ["_sb3_twm_zoo:install"]

    packages = ("_sb3_twm_zoo", "sb3_twm", "torch", "rl_zoo3")
    out = check(run(["-c", f"import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in {packages}))"], tmp_path))
    assert out.strip() == "['_sb3_twm_zoo']", "the installed hook must load only itself at start-up (is sb3-twm installed?)"


def test_train_help_lists_twm(tmp_path):
    out = check(run(["rl_zoo3.train", "--help"], tmp_path))
    assert "twm" in algo_choices(out)


def test_opt_out_env_var(tmp_path):
    result = run(["rl_zoo3.train", "--algo", "twm", "--env", "CartPole-v1"], tmp_path, no_hook=True)
    assert result.returncode == 2
    assert "invalid choice: 'twm'" in result.stderr
    assert not (tmp_path / "logs").exists()
    # The explicit entry point works without the hook.
    out = check(run(["sb3_twm.zoo", "train", "--help"], tmp_path, no_hook=True))
    assert "twm" in algo_choices(out)


def test_broken_plugin_only_warns(tmp_path):
    broken = tmp_path / "broken" / "sb3_twm"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('simulated broken sb3_twm')\n")
    result = run(["rl_zoo3.train", "--help"], tmp_path, extra_env={"PYTHONPATH": str(broken.parent)})
    out = check(result)
    assert "twm" not in algo_choices(out)
    assert "sb3-twm could not register TWM with rl_zoo3.utils" in result.stderr
    assert "simulated broken sb3_twm" in result.stderr


def test_register_all_is_additive_and_idempotent():
    from rl_zoo3 import exp_manager, hyperparams_opt, utils

    zoo.register_all()
    zoo.register_all()
    assert utils.ALGOS["twm"] is TWM
    assert hyperparams_opt.HYPERPARAMS_SAMPLER["twm"] is sample_twm_params
    assert hyperparams_opt.HYPERPARAMS_CONVERTER["twm"] is convert_twm_params
    assert exp_manager.ExperimentManager._sb3_twm_patched
    # setdefault: an entry that is already there (e.g. a future upstream twm) is kept.
    sentinel = object()
    utils.ALGOS["twm"] = sentinel
    try:
        zoo.register_algo(utils)
        assert utils.ALGOS["twm"] is sentinel
    finally:
        utils.ALGOS["twm"] = TWM


def test_default_config_only_without_conf_file(tmp_path):
    from rl_zoo3 import exp_manager

    zoo.register_all()
    manager = exp_manager.ExperimentManager(argparse.Namespace(), "twm", PONG, str(tmp_path))
    assert Path(manager.config) == zoo.default_config_path()
    assert zoo.default_config_path().is_file()
    user = tmp_path / "mine.yml"
    manager = exp_manager.ExperimentManager(argparse.Namespace(), "twm", PONG, str(tmp_path), config=str(user))
    assert manager.config == str(user)
    manager = exp_manager.ExperimentManager(argparse.Namespace(), "ppo", PONG, str(tmp_path))  # other algos: untouched
    assert Path(manager.config).parent.parent in (Path(exp_manager.__file__).parent, Path(exp_manager.__file__).parent.parent)


def test_checkpoint_callbacks_save_the_dataset_for_twm_only(tmp_path):
    from rl_zoo3 import exp_manager
    from stable_baselines3.common.callbacks import CheckpointCallback

    zoo.register_all()
    for algo, expected in (("twm", True), ("dqn", False)):
        manager = exp_manager.ExperimentManager(
            argparse.Namespace(), algo, PONG, str(tmp_path), eval_freq=-1, save_freq=10, save_replay_buffer=False
        )
        manager.create_callbacks()
        (callback,) = [callback for callback in manager.callbacks if isinstance(callback, CheckpointCallback)]
        assert callback.save_replay_buffer is expected


def test_learn_continues_the_run_only_when_resuming_twm(tmp_path):
    from rl_zoo3 import exp_manager

    zoo.register_all()

    class FakeModel:
        def __init__(self):
            self.calls, self.env = [], argparse.Namespace(close=lambda: None)

        def learn(self, total_timesteps, reset_num_timesteps=True, **kwargs):
            self.calls.append((total_timesteps, reset_num_timesteps))

    agent = tmp_path / "agent.zip"
    agent.write_bytes(b"")
    for algo, trained_agent, expected in (("twm", agent, False), ("twm", "", True), ("dqn", agent, True)):
        manager = exp_manager.ExperimentManager(
            argparse.Namespace(), algo, PONG, str(tmp_path), n_timesteps=7, eval_freq=-1, trained_agent=str(trained_agent)
        )
        model = FakeModel()
        manager.learn(model)
        assert model.calls == [(7, expected)]
        assert "learn" not in vars(model)  # the partial is gone: save() must not store it


# ------------------------------------------------------------------------------------------------------ twm.yml


def test_twm_yml_entries():
    config = twm_yml()
    atari = config["atari"]
    (wrapper,) = atari["env_wrapper"]
    assert wrapper == {
        "stable_baselines3.common.atari_wrappers.AtariWrapper": dict(
            noop_max=30, frame_skip=4, screen_size=64, terminal_on_life_loss=True, clip_reward=False
        )
    }
    assert atari["frame_stack"] == 4 and atari["policy"] == "CnnPolicy" and atari["n_timesteps"] == 100_000
    games = [key for key in config if key.endswith("NoFrameskip-v4")]
    assert len(games) == 26 and all(config[game] == atari for game in games)
    for key in ("default", "CartPole-v1", "Pendulum-v1"):
        assert config[key]["policy"] == "MlpPolicy"
    # The learning checks' settings, as the zoo reads them (it evaluates the policy_kwargs string).
    from sb3_twm.benchmark.learn_cartpole import CARTPOLE_HYPERPARAMS
    from sb3_twm.benchmark.learn_pendulum import PENDULUM_HYPERPARAMS

    for key, expected in (("CartPole-v1", CARTPOLE_HYPERPARAMS), ("Pendulum-v1", PENDULUM_HYPERPARAMS)):
        entry = dict(config[key])
        entry["policy_kwargs"] = eval(entry["policy_kwargs"])
        assert entry == expected, key
    # The Monitor-based evaluation needs the wrapper kwargs TWM's own env helper uses.
    from sb3_twm.common.atari import TWM_ATARI_WRAPPER_KWARGS

    assert wrapper["stable_baselines3.common.atari_wrappers.AtariWrapper"] == TWM_ATARI_WRAPPER_KWARGS


def test_atari_evaluation_scores_full_games():
    """With the yml's wrapper, as the zoo builds eval envs, evaluate_policy counts games, not lives (Atari 100k)."""
    import rl_zoo3.import_envs  # noqa: F401  (registers the ALE games)
    from rl_zoo3.utils import get_wrapper_class
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecFrameStack

    hyperparams = dict(twm_yml()["BreakoutNoFrameskip-v4"])
    env = make_vec_env("BreakoutNoFrameskip-v4", n_envs=1, seed=0, wrapper_class=get_wrapper_class(hyperparams))
    env = VecFrameStack(env, hyperparams["frame_stack"])
    rng = np.random.default_rng(0)

    class RandomAgent:
        def predict(self, observation, state=None, episode_start=None, deterministic=False):
            return rng.integers(env.action_space.n, size=len(observation)), state

    dones = []
    scores, _ = evaluate_policy(
        RandomAgent(), env, n_eval_episodes=1, return_episode_rewards=True, callback=lambda loc, _: dones.append(loc["done"])
    )
    env.close()
    assert len(scores) == 1
    assert sum(dones) == 5  # Breakout: 5 lives, each lost life ends an agent episode; the score covers all five


# ---------------------------------------------------------------------------------------------- Optuna sampler


@pytest.mark.parametrize("policy", ["CnnPolicy", "MlpPolicy"])
def test_sampler_gives_valid_anchored_configs(policy, tmp_path):
    from stable_baselines3.common.env_util import make_vec_env

    base = {**TINY_TWM_KWARGS, "policy": policy}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    for _ in range(8):
        trial = study.ask()
        hyperparams = sample_twm_params(trial, 0, 1, {"hyperparams": base})
        assert 2 <= hyperparams["batch_size"] <= 8 and 8 <= hyperparams["imagination_batch_size"] <= 32
        assert hyperparams["imagination_batch_size"] <= hyperparams["batch_size"] * base["sequence_length"]
        world_model = hyperparams["world_model_kwargs"]
        assert 16 <= world_model["embed_dim"] <= 64 and world_model["embed_dim"] % 2 == 0
        assert world_model["memory_length"] == 8 and world_model["z_head_dims"] == [64]  # kept from the base
        assert hyperparams["policy_kwargs"]["latent_classes"] == 8
        assert ("cnn_channels" in trial.params) == (policy == "CnnPolicy")
        # TWM accepts the merged configuration (MlpPolicy on CartPole: construction only, no training).
        TWM("MlpPolicy", env, **{key: value for key, value in {**base, **hyperparams}.items() if key != "policy"})
        # The converter rebuilds the same kwargs from the stored trial parameters (what --trial-id uses).
        assert convert_twm_params(trial.params, base) == hyperparams
        study.tell(trial, 0.0)
    env.close()


def test_sampler_without_configuration_uses_twm_defaults():
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    hyperparams = sample_twm_params(trial, 0, 1, {})
    assert 50 <= hyperparams["batch_size"] <= 200 and 128 <= hyperparams["world_model_kwargs"]["embed_dim"] <= 512
    assert 1 <= hyperparams["world_model_kwargs"]["num_layers"] <= 12
    assert len(hyperparams["policy_kwargs"]["net_arch"]) == 4


def test_converter_rejects_unknown_parameters():
    with pytest.raises(ValueError, match="Unknown TWM trial parameters"):
        convert_twm_params({"n_steps_pow": 7})


# ------------------------------------------------------------------------------------------- the zoo's commands


@pytest.fixture(scope="module")
def pong_run(tmp_path_factory) -> Path:
    """``python -m rl_zoo3.train --algo twm --env PongNoFrameskip-v4 -n 400 -params <tiny>`` with one evaluation."""
    cwd = tmp_path_factory.mktemp("pong")
    args = ["rl_zoo3.train", "--algo", "twm", "--env", PONG, "-n", "400", "--seed", "1"]
    result = run([*args, "--eval-freq", "400", "--eval-episodes", "1", *tiny_params()], cwd)
    out = check(result)
    assert f"Loading hyperparameters from: {zoo.default_config_path()}" in out
    assert "Stacking 4 frames" in out and "Wrapping the env in a VecTransposeImage." in out
    return cwd


@pytest.mark.slow
def test_train_saves_a_loadable_model_and_evaluates_full_games(pong_run):
    run_dir = pong_run / "logs" / "twm" / f"{PONG}_1"
    model = TWM.load(run_dir / f"{PONG}.zip")
    assert model.observation_space.shape == (4, 64, 64) and model.action_space.n == 6
    assert model.num_timesteps == 400 and model.batch_size == 4
    assert model.world_model_kwargs["embed_dim"] == 32
    with open(run_dir / PONG / "config.yml") as file:
        saved = yaml.load(file, Loader=yaml.UnsafeLoader)
    assert saved["env_wrapper"] == twm_yml()["atari"]["env_wrapper"] and saved["frame_stack"] == 4
    evaluations = np.load(run_dir / "evaluations.npz")
    # One evaluation of one full game: Pong ends when a side reaches 21 points.
    assert evaluations["timesteps"].tolist() == [400]
    assert -21 <= evaluations["results"][0, 0] <= 21 and evaluations["ep_lengths"][0, 0] > 1000


@pytest.mark.slow
def test_enjoy_reports_episode_scores(pong_run):
    args = ["rl_zoo3.enjoy", "--algo", "twm", "--env", PONG, "-f", "logs/", "--no-render", "-n", "1000"]
    out = check(run(args, pong_run))
    assert f"Loading logs/twm/{PONG}_1/{PONG}.zip" in out
    assert "Atari Episode Score:" in out  # a full game of Pong takes about 850 steps


@pytest.mark.slow
def test_record_video_writes_a_video(pong_run):
    check(run(["rl_zoo3.record_video", "--algo", "twm", "--env", PONG, "-f", "logs/", "-n", "500"], pong_run))
    videos = list((pong_run / "logs" / "twm" / f"{PONG}_1" / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0


@pytest.mark.slow
def test_optimize_with_storage_then_load_trial(tmp_path):
    config = twm_yml()
    (tmp_path / "tiny.yml").write_text(yaml.safe_dump({PONG: {**config["atari"], **TINY_TWM_KWARGS}}))
    study_args = ["--storage", "sqlite:///twm.db", "--study-name", "s", "--conf-file", "tiny.yml"]
    args = ["rl_zoo3.train", "--algo", "twm", "--env", PONG, "-optimize", "--n-trials", "2", "-n", "300"]
    out = check(run([*args, "--n-evaluations", "1", "--eval-episodes", "1", "--seed", "0", *study_args], tmp_path))
    assert "Loading hyperparameters from: tiny.yml" in out  # the user's --conf-file wins
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'twm.db'}")
    finished = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 2
    assert all(-21 <= trial.value <= 21 and "embed_dim" in trial.params for trial in finished)
    assert len(list((tmp_path / "logs" / "twm").glob("report_*.csv"))) == 1

    # Load trial 1 (the zoo cannot load trial 0 by id): its values, merged into the --conf-file's nested kwargs.
    args = ["rl_zoo3.train", "--algo", "twm", "--env", PONG, "-n", "250", "--eval-freq", "-1", "--trial-id", "1"]
    check(run([*args, *study_args], tmp_path))
    run_dirs = sorted((tmp_path / "logs" / "twm").glob(f"{PONG}_*"))
    model = TWM.load(run_dirs[-1] / f"{PONG}.zip")
    params = study.trials[1].params
    assert model.world_model_kwargs["embed_dim"] == params["embed_dim"]
    assert model.world_model_kwargs["memory_length"] == 8  # from tiny.yml
    assert model.batch_size == params["batch_size"] and model.imagination_horizon == params["imagination_horizon"]
    assert model.policy_kwargs["cnn_channels"] == params["cnn_channels"] and model.policy_kwargs["latent_classes"] == 8


@pytest.mark.slow
def test_explicit_entry_point_without_hook_cartpole(tmp_path):
    args = ["sb3_twm.zoo", "train", "--algo", "twm", "--env", "CartPole-v1", "-n", "300", "--eval-freq", "-1"]
    out = check(run([*args, *tiny_params()], tmp_path, no_hook=True))
    assert f"Loading hyperparameters from: {zoo.default_config_path()}" in out
    run_folder = tmp_path / "logs" / "twm" / "CartPole-v1_1"
    model = TWM.load(run_folder / "CartPole-v1.zip")
    assert type(model.policy).__name__ == "MlpPolicy"
    # The entry normalises observations: the zoo saves the statistics next to the model, and enjoy loads them.
    assert (run_folder / "CartPole-v1" / "vecnormalize.pkl").is_file()
    args = ["sb3_twm.zoo", "enjoy", "--algo", "twm", "--env", "CartPole-v1", "-f", "logs/", "--no-render", "-n", "300"]
    out = check(run(args, tmp_path, no_hook=True))
    assert "Episode Reward:" in out and "Mean reward:" in out


def test_train_with_continuous_actions(tmp_path):
    args = ["rl_zoo3.train", "--algo", "twm", "--env", "Pendulum-v1", "-n", "300", "--eval-freq", "-1"]
    check(run([*args, *tiny_params()], tmp_path))
    model = TWM.load(tmp_path / "logs" / "twm" / "Pendulum-v1_1" / "Pendulum-v1.zip")
    assert model.reward_scale == 0.1 and model.policy.action_distribution.num_logits == 11  # the yml's, the default
    assert model.replay_buffer.actions.shape[-1] == 1 and model._n_updates > 0
    actions, _ = model.predict(np.zeros((5, 3), np.float32))
    assert actions.shape == (5, 1) and np.all(np.abs(actions) <= 2.0)


@pytest.mark.slow
def test_checkpoint_resume_continues_the_run(tmp_path):
    """``--save-freq`` checkpoints are model + dataset pairs, and ``-i <checkpoint> -n 100`` continues that run."""
    args = ["rl_zoo3.train", "--algo", "twm", "--env", PONG, "--seed", "0", "--eval-freq", "-1"]
    check(run([*args, "-n", "300", "--save-freq", "150", "--save-replay-buffer", *tiny_params()], tmp_path))
    first = tmp_path / "logs" / "twm" / f"{PONG}_1"
    for steps in (150, 300):
        assert (first / f"rl_model_{steps}_steps.zip").is_file()
        assert (first / f"rl_model_replay_buffer_{steps}_steps.pkl").is_file()
    assert (first / "replay_buffer.pkl").is_file()
    checkpoint = TWM.load(first / "rl_model_300_steps.zip")
    assert checkpoint.num_timesteps == 300 and checkpoint._n_updates > 0

    # As a user resumes: the model's saved hyperparameters, no -params.
    checkpoint_arg = f"logs/twm/{PONG}_1/rl_model_300_steps.zip"
    result = run([*args, "-i", checkpoint_arg, "-n", "100", "--save-replay-buffer"], tmp_path)
    out = check(result)
    assert f"Loading replay buffer logs/twm/{PONG}_1/rl_model_replay_buffer_300_steps.pkl" in out
    for warning in ("restarts its step counter", "random actions again", "not from the same checkpoint", "No dataset found"):
        assert warning not in result.stderr, result.stderr[-4000:]
    second = tmp_path / "logs" / "twm" / f"{PONG}_2"
    resumed = TWM.load(second / f"{PONG}.zip")
    assert resumed.num_timesteps == 300 + 100
    assert resumed._n_updates > checkpoint._n_updates
    assert resumed.world_model_kwargs["embed_dim"] == 32 and resumed.learning_starts == 200  # the checkpoint's
    resumed.load_replay_buffer(second / "replay_buffer.pkl")
    assert resumed.replay_buffer.size() == 300 + 100  # the checkpoint's dataset, then the new steps


@pytest.mark.slow
def test_killed_normalised_run_resumes_from_its_first_checkpoint(tmp_path):
    """
    CartPole (VecNormalize): ``--save-freq`` writes model, dataset and the statistics of that step; the run is killed
    (SIGKILL) after its first checkpoint, and ``-i <checkpoint>`` continues it with all three.
    """
    args = ["rl_zoo3.train", "--algo", "twm", "--env", "CartPole-v1", "--seed", "0", "--eval-freq", "-1"]
    env = {key: value for key, value in os.environ.items() if key != "SB3_TWM_NO_ZOO_HOOK"}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", *args, "-n", "100000", "--save-freq", "250", *tiny_params()]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_folder = tmp_path / "logs" / "twm" / "CartPole-v1_1"
    names = ("rl_model_250_steps.zip", "rl_model_replay_buffer_250_steps.pkl", "rl_model_vecnormalize_250_steps.pkl")
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        # The statistics are written last; the next checkpoint's model shows that they are complete.
        while not (run_folder / "rl_model_500_steps.zip").exists():
            assert process.poll() is None, process.stderr.read().decode()[-4000:]
            assert time.monotonic() < deadline, "no second checkpoint in time"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert all((run_folder / name).is_file() for name in names)
    assert not (run_folder / "CartPole-v1.zip").exists()  # the run never finished

    with open(run_folder / "rl_model_vecnormalize_250_steps.pkl", "rb") as file:
        saved_statistics = pickle.load(file)
    assert saved_statistics.obs_rms.count > 250  # updated on every step (count starts at 1e-4)
    checkpoint = "logs/twm/CartPole-v1_1/rl_model_250_steps.zip"
    result = run([*args, "-i", checkpoint, "-n", "100"], tmp_path)
    out = check(result)
    assert "Loading replay buffer logs/twm/CartPole-v1_1/rl_model_replay_buffer_250_steps.pkl" in out
    assert "Loading VecNormalize statistics logs/twm/CartPole-v1_1/rl_model_vecnormalize_250_steps.pkl" in out
    for warning in ("restarts its step counter", "not from the same checkpoint", "No dataset found"):
        assert warning not in result.stderr, result.stderr[-4000:]
    second = tmp_path / "logs" / "twm" / "CartPole-v1_2"
    resumed = TWM.load(second / "CartPole-v1.zip")
    assert resumed.num_timesteps == 250 + 100 and resumed._n_updates > TWM.load(run_folder / names[0])._n_updates
    # The run goes on with its own (tiny) hyperparameters, not the CartPole-v1 entry of twm.yml.
    assert resumed.learning_starts == 200 and resumed.world_model_kwargs["embed_dim"] == 32
    assert "are kept (the configuration's differ)" in out and "'learning_starts'" in out
    with open(second / "CartPole-v1" / "vecnormalize.pkl", "rb") as file:
        final_statistics = pickle.load(file)
    # The resumed run went on from the checkpoint's statistics: 100 more observations (plus the resets' ones).
    assert saved_statistics.obs_rms.count + 100 <= final_statistics.obs_rms.count <= saved_statistics.obs_rms.count + 110
