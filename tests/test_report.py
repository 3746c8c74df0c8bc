"""Atari 100k results as the field reports them: the evaluation protocol, rliable's aggregates, the paper side by side."""

import json
import pathlib

import numpy as np
import pytest
from configurations import TINY_POLICY_KWARGS, TINY_SCHEDULE_KWARGS

from sb3_twm import TWM
from sb3_twm.evaluate import PROTOCOL, evaluate_model, evaluation_env
from sb3_twm.evaluate import main as evaluate_main
from sb3_twm.report import ReportError, Run, game_name, human_normalized, published_scores, read_results
from sb3_twm.report.__main__ import main as report_main
from sb3_twm.report.report import PAPER, write_report
from sb3_twm.report.scores import ATARI_100K_GAMES, HUMAN_SCORES, RANDOM_SCORES

# TWM's aggregates as the paper states them (Table 1 / Figure 4), from its published per-seed scores.
PAPER_MEAN, PAPER_MEDIAN, PAPER_IQM = 0.956, 0.505, 0.459
# Their 95% CIs as this report computes them with rliable's default 50,000 replications (seed 0); a test with fewer
# replications lands within bootstrap noise of them.
PAPER_INTERVALS = {"Mean": (0.863, 1.058), "Median": (0.329, 0.580), "IQM": (0.401, 0.519)}


def result_file(folder: pathlib.Path, game: str, run: str, scores: list[float], steps: int = 100_000) -> pathlib.Path:
    data = {"format": "sb3-twm-evaluation", "version": 1, "game": game, "run": run, "scores": scores, "model_steps": steps}
    path = folder / f"{game}_{run}.json"
    path.write_text(json.dumps(data))
    return path


def test_game_names_and_reference_scores():
    assert len(ATARI_100K_GAMES) == 26 and set(RANDOM_SCORES) == set(HUMAN_SCORES) == set(published_scores()["scores"])
    for env_id in ("PongNoFrameskip-v4", "ALE/Pong-v5", "pong", "PongNoFrameskip-v4_12"):
        assert game_name(env_id) == "Pong"
    assert game_name("MsPacmanNoFrameskip-v4") == "MsPacman" and game_name("ALE/UpNDown-v5") == "UpNDown"
    with pytest.raises(ValueError, match="not one of the 26 Atari 100k games"):
        game_name("SpaceInvadersNoFrameskip-v4")
    assert human_normalized("Pong", -20.7) == 0.0 and human_normalized("Pong", 14.6) == 1.0
    assert human_normalized("Breakout", [1.7, 30.5]).tolist() == [0.0, 1.0]


def test_the_report_recomputes_twms_published_aggregates(tmp_path):
    summary = report_paper(tmp_path, reps=5000)
    result = summary["aggregates"][PAPER]
    # Point estimates exactly as published (to the paper's three decimals).
    assert round(result["Mean"]["point"], 3) == PAPER_MEAN
    assert round(result["Median"]["point"], 3) == PAPER_MEDIAN
    assert round(result["IQM"]["point"], 3) == PAPER_IQM
    assert result["runs"] == 5 and len(result["games"]) == 26
    for metric, (low, high) in PAPER_INTERVALS.items():
        assert result[metric]["low"] < result[metric]["point"] < result[metric]["high"]
        assert abs(result[metric]["low"] - low) < 0.02 and abs(result[metric]["high"] - high) < 0.02, metric
    # Optimality gap: the mean shortfall below a normalised score of 1.
    scores = published_scores()["scores"]
    shortfall = np.mean([np.maximum(1 - human_normalized(game, scores[game]), 0) for game in ATARI_100K_GAMES])
    assert result["Optimality Gap"]["point"] == pytest.approx(shortfall)
    table = (tmp_path / "summary.md").read_text()
    assert "| Pong | 18.8 | 2.9 | 19.75, 13.09, 19.12, 21, 21 | 1.119 |" in table
    assert "jrobine/twm" in table and "results/scores.json" in table


def test_the_bootstrap_is_reproducible_and_leaves_numpy_as_it_was(tmp_path):
    np.random.seed(7)
    expected_next = np.random.rand()
    np.random.seed(7)
    first, again = report_paper(tmp_path / "a", reps=1000), report_paper(tmp_path / "b", reps=1000)
    assert np.random.rand() == expected_next
    assert first["aggregates"] == again["aggregates"]
    other = report_main(["--paper", "--out", str(tmp_path / "c"), "--reps", "1000", "--seed", "1", "--no-plots"])
    assert other == 0
    assert json.loads((tmp_path / "c" / "aggregates.json").read_text())["aggregates"] != first["aggregates"]


def report_paper(out: pathlib.Path, reps: int) -> dict:
    assert report_main(["--paper", "--out", str(out), "--reps", str(reps), "--no-plots"]) == 0
    return json.loads((out / "aggregates.json").read_text())


def test_results_are_read_side_by_side_with_the_paper(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for run in ("a", "b"):
        result_file(results, "Pong", run, [21.0, 19.0] if run == "a" else [15.0])
        result_file(results, "Breakout", run, [30.5])
    (results / "config.json").write_text("{}")  # other JSON files in a folder are not results
    runs = read_results([results])
    assert [(run.game, run.name, run.mean) for run in runs] == [("Breakout", "a", 30.5), ("Breakout", "b", 30.5),
                                                                  ("Pong", "a", 20.0), ("Pong", "b", 15.0)]  # fmt: skip
    summary = write_report(runs, tmp_path / "report", reps=1000, plots=False)
    assert summary["games"] == ["Breakout", "Pong"] and len(summary["missing_games"]) == 24
    ours = summary["aggregates"]["sb3-twm"]
    assert ours["Mean"]["point"] == pytest.approx(np.mean([1.0, human_normalized("Pong", 17.5)]))
    # The paper's aggregates over the same two games, from its five seeds.
    paper = published_scores()["scores"]
    expected = np.mean([np.mean(human_normalized(game, paper[game])) for game in ("Breakout", "Pong")])
    assert summary["aggregates"][PAPER]["Mean"]["point"] == pytest.approx(expected)
    markdown = (tmp_path / "report" / "summary.md").read_text()
    assert "**Not evaluated** (24 of 26)" in markdown and "| Pong | 17.5 | 2.5 | 20, 15 | 1.082 | 18.8 | 1.119 |" in markdown


def test_bad_results_get_a_clear_message(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report_main([str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "No results in" in capsys.readouterr().err

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    result_file(unknown, "SpaceInvaders", "a", [500.0])
    with pytest.raises(ReportError, match="not one of the 26 Atari 100k games"):
        read_results([unknown])

    def runs(*specs: tuple[str, str, int]) -> list[Run]:
        return [Run(game, name, (1.0,), steps, "test") for game, name, steps in specs]

    with pytest.raises(ReportError, match=r"different numbers of env steps \(50000: Pong/b; 100000: Pong/a\)"):
        write_report(runs(("Pong", "a", 100_000), ("Pong", "b", 50_000)), tmp_path / "r", reps=1000, plots=False)
    with pytest.raises(ReportError, match=r"as many runs.*Breakout 1, Pong 2"):
        write_report(runs(("Pong", "a", 1), ("Pong", "b", 1), ("Breakout", "a", 1)), tmp_path / "r", plots=False)
    assert not (tmp_path / "r").exists()  # nothing written for results that cannot be reported

    malformed = tmp_path / "malformed"
    malformed.mkdir()
    (malformed / "x.json").write_text(json.dumps({"format": "sb3-twm-evaluation", "game": "Pong", "scores": []}))
    with pytest.raises(ReportError, match="malformed result"):
        read_results([malformed])
    (malformed / "x.json").write_text(json.dumps({"format": "sb3-twm-evaluation", "game": "Pong", "scores": [float("nan")],
                                                  "model_steps": 1}))  # fmt: skip
    with pytest.raises(ReportError, match="not finite"):
        read_results([malformed])
    with pytest.raises(ReportError, match="does not exist"):
        read_results([tmp_path / "nowhere"])


def test_zoo_evaluations_are_the_fallback(tmp_path):
    run = tmp_path / "logs" / "twm" / "BreakoutNoFrameskip-v4_2"
    run.mkdir(parents=True)
    np.savez(run / "evaluations.npz", timesteps=np.array([5000, 10000]), results=np.array([[1.0, 3.0], [10.0, 20.0]]),
             ep_lengths=np.ones((2, 2)))  # fmt: skip
    (runs,) = read_results([tmp_path / "logs"])
    assert (runs.game, runs.name, runs.scores, runs.steps) == ("Breakout", "BreakoutNoFrameskip-v4_2", (10.0, 20.0), 10000)
    # A result file of the same run takes precedence over its evaluations.npz.
    result_file(run, "Breakout", "BreakoutNoFrameskip-v4_2", [7.0], steps=10000)
    (runs,) = read_results([tmp_path / "logs"])
    assert runs.scores == (7.0,)


def test_evaluation_envs_follow_the_protocol():
    env = evaluation_env("PongNoFrameskip-v4", n_envs=2, seed=3)
    try:
        assert env.reset().shape == (2, 64, 64, 4)
        wrappers, wrapper = [], env.envs[0]
        while hasattr(wrapper, "env"):
            wrappers.append(wrapper)
            wrapper = wrapper.env
        # No random no-ops at reset; the score is counted by the Monitor under the life-loss wrapper (whole games).
        names = [type(wrapper).__name__ for wrapper in wrappers]
        assert "NoopResetEnv" not in names and "MaxAndSkipEnv" in names
        assert names.index("EpisodicLifeEnv") < names.index("Monitor")
        ale = env.envs[0].unwrapped.ale
        assert ale.getFloat("repeat_action_probability") == 0.0
        assert ale.getInt("max_num_frames_per_episode") == PROTOCOL["max_frames_per_game"]
    finally:
        env.close()


class StandStill:
    """A stand-in model that records how it is asked for actions and never moves (NOOP)."""

    num_timesteps = 1234

    def __init__(self) -> None:
        self.deterministic: set[bool] = set()

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        self.deterministic.add(deterministic)
        return np.zeros(len(observation), dtype=np.int64), None


def test_evaluation_plays_whole_games_with_sampled_actions():
    model = StandStill()
    result = evaluate_model(model, "PongNoFrameskip-v4", episodes=1, seed=0)
    # Actions are sampled (the paper's protocol), and a whole game is one episode: the opponent reaches 21 points.
    assert model.deterministic == {False}
    assert result["scores"] == [-21.0] and result["model_steps"] == 1234 and result["game"] == "Pong"
    assert result["lengths"][0] > 21 * 100  # frames


@pytest.mark.slow
def test_train_evaluate_and_report_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = TWM("CnnPolicy", "PongNoFrameskip-v4", seed=0, policy_kwargs=TINY_POLICY_KWARGS, **TINY_SCHEDULE_KWARGS)
    model.learn(220)
    run = tmp_path / "logs" / "twm" / "PongNoFrameskip-v4_1"
    run.mkdir(parents=True)
    model.save(run / "PongNoFrameskip-v4.zip")
    assert evaluate_main(["--folder", "logs", "--env", "PongNoFrameskip-v4", "--exp-id", "1", "--episodes", "2",
                          "--out", "results", "--no-progress-bar"]) == 0  # fmt: skip
    result = json.loads((tmp_path / "results" / "Pong_PongNoFrameskip-v4_1.json").read_text())
    assert result["model_steps"] == 220 and len(result["scores"]) == 2 and result["protocol"] == PROTOCOL
    # Full games of Pong: one side reaches 21 points.
    assert all(-21 <= score <= 21 for score in result["scores"]) and min(result["lengths"]) > 21 * 4
    # A second evaluation of the same run does not overwrite the first without being asked to.
    with pytest.raises(SystemExit):
        evaluate_main(["--folder", "logs", "--env", "PongNoFrameskip-v4", "--exp-id", "1", "--episodes", "1",
                       "--out", "results", "--no-progress-bar"])  # fmt: skip
    assert json.loads((tmp_path / "results" / "Pong_PongNoFrameskip-v4_1.json").read_text()) == result
    assert report_main(["results", "--out", "report", "--reps", "1000"]) == 0
    written = sorted(path.name for path in (tmp_path / "report").iterdir())
    assert written == ["aggregates.json", "aggregates.png", "games.csv", "games.png", "performance_profile.png",
                       "summary.md"]  # fmt: skip
    assert all((tmp_path / "report" / name).stat().st_size > 1000 for name in written if name.endswith(".png"))
