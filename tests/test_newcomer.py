"""What a newcomer meets: progress while pretraining runs, an honest progress bar, env ids that build the paper's env."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.atari_wrappers import MaxAndSkipEnv
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

import sb3_twm.twm.pretraining as pretraining
from sb3_twm import TWM
from sb3_twm.common.atari import make_twm_atari_env
from sb3_twm.common.progress import TWMProgressBarCallback


class Rows(KVWriter):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def write(self, key_values, key_excluded, step=0) -> None:
        self.rows.append(dict(key_values))

    def close(self) -> None:
        pass


@pytest.mark.parametrize("interval", [0.0, 30.0])
def test_pretraining_reports_progress_while_it_runs(pong_env, tiny_kwargs, monkeypatch, interval):
    monkeypatch.setattr(pretraining, "PRETRAINING_LOG_SECONDS", interval)
    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    rows = Rows()
    model.set_logger(Logger(folder=None, output_formats=[rows]))
    model.learn(201)
    model.dump_logs()
    progress = [row for row in rows.rows if "pretrain/phase" in row]
    for phase in ("observation model", "dynamics model", "actor-critic"):
        lines = [row for row in progress if row["pretrain/phase"] == phase]
        updates = [row["pretrain/phase_updates"] for row in lines]
        assert updates[0] == 0 and updates == sorted(updates) and updates[-1] > 0, phase  # from its start to its end
        assert lines[-1]["pretrain/phase_progress"] == 1.0
        assert all("time/pretrain_seconds" in row for row in lines)
        if interval == 0:  # a line after every update: they come while the phase runs, not once it is over
            # (the line at the end repeats the count when the estimate was off, to say the phase is complete)
            assert sorted(set(updates)) == list(range(updates[-1] + 1)) and len(updates) <= updates[-1] + 2, phase
            assert "time/pretrain_phase_remaining_seconds" in lines[1]
        else:
            assert len(lines) == 2  # start and end (the tiny phases take well under 30 s)
    # The counts of the phases come with the next regular log write, as before.
    regular = [row for row in rows.rows if "pretrain/phase" not in row]
    assert any("pretrain/observation_model_updates" in row for row in regular)


def test_progress_bar_shows_pretraining_phases_and_the_cost_of_training(pong_env, tiny_kwargs, monkeypatch):
    phases, descriptions = [], []
    start_phase, on_step = TWMProgressBarCallback.start_phase, TWMProgressBarCallback._on_step

    def recording_start(self, description, total):
        phases.append((description, total))
        return start_phase(self, description, total)

    def recording_step(self):
        result = on_step(self)
        descriptions.append(self.progress.tasks[self._task].description)
        return result

    monkeypatch.setattr(TWMProgressBarCallback, "start_phase", recording_start)
    monkeypatch.setattr(TWMProgressBarCallback, "_on_step", recording_step)
    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    model.learn(240, progress_bar=True)
    assert [description for description, _ in phases] == [
        "pretraining: observation model",
        "pretraining: dynamics model",
        "pretraining: actor-critic",
    ]
    assert all(total > 0 for _, total in phases)
    assert descriptions[0] == "prefill (random actions)" and descriptions[199] == "prefill (random actions)"
    assert descriptions[-1].startswith("training (") and "s/env step" in descriptions[-1]
    assert model._progress_bar is None  # a transient of learn()


def test_an_atari_id_builds_the_papers_env(tiny_kwargs, capsys):
    model = TWM("CnnPolicy", "PongNoFrameskip-v4", verbose=1, **tiny_kwargs)
    assert "is an Atari game: using make_twm_atari_env" in capsys.readouterr().out
    assert model.observation_space.shape == (4, 64, 64) and model.observation_space.dtype == np.uint8
    assert isinstance(model.env, VecTransposeImage) and isinstance(model.env.venv, VecFrameStack)
    wrapper = model.env.envs[0]
    while not isinstance(wrapper, MaxAndSkipEnv):
        wrapper = wrapper.env
    assert wrapper._skip == 4 and model.env.envs[0].unwrapped._frameskip == 1
    sticky = TWM("CnnPolicy", "ALE/Pong-v5", **tiny_kwargs).env.envs[0].unwrapped
    assert sticky._frameskip == 1 and sticky.ale.getFloat("repeat_action_probability") == 0.0
    with pytest.warns(UserWarning, match="sticky actions"):
        make_twm_atari_env("ALE/Pong-v5", env_kwargs={"repeat_action_probability": 0.25}).close()


def test_an_atari_id_works_in_a_fresh_process():
    code = "from sb3_twm import TWM; m = TWM('CnnPolicy', 'BreakoutNoFrameskip-v4', _init_setup_model=False); " \
           "print(m.observation_space.shape, m.action_space)"  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(4, 64, 64) Discrete(4)" in result.stdout


class Frames(gym.Env):
    def __init__(self, channels: int) -> None:
        self.observation_space = spaces.Box(0, 255, (64, 64, channels), np.uint8)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


@pytest.mark.parametrize("channels, warns", [(1, True), (3, True), (4, False)])
def test_images_without_frame_stacking_warn(channels, warns, tiny_kwargs, recwarn):
    TWM("CnnPolicy", Frames(channels), _init_setup_model=False)
    messages = [str(warning.message) for warning in recwarn if "VecFrameStack" in str(warning.message)]
    assert bool(messages) == warns
    if warns:
        assert f"{channels} channel(s)" in messages[0]


def test_the_benchmark_command_list_comes_without_importing_torch():
    code = (
        "import sys, contextlib, io\n"
        "from sb3_twm.benchmark.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "assert 'wm-update' in out.getvalue() and 'learn-cartpole' in out.getvalue()\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("command", ["wm-update", "imagine", "step", "collect", "memory", "learn-cartpole", "learn-pendulum"])
def test_benchmark_help_shows_each_default_once(command, capsys):
    from sb3_twm.benchmark.__main__ import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("(default") == len([line for line in text.splitlines() if "(default" in line])


def test_the_training_example_sets_up_without_warnings(monkeypatch, tmp_path, recwarn):
    """examples/train_pong.py as written, up to training: the callbacks' setup is where SB3 warns about its envs."""
    import runpy

    namespace = runpy.run_path("examples/train_pong.py", run_name="example")  # defines main() only

    def learn(self, total_timesteps, callback=None, **kwargs):
        for item in callback:
            item.init_callback(self)
        return self

    monkeypatch.setattr(TWM, "learn", learn)
    monkeypatch.setattr(TWM, "save", lambda self, path: None)
    monkeypatch.setattr(TWM, "save_replay_buffer", lambda self, path: None)
    monkeypatch.setitem(namespace["main"].__globals__, "evaluate_policy", lambda *args, **kwargs: (0.0, 0.0))
    monkeypatch.setattr(sys, "argv", ["train_pong.py", "--output", str(tmp_path), "--device", "cpu"])
    namespace["main"]()
    assert [str(warning.message) for warning in recwarn] == []


def test_step_benchmark_times_env_steps_of_the_cartpole_settings(tmp_path):
    """`step --config cartpole`: the small settings, timed from past the prefill and its pretraining."""
    import json

    from sb3_twm.benchmark.__main__ import main
    from sb3_twm.benchmark.learn_cartpole import CARTPOLE_HYPERPARAMS

    path = tmp_path / "step.json"
    argv = ["step", "--config", "cartpole", "--threads", "1", "--repeats", "4", "--json", str(path)]
    assert main(argv) == 0
    rows = {row["figure"]: row for row in json.loads(path.read_text())["rows"]}
    assert rows["seconds per env step (incl. training)"]["n"] == 4
    # CartPole's train_ratio (per agent step of its frame skip), not the default's.
    assert rows["training steps per env step (schedule)"]["median"] == CARTPOLE_HYPERPARAMS["train_ratio"] == 1.0
    assert rows["training steps in this run"]["median"] >= 2
