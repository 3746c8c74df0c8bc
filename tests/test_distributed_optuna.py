"""
Tuning with many workers on one Optuna study: the zoo's literal ``-optimize --storage <URL> --study-name`` commands
in separate processes on a real PostgreSQL server (started by the test, see ``tests/postgres.py``), one of them
SIGKILLed in the middle of a trial; then ``python -m sb3_twm.zoo export-trial`` and ``--conf-file`` with its output.
The heartbeat settings, the export's rules and its errors are tested without a server (SQLite).
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")
pytest.importorskip("rl_zoo3")

from configurations import TINY_MLP_POLICY_KWARGS, TINY_SCHEDULE_KWARGS  # noqa: E402
from postgres import postgres_server  # noqa: E402

from sb3_twm import TWM  # noqa: E402
from sb3_twm.zoo import export  # noqa: E402
from sb3_twm.zoo.optuna_storage import (  # noqa: E402
    GRACE_PERIOD_VARIABLE,
    HEARTBEAT_INTERVAL_VARIABLE,
    MAX_RETRY_VARIABLE,
    HeartbeatSettings,
    heartbeat_storage,
    is_database_url,
)

ENV_ID = "CartPole-v1"
STUDY = "twm-cartpole"
# Heartbeats of the test's workers: a killed worker's trial is stale after 3 s (the defaults are 60 s and 120 s).
HEARTBEATS = {HEARTBEAT_INTERVAL_VARIABLE: "1", GRACE_PERIOD_VARIABLE: "3", MAX_RETRY_VARIABLE: "1"}
# A trial the zoo records as PRUNED: TWM raises ValueError inside learn() (the actor-critic pretraining needs
# sequences of the imagination horizon, longer than the 200 prefill steps), which the zoo's objective turns into
# TrialPruned.
INVALID_TRIAL = {"imagination_horizon": 300}
TRIAL_LINE = re.compile(r"Trial (\d+) (finished|pruned)")
WORKER_TIMEOUT = 300


def write_configuration(folder: Path) -> Path:
    """The tiny CartPole entry, ``policy_kwargs`` as a string as in rl-zoo3's files."""
    entry = {
        "policy": "MlpPolicy",
        "n_timesteps": 600,
        **TINY_SCHEDULE_KWARGS,
        "policy_kwargs": export.python_literal(TINY_MLP_POLICY_KWARGS),
    }
    path = folder / "tiny.yml"
    path.write_text(yaml.safe_dump({ENV_ID: entry}, sort_keys=False))
    return path


def worker_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "SB3_TWM_NO_ZOO_HOOK"}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **HEARTBEATS)
    return env


def start_worker(url: str, folder: Path, name: str, seed: int, trials: int) -> tuple[subprocess.Popen, Path]:
    """One ``python -m rl_zoo3.train --algo twm -optimize --storage <url>`` worker; its output goes to a file."""
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", "twm", "--env", ENV_ID, "--conf-file", "tiny.yml"]
    command += ["-optimize", "--storage", url, "--study-name", STUDY, "--n-trials", str(trials), "--seed", str(seed)]
    command += ["-n", "600", "--n-evaluations", "2", "--eval-episodes", "2", "--no-optim-plots", "-f", f"logs-{name}"]
    log = folder / f"{name}.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=folder, env=worker_environment(), stdout=output, stderr=subprocess.STDOUT)
    return process, log


def finished_trials(log: Path) -> set[int]:
    """The trials a worker's log says it finished or pruned (Optuna's own log lines)."""
    return {int(number) for number, _ in TRIAL_LINE.findall(log.read_text())}


def print_summary(trials: list, pids: dict[str, int], last_log: Path) -> None:
    """The study as the workers left it (shown with ``pytest -s``), and the summary of the last worker."""
    names = {pid: name for name, pid in pids.items()}
    print(f"\n{'trial':>5} {'state':>8} {'value':>7}  worker  retry of  evaluations")
    for trial in trials:
        worker = names.get(worker_of(trial), "?") if "worker" in trial.user_attrs else "-"
        value = "" if trial.value is None else f"{trial.value:.1f}"
        retried = trial.system_attrs.get("failed_trial", "")
        evaluations = sorted(trial.intermediate_values)
        print(f"{trial.number:>5} {trial.state.name:>8} {value:>7}  {worker:>6}  {retried!s:>8}  {evaluations}")
    text = last_log.read_text()
    print(text[text.index("Number of finished trials") :].split("Writing report")[0])


def worker_of(trial) -> int:
    return int(trial.user_attrs["worker"].rsplit(":", 1)[1])


@pytest.mark.slow
def test_workers_share_a_postgresql_study_and_survive_a_killed_worker(tmp_path):
    write_configuration(tmp_path)
    with postgres_server() as url:
        study = optuna.create_study(storage=url, study_name=STUDY, direction="maximize")
        study.enqueue_trial(INVALID_TRIAL)
        workers = {}
        try:
            workers["a"] = start_worker(url, tmp_path, "a", seed=1, trials=4)
            workers["b"] = start_worker(url, tmp_path, "b", seed=2, trials=3)
            pid_a = workers["a"][0].pid
            # Read the study while the workers run; kill worker a once one of its trials is half done (it has
            # reported its first evaluation).
            killed, deadline = None, time.monotonic() + WORKER_TIMEOUT
            while killed is None:
                assert time.monotonic() < deadline, "worker a never reached the middle of a trial"
                assert workers["a"][0].poll() is None, workers["a"][1].read_text()[-3000:]
                for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
                    if trial.user_attrs.get("worker", "").endswith(f":{pid_a}") and trial.intermediate_values:
                        os.kill(pid_a, signal.SIGKILL)
                        killed = trial
                        break
                time.sleep(0.2)
            killed_at = time.monotonic()
            workers["a"][0].wait(timeout=30)
            assert study.get_trials()[killed.number].state == optuna.trial.TrialState.RUNNING  # no one knows yet
            # A worker started after the grace period marks the trial FAIL and queues it again (as does worker b when
            # it starts its next trial by then).
            time.sleep(max(0.0, killed_at + 4.5 - time.monotonic()))
            workers["c"] = start_worker(url, tmp_path, "c", seed=3, trials=1)
            for name in ("b", "c"):
                process, log = workers[name]
                assert process.wait(timeout=WORKER_TIMEOUT) == 0, log.read_text()[-4000:]
            ended_last = max(("b", "c"), key=lambda name: workers[name][1].stat().st_mtime)
        finally:
            for process, _ in workers.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        trials = optuna.load_study(study_name=STUDY, storage=url).get_trials()
        print_summary(trials, {name: process.pid for name, (process, _) in workers.items()}, workers[ended_last][1])

        # The killed worker's trial failed and was run again, with its parameters, by another worker.
        states = {trial.number: trial.state for trial in trials}
        assert states[killed.number] == optuna.trial.TrialState.FAIL
        retries = [trial for trial in trials if trial.system_attrs.get("failed_trial") == killed.number]
        assert len(retries) == 1 and retries[0].params == killed.params
        assert retries[0].state == optuna.trial.TrialState.COMPLETE
        assert worker_of(retries[0]) in (workers["b"][0].pid, workers["c"][0].pid)
        # Nothing is left running or waiting; the invalid trial is PRUNED, every other one COMPLETE with its value.
        assert [state.name for state in states.values()].count("FAIL") == 1
        assert not {"RUNNING", "WAITING"} & {state.name for state in states.values()}
        pruned = [trial for trial in trials if trial.state == optuna.trial.TrialState.PRUNED]
        assert len(pruned) == 1 and pruned[0].params["imagination_horizon"] == 300
        complete = [trial for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
        for trial in complete:
            assert 1 <= trial.value <= 500 and {"learning_rate", "batch_size", "embed_dim"} <= set(trial.params)
            assert sorted(trial.intermediate_values) == [1, 2]  # both evaluations of the trial
        # No trial was run twice: each finished trial is in exactly one worker's log, the one its attribute names.
        logs = {name: finished_trials(log) for name, (_, log) in workers.items()}
        assert sum(len(numbers) for numbers in logs.values()) == len(complete) + len(pruned)
        assert set().union(*logs.values()) == {trial.number for trial in complete + pruned}
        for name, numbers in logs.items():
            for number in numbers:
                assert worker_of(trials[number]) == workers[name][0].pid
        assert len(logs["b"]) == 3 and len(logs["c"]) == 1 and killed.number not in logs["a"]
        # The summary of the worker that ended last is the study's.
        summary = workers[ended_last][1].read_text()
        best = max(complete, key=lambda trial: trial.value)
        assert f"Number of finished trials:  {len(trials)}" in summary
        assert f"Value:  {best.value}" in summary

        # The best trial as a configuration entry, which the zoo then trains with as it is.
        command = [sys.executable, "-m", "sb3_twm.zoo", "export-trial", "--storage", url, "--study-name", STUDY]
        command += ["--env", ENV_ID, "--conf-file", "tiny.yml", "--output", "best.yml"]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr
    entry = yaml.safe_load((tmp_path / "best.yml").read_text())[ENV_ID]
    assert isinstance(entry["policy_kwargs"], str) and entry["policy_kwargs"].startswith("dict(")
    assert (tmp_path / "best.yml").read_text().startswith(f"# Trial {best.number} of Optuna study {STUDY!r}")
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", "twm", "--env", ENV_ID, "--conf-file", "best.yml"]
    command += ["-n", "250", "--eval-freq", "-1", "--seed", "0", "-f", "logs-best"]
    result = subprocess.run(command, cwd=tmp_path, env=worker_environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Loading hyperparameters from: best.yml" in result.stdout
    model = TWM.load(next((tmp_path / "logs-best" / "twm").glob(f"{ENV_ID}_*")) / f"{ENV_ID}.zip")
    assert model.batch_size == best.params["batch_size"] and model.lr_schedule(1.0) == best.params["learning_rate"]
    assert model.world_model_kwargs["embed_dim"] == best.params["embed_dim"]
    assert model.world_model_kwargs["memory_length"] == TINY_SCHEDULE_KWARGS["world_model_kwargs"]["memory_length"]
    assert model.policy_kwargs["latent_classes"] == TINY_MLP_POLICY_KWARGS["latent_classes"]
    assert max(model.policy_kwargs["net_arch"]) == best.params["actor_critic_width"]


# ------------------------------------------------------------------------------------------- without a server


def test_heartbeat_settings_come_from_the_environment():
    assert HeartbeatSettings.from_environment({}) == HeartbeatSettings(60, 120, 1)
    assert HeartbeatSettings.from_environment({HEARTBEAT_INTERVAL_VARIABLE: "10"}) == HeartbeatSettings(10, 20, 1)
    assert HeartbeatSettings.from_environment(HEARTBEATS) == HeartbeatSettings(1, 3, 1)
    with pytest.raises(ValueError, match=GRACE_PERIOD_VARIABLE):
        HeartbeatSettings.from_environment({HEARTBEAT_INTERVAL_VARIABLE: "10", GRACE_PERIOD_VARIABLE: "5"})
    with pytest.raises(ValueError, match="whole number"):
        HeartbeatSettings.from_environment({MAX_RETRY_VARIABLE: "many"})
    assert is_database_url("postgresql+psycopg2://u@h:5432/db") and is_database_url("sqlite:///twm.db")
    assert not is_database_url("logs/study.log") and not is_database_url(None)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::optuna.exceptions.ExperimentalWarning")
def test_a_stale_trial_is_failed_and_queued_again(tmp_path):
    storage = heartbeat_storage(f"sqlite:///{tmp_path / 'study.db'}", HeartbeatSettings(1, 2, 1))
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    storage.record_heartbeat(trial._trial_id)  # then the worker dies
    time.sleep(3.5)  # past the grace period (SQLite's clock has whole seconds)
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert [trial.state.name for trial in trials] == ["FAIL", "WAITING"]
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == 0
    assert heartbeat_storage("sqlite:///x.db", HeartbeatSettings(0, 0, 1)) == "sqlite:///x.db"  # heartbeats off


def test_python_literal_is_what_the_zoo_evaluates():
    kwargs = dict(net_arch=dict(pi=[64], vf=[32, 32]), latent_classes=8, scale=0.5, name="x", flag=True, nothing=None)
    assert eval(export.python_literal(kwargs)) == kwargs
    assert export.python_literal({"dims": (3,)}) == "dict(dims=(3,))"
    with pytest.raises(ValueError, match="literal"):
        export.python_literal({"activation_fn": object()})
    with pytest.raises(ValueError, match="identifier"):
        export.python_literal({"not valid": 1})


def sqlite_study(folder: Path, user_attrs: dict[str, str] | None = None) -> str:
    """A study of three trials (trial 1 the best, trial 2 pruned) as the zoo would leave it."""
    folder.mkdir(exist_ok=True)
    url = f"sqlite:///{folder / 'study.db'}"
    study = optuna.create_study(storage=url, study_name=STUDY, direction="maximize")
    for key, value in (user_attrs or {}).items():
        study.set_user_attr(key, value)
    distributions = {
        "batch_size": optuna.distributions.IntDistribution(2, 8),
        "embed_dim": optuna.distributions.IntDistribution(16, 64, step=2),
    }
    for value, params in ((10.0, {"batch_size": 2, "embed_dim": 16}), (30.0, {"batch_size": 8, "embed_dim": 48})):
        study.add_trial(optuna.create_trial(params=params, distributions=distributions, value=value))
    study.add_trial(
        optuna.create_trial(
            params={"batch_size": 4, "embed_dim": 32}, distributions=distributions, state=optuna.trial.TrialState.PRUNED
        )
    )
    return url


def test_export_merges_the_trial_into_the_tuned_entry(tmp_path):
    configuration = write_configuration(tmp_path)
    url = sqlite_study(tmp_path)
    entries, comment = export.export_trial(url, STUDY, ENV_ID, configuration)
    entry = entries[ENV_ID]
    assert entry["batch_size"] == 8 and entry["world_model_kwargs"]["embed_dim"] == 48
    # The feed-forward width keeps its ratio; the other nested values are the configuration's.
    assert entry["world_model_kwargs"]["feedforward_dim"] == 96 and entry["world_model_kwargs"]["memory_length"] == 8
    assert entry["policy_kwargs"] == export.python_literal(TINY_MLP_POLICY_KWARGS) and entry["n_timesteps"] == 600
    assert comment.startswith(f"Trial 1 of Optuna study {STUDY!r} (value 30.0)")
    assert export.export_trial(url, STUDY, ENV_ID, configuration, trial_number=0)[0][ENV_ID]["batch_size"] == 2
    # An Atari game id falls back to the `atari` entry, as in the zoo.
    assert export.config_entry({"atari": {"policy": "CnnPolicy"}}, "PongNoFrameskip-v4")[0] == "atari"


def test_export_says_what_is_wrong(tmp_path, capsys):
    configuration = write_configuration(tmp_path)
    url = sqlite_study(tmp_path)
    with pytest.raises(ValueError, match=r"No study 'other'.*twm-cartpole"):
        export.export_trial(url, "other", ENV_ID, configuration)
    with pytest.raises(ValueError, match="PRUNED, not COMPLETE"):
        export.export_trial(url, STUDY, ENV_ID, configuration, trial_number=2)
    with pytest.raises(ValueError, match="no trial 7"):
        export.export_trial(url, STUDY, ENV_ID, configuration, trial_number=7)
    with pytest.raises(ValueError, match="no entry for 'Pendulum-v1'"):
        export.export_trial(url, STUDY, "Pendulum-v1", configuration)
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(storage=empty, study_name=STUDY)
    with pytest.raises(ValueError, match="no completed trial"):
        export.export_trial(empty, STUDY, ENV_ID, configuration)


def test_export_warns_when_the_study_tuned_another_configuration(tmp_path, capsys):
    # rl-zoo3 keeps str() of each tuned hyperparameter (after its preprocessing) as a user attribute of the study.
    configuration = write_configuration(tmp_path)
    entry = yaml.safe_load(configuration.read_text())[ENV_ID]
    tuned = {key: str(value) for key, value in entry.items() if key != "n_timesteps"}
    tuned["policy_kwargs"] = str(TINY_MLP_POLICY_KWARGS)
    url = sqlite_study(tmp_path, user_attrs={"command": "python -m rl_zoo3.train ...", **tuned})
    export.export_trial(url, STUDY, ENV_ID, configuration)
    assert capsys.readouterr().err == ""  # the configuration the study tuned
    other = sqlite_study(tmp_path / "other", user_attrs={"command": "...", **tuned, "learning_starts": "500"})
    export.export_trial(other, STUDY, ENV_ID, configuration)
    warning = capsys.readouterr().err
    assert "Warning: the study was tuned with other values of ['learning_starts']" in warning


def test_export_command_refuses_to_overwrite(tmp_path):
    configuration = write_configuration(tmp_path)
    url = sqlite_study(tmp_path)
    output = tmp_path / "best.yml"
    arguments = ["--storage", url, "--study-name", STUDY, "--env", ENV_ID, "--conf-file", str(configuration)]
    assert export.main([*arguments, "--output", str(output)]) == 0
    written = output.read_text()
    assert yaml.safe_load(written)[ENV_ID]["batch_size"] == 8
    with pytest.raises(SystemExit):
        export.main([*arguments, "--output", str(output)])
    assert export.main([*arguments, "--output", str(output), "--trial", "0", "--force"]) == 0
    assert yaml.safe_load(output.read_text())[ENV_ID]["batch_size"] == 2
    assert export.main([*arguments, "--trial", "2"]) == 1  # a pruned trial: an error message, no file
