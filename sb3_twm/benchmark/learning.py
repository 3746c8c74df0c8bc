"""
Learning checks: TWM trained on a small Gymnasium task for a fixed number of env steps with tuned settings, evaluated
along the way, and judged by a threshold on the mean evaluation return (``learn-cartpole``, ``learn-pendulum``).

A check evaluates every ``--eval-freq`` env steps with SB3's ``evaluate_policy`` on a separate env, with greedy actions
(``deterministic=True``, SB3's default and rl-zoo3's for non-Atari envs; ``--criterion`` picks which evaluation
decides) and with sampled actions, prints a table, writes the curves as JSON and a PNG plot, and exits with status 1
when too few seeds reach the threshold within the time limit.
"""

import argparse
import concurrent.futures
import copy
import dataclasses
import functools
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, sync_envs_normalization

import sb3_twm
from sb3_twm import TWM
from sb3_twm.benchmark import diagnostics


@dataclasses.dataclass(frozen=True)
class LearningTask:
    """
    A learning check.

    :param name: Its benchmark command (``learn-cartpole``).
    :param env_id: The Gymnasium env.
    :param hyperparams: The tuned settings in the rl-zoo's layout (``policy``, ``n_timesteps``, ``normalize`` and
        TWM's keyword arguments).
    :param threshold: Mean evaluation return a seed must reach.
    :param min_successes: Seeds (of three by default) that must reach it.
    :param max_minutes: Training time limit per seed (evaluation excluded) on 2 CPU cores.
    :param return_range: The y range of the plot.
    :param hold_threshold: Mean of the last five evaluations a seed must also reach, so that a return that is reached
        and then lost does not count (None: not judged).
    :param eval_freq: Steps of the agent (``num_timesteps``) between evaluations.
    """

    name: str
    env_id: str
    hyperparams: dict[str, Any]
    threshold: float
    min_successes: int
    max_minutes: float
    return_range: tuple[float, float]
    hold_threshold: float | None = None
    eval_freq: int = 1000


def merge_hyperparams(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """
    :param base: Hyperparameters.
    :param overrides: Values replacing those of ``base``; dict values are merged key by key (one level deep).
    :return: A new dict.
    """
    merged = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **copy.deepcopy(value)}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def make_env(env_id: str, hyperparams: dict[str, Any]) -> VecEnv:
    """
    One env as the zoo makes it, with SB3's ``make_vec_env``: ``gym.make``, SB3's ``Monitor`` (so episode returns and
    lengths are the env's own, also under a frame skip), then the ``env_wrapper`` of the settings, if any.

    :param env_id: The Gymnasium env.
    :param hyperparams: Zoo-style settings (``env_wrapper``: one or a list of wrapper classes by import path, each
        optionally with its keyword arguments, read by rl-zoo3's ``get_wrapper_class``).
    :return: A ``DummyVecEnv`` of one env.
    """
    wrapper = None
    if hyperparams.get("env_wrapper") is not None:
        try:
            from rl_zoo3.utils import get_wrapper_class
        except ImportError as error:
            raise ImportError("env_wrapper is read as rl-zoo3 reads it: pip install 'sb3-twm[zoo]'.") from error
        wrapper = get_wrapper_class(hyperparams)
    return make_vec_env(env_id, n_envs=1, wrapper_class=wrapper)


def env_steps(env: VecEnv) -> int:
    """
    :param env: A vectorised env made by :func:`make_env` (or any whose envs have SB3's ``Monitor`` inside).
    :return: Steps of the underlying envs so far, all envs together: with a frame skip of ``k``, ``k`` per agent step.
    """
    return int(sum(env.env_method("get_total_steps")))


def make_model(env: gym.Env | str, seed: int | None, hyperparams: dict[str, Any], **kwargs: Any) -> TWM:
    """
    Build TWM with zoo-style hyperparameters (``policy``, ``n_timesteps`` and ``env_wrapper`` are taken out).

    :param env: The training env, or its id (made by :func:`make_env` with ``env_wrapper`` or ``normalize``, else by
        TWM).
    :param seed: Seed.
    :param hyperparams: Zoo-style settings (a ``LearningTask``'s).
    :param kwargs: More keyword arguments of ``TWM`` (``verbose``, ``device``, ...).
    :return: The model.
    """
    params = copy.deepcopy(hyperparams)
    policy = params.pop("policy", "MlpPolicy")
    params.pop("n_timesteps", None)
    params.pop("env_wrapper", None)
    normalize = params.pop("normalize", None)
    if isinstance(env, str) and (normalize or hyperparams.get("env_wrapper") is not None):
        env = make_env(env, hyperparams)  # else TWM makes it (e.g. with the paper's preprocessing for an Atari id)
    if normalize:
        # As the zoo does with `normalize`: the training env is wrapped in VecNormalize, TWM normalises what it samples.
        env = VecNormalize(env, **(normalize if isinstance(normalize, dict) else {}))
    return TWM(policy, env, seed=seed, **params, **kwargs)


def make_eval_env(env_id: str, seed: int, hyperparams: dict[str, Any]) -> VecEnv:
    """
    :param env_id: The Gymnasium env.
    :param seed: Seed of the evaluation env.
    :param hyperparams: Zoo-style settings: the env gets their ``env_wrapper``, and with ``normalize`` it is wrapped in
        a frozen ``VecNormalize`` whose statistics are copied from the training env before each evaluation.
    :return: The evaluation env.
    """
    eval_env: VecEnv = make_env(env_id, hyperparams)
    if hyperparams.get("normalize"):
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    eval_env.seed(seed)
    return eval_env


class EvalCurveCallback(BaseCallback):
    """
    Evaluates the policy every ``eval_freq`` env steps (and once before training) on a separate env and records the
    curve. Evaluation time is measured so that it can be kept out of the training time.

    :param eval_env: Evaluation env (wrapped in ``Monitor``, and in a frozen ``VecNormalize`` when training uses one).
    :param eval_freq: Env steps between evaluations.
    :param n_eval_episodes: Episodes per evaluation.
    :param verbose: 1 prints each evaluation.
    :param diagnose_episodes: With more than 0, each evaluation also records
        :func:`sb3_twm.benchmark.diagnostics.diagnose` on this many greedy episodes (under ``"diagnostics"``).
    :param env_id: The Gymnasium env (for the diagnostics).
    :param records_path: Append each evaluation's record to this JSON-lines file as it is made (None: keep them in
        memory only), so that a long run can be looked at, or a stopped one read, before it ends.
    """

    def __init__(
        self,
        eval_env: VecEnv,
        eval_freq: int,
        n_eval_episodes: int = 10,
        verbose: int = 0,
        diagnose_episodes: int = 0,
        env_id: str = "",
        records_path: str | None = None,
    ) -> None:
        super().__init__(verbose)
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.diagnose_episodes = diagnose_episodes
        self.env_id = env_id
        self.records_path = records_path
        self.records: list[dict[str, Any]] = []
        self.eval_seconds = 0.0
        self._start = 0.0

    def _evaluate(self) -> None:
        start = time.perf_counter()
        record: dict[str, Any] = {"step": int(self.num_timesteps), "env_steps": env_steps(self.training_env)}
        # The evaluation env uses the training env's observation statistics (a no-op without VecNormalize).
        sync_envs_normalization(self.training_env, self.eval_env)
        for prefix, deterministic in (("", False), ("deterministic_", True)):
            returns, _ = evaluate_policy(
                self.model, self.eval_env, self.n_eval_episodes, deterministic=deterministic, return_episode_rewards=True
            )
            record[f"{prefix}mean_return"] = float(np.mean(returns))
            record[f"{prefix}std_return"] = float(np.std(returns))
        if self.diagnose_episodes > 0:
            record["diagnostics"] = diagnostics.diagnose(self.model, self.eval_env, self.env_id, self.diagnose_episodes)
        self.eval_seconds += time.perf_counter() - start
        record["wall_s"] = time.perf_counter() - self._start - self.eval_seconds  # training time so far
        self.records.append(record)
        if self.records_path is not None:
            with open(self.records_path, "a") as file:
                file.write(json.dumps(record) + "\n")
        if self.verbose >= 1:
            print(
                f"  seed {self.model.seed} env step {record['env_steps']:>6}: mean return, greedy "
                f"{record['deterministic_mean_return']:6.1f} +- {record['deterministic_std_return']:5.1f}, "
                f"sampled {record['mean_return']:6.1f} +- {record['std_return']:5.1f}  (train time {record['wall_s']:.0f} s)",
                flush=True,
            )

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()
        self._evaluate()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq == 0:
            self._evaluate()
        return True


def run_seed(
    seed: int,
    timesteps: int,
    eval_freq: int,
    env_id: str,
    hyperparams: dict[str, Any],
    threshold: float,
    n_eval_episodes: int = 10,
    criterion: str = "deterministic",
    verbose: int = 1,
    diagnose_episodes: int = 0,
    records_path: str | None = None,
) -> dict[str, Any]:
    """
    Train one seed and evaluate it along the way, with greedy and with sampled actions.

    :param seed: Seed of the model (the evaluation env gets ``seed + 10000``).
    :param timesteps: Steps of the agent (``learn``'s ``total_timesteps``; with a frame skip of ``k`` in ``env_wrapper``,
        ``k`` env steps each).
    :param eval_freq: Steps of the agent between evaluations.
    :param env_id: The Gymnasium env.
    :param hyperparams: Zoo-style settings.
    :param threshold: Mean return that counts as reached.
    :param n_eval_episodes: Episodes per evaluation.
    :param verbose: 1 prints each evaluation.
    :param criterion: Which evaluation decides ``first_step_at_threshold``: ``"deterministic"`` (greedy actions, the
        default of SB3's ``evaluate_policy``/``EvalCallback`` and rl-zoo3's for non-Atari envs) or ``"sampled"``.
    :param diagnose_episodes: With more than 0, record :mod:`~sb3_twm.benchmark.diagnostics` at each evaluation on
        this many greedy episodes (``diagnostics`` in the result).
    :param records_path: Also append each evaluation's record to this JSON-lines file as it is made.
    :return: ``steps`` (the agent's) and ``env_steps`` (the env's own), ``mean_return``/``std_return`` (sampled
        actions), ``deterministic_mean_return``/``deterministic_std_return`` (greedy), ``train_wall_s`` at each
        evaluation, the total training and evaluation times, and ``first_step_at_threshold`` (in env steps, None if
        never).
    """
    if criterion not in ("deterministic", "sampled"):
        raise ValueError(f"criterion must be 'deterministic' or 'sampled', got {criterion!r}")
    eval_env = make_eval_env(env_id, seed + 10_000, hyperparams)
    model = make_model(env_id, seed, hyperparams, device="cpu")
    callback = EvalCurveCallback(eval_env, eval_freq, n_eval_episodes, verbose, diagnose_episodes, env_id, records_path)
    start = time.perf_counter()
    model.learn(timesteps, callback=callback)
    total = time.perf_counter() - start
    if not callback.records or callback.records[-1]["step"] != model.num_timesteps:
        callback._evaluate()
        total = time.perf_counter() - start
    eval_env.close()
    records = callback.records
    result: dict[str, Any] = {
        "seed": seed,
        "steps": [r["step"] for r in records],
        "env_steps": [r["env_steps"] for r in records],
        "train_wall_s": [round(r["wall_s"], 2) for r in records],
    }
    for key in records[0]:
        if key.endswith("_return"):
            result[key] = [r[key] for r in records]
    if diagnose_episodes > 0:
        result["diagnostics"] = [r["diagnostics"] for r in records]
    key = "deterministic_mean_return" if criterion == "deterministic" else "mean_return"
    reached = [r["env_steps"] for r in records if r[key] >= threshold]
    result.update(
        criterion=criterion,
        first_step_at_threshold=reached[0] if reached else None,
        best_mean_return=max(result[key]),
        final_mean_return=result[key][-1],
        # How well it holds: the mean of the last five evaluations, and the share of evaluations at the threshold.
        last_five_mean_return=float(np.mean(result[key][-5:])),
        share_at_threshold=len(reached) / len(records),
        training_seconds=round(total - callback.eval_seconds, 1),
        evaluation_seconds=round(callback.eval_seconds, 1),
        total_seconds=round(total, 1),
        training_updates=int(model._n_updates),
    )
    return result


def judge(result: dict[str, Any], hold_threshold: float | None, max_minutes: float) -> dict[str, bool]:
    """
    Whether one seed passes a check.

    :param result: What :func:`run_seed` returned.
    :param hold_threshold: Mean of the last five evaluations it must also reach (None: not judged).
    :param max_minutes: Its training time limit.
    :return: ``within_time``, ``holds`` and ``success`` (reached the threshold, holds, within time).
    """
    within_time = result["training_seconds"] <= max_minutes * 60
    holds = hold_threshold is None or result["last_five_mean_return"] >= hold_threshold
    reached = result["first_step_at_threshold"] is not None
    return {"within_time": within_time, "holds": holds, "success": reached and holds and within_time}


def _run_seed_with_records(seed: int, records_dir: str, **kwargs: Any) -> dict[str, Any]:
    # A module-level function, so that worker processes can unpickle it.
    path = os.path.join(records_dir, f"seed-{seed}-evaluations.jsonl")
    if os.path.exists(path):
        os.remove(path)
    return run_seed(seed, records_path=path, **kwargs)


def plot_curves(
    results: list[dict[str, Any]],
    path: str,
    threshold: float,
    title: str,
    return_range: tuple[float, float] | None,
    hold_threshold: float | None = None,
) -> None:
    """
    Write a PNG of mean evaluation return against env steps: per seed, greedy actions as a solid line with the std as
    a band, sampled actions dashed.

    :param results: What ``run_seed`` returned, per seed.
    :param path: PNG path.
    :param threshold: Drawn as a horizontal line.
    :param title: Plot title.
    :param return_range: The y range (None: matplotlib's).
    :param hold_threshold: Drawn as a second line, if any (the last five evaluations' mean must reach it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for result in results:
        steps = np.asarray(result["env_steps"])
        mean = np.asarray(result["deterministic_mean_return"])
        std = np.asarray(result["deterministic_std_return"])
        (line,) = axes.plot(steps, mean, marker="o", markersize=3, label=f"seed {result['seed']}, greedy actions")
        axes.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.12)
        axes.plot(steps, result["mean_return"], linestyle="--", color=line.get_color(), alpha=0.6,
                  label=f"seed {result['seed']}, sampled actions")  # fmt: skip
    axes.axhline(threshold, color="grey", linestyle=":", label=f"threshold {threshold:g}")
    if hold_threshold is not None:
        axes.axhline(hold_threshold, color="grey", linestyle="-.", label=f"to hold (mean of last 5) {hold_threshold:g}")
    axes.set_xlabel("env steps")
    axes.set_ylabel("mean evaluation return (10 episodes)")
    if return_range is not None:
        axes.set_ylim(*return_range)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def format_table(results: list[dict[str, Any]]) -> str:
    """
    :param results: What ``run_seed`` returned, per seed (same evaluation steps).
    :return: A text table: one row per evaluation (by the agent's step, with the env steps of the seeds there: under a
        frame skip they differ where episodes ended mid-skip), one column per seed (mean return with greedy / sampled
        actions), then the timings.
    """
    steps = sorted({step for result in results for step in result["steps"]})
    header = f"{'step':>7} | {'env steps':>11} | " + " | ".join(
        f"{'seed ' + str(r['seed']) + ' greedy/sampled':>22}" for r in results
    )
    lines = [header, "-" * len(header)]
    for step in steps:
        cells, env_steps_here = [], []
        for result in results:
            columns = zip(result["env_steps"], result["deterministic_mean_return"], result["mean_return"])
            at = dict(zip(result["steps"], columns))
            if step in at:
                env_step, greedy, sampled = at[step]
                env_steps_here.append(env_step)
                cells.append(f"{greedy:14.1f} / {sampled:5.1f}")
            else:
                cells.append(f"{'':22}")
        low, high = min(env_steps_here), max(env_steps_here)
        env_cell = f"{low}" if low == high else f"{low}-{high}"
        lines.append(f"{step:>7} | {env_cell:>11} | " + " | ".join(cells))
    lines.append("-" * len(header))
    for label, key, digits in (
        ("last 5", "last_five_mean_return", 1),
        ("train s", "training_seconds", 0),
        ("eval s", "evaluation_seconds", 0),
        ("total s", "total_seconds", 0),
    ):
        lines.append(f"{label:>7} | {'':>11} | " + " | ".join(f"{result[key]:22.{digits}f}" for result in results))
    lines.append(
        f"{'>=thr @':>7} | {'env step':>11} | "
        + " | ".join(f"{result['first_step_at_threshold'] or '-':>22}" for result in results)
    )
    return "\n".join(lines)


def zoo_yaml(hyperparams: dict[str, Any], env_id: str) -> str:
    """
    :param hyperparams: Zoo-style settings.
    :param env_id: The yml key.
    :return: The settings as an rl-zoo ``hyperparams/twm.yml`` entry (``policy_kwargs`` as a ``dict(...)`` string,
        which the zoo evaluates; other nested settings as YAML mappings).
    """
    params = copy.deepcopy(hyperparams)

    def scalar(value: Any) -> str:
        if isinstance(value, float):
            return repr(value) if "e" in repr(value) or value >= 1e4 or value != int(value) else f"{value:.1f}"
        return json.dumps(value)

    lines = [f"{env_id}:"]
    for key, value in params.items():
        if key == "policy_kwargs":
            inner = ", ".join(f"{k}={v!r}" for k, v in value.items())
            lines.append(f'  policy_kwargs: "dict({inner})"')
        elif isinstance(value, dict):
            lines.append(f"  {key}:")
            lines.extend(f"    {k}: {scalar(v)}" for k, v in value.items())
        else:
            lines.append(f"  {key}: {scalar(value)}")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser, task: LearningTask) -> None:
    """
    :param parser: The command's parser.
    :param task: The check whose defaults the options take.
    """
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds to run, one after another.")
    parser.add_argument("--env-id", default=task.env_id,
                        help="Train on another Gymnasium env with the same settings (for information: give it its "
                             "own --threshold; its plot takes matplotlib's range).")  # fmt: skip
    parser.add_argument("--timesteps", type=int, default=task.hyperparams["n_timesteps"],
                        help="Steps of the agent per seed (learn's total_timesteps; under a frame skip of k in "
                             "env_wrapper, k env steps each).")  # fmt: skip
    parser.add_argument("--eval-freq", type=int, default=task.eval_freq, help="Steps of the agent between evaluations.")
    parser.add_argument("--eval-episodes", type=int, default=10, help="Episodes per evaluation.")
    parser.add_argument("--criterion", choices=["deterministic", "sampled"], default="deterministic",
                        help="Which evaluation must reach the threshold: greedy actions (SB3's and the zoo's default "
                             "for non-Atari envs) or actions sampled from the policy. Both are always recorded.")  # fmt: skip
    parser.add_argument("--threshold", type=float, default=task.threshold, help="Mean return a seed must reach.")
    own_hold = "none" if task.hold_threshold is None else f"{task.hold_threshold:g}"
    parser.add_argument("--hold-threshold", type=float, default=None,
                        help=f"Mean of the last five evaluations a seed must also reach (default: the check's, "
                             f"{own_hold}; none with another --env-id).")  # fmt: skip
    parser.add_argument("--min-successes", type=int, default=task.min_successes,
                        help="Seeds that must succeed (reach the threshold, and the hold threshold if any).")  # fmt: skip
    parser.add_argument("--max-minutes", type=float, default=task.max_minutes,
                        help="Training time limit per seed (evaluation excluded); a slower seed fails.")  # fmt: skip
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch.set_num_threads: 1 is as fast for these small networks and does not slow down "
                             "badly when the cores are shared (2 threads on 2 busy cores: ~40x slower matmuls).")
    parser.add_argument("--workers", type=int, default=1,
                        help="Seeds trained at the same time, each in its own process with --torch-threads threads "
                             "(2 on a 2-core machine: one core per seed).")  # fmt: skip
    parser.add_argument("--output-dir", default=f"benchmark-results/{task.name}", help="Folder of the JSON and PNG.")
    parser.add_argument("--json", default=None, help="Path of the JSON results (default: OUTPUT_DIR/results.json).")
    parser.add_argument("--hyperparams", default=None,
                        help="JSON object of overrides of the tuned settings (nested dicts merge), e.g. "
                             "'{\"train_ratio\": 1.0, \"world_model_kwargs\": {\"num_layers\": 1}}'.")  # fmt: skip
    parser.add_argument("--print-yaml", action="store_true", help="Print the hyperparameters as a zoo yml entry, exit.")
    parser.add_argument("--diagnose", type=int, default=0, metavar="EPISODES",
                        help="At each evaluation, also play this many greedy episodes and record what the world "
                             "model and critic make of them and of the dataset's terminations (diagnostics.png).")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="Print only the summary.")


def run(args: argparse.Namespace, task: LearningTask) -> int:
    """
    :param args: The options of :func:`add_arguments`.
    :param task: The check.
    :return: 0 when enough seeds reached the threshold (and held the hold threshold, if any) in time, else 1.
    """
    hyperparams = merge_hyperparams(task.hyperparams, json.loads(args.hyperparams) if args.hyperparams else None)
    if args.hold_threshold is None and args.env_id == task.env_id:
        args.hold_threshold = task.hold_threshold
    if args.print_yaml:
        print(zoo_yaml(hyperparams, args.env_id), end="")
        return 0
    th.set_num_threads(args.torch_threads)
    os.makedirs(args.output_dir, exist_ok=True)
    json_path = args.json or os.path.join(args.output_dir, "results.json")
    png_path = os.path.join(args.output_dir, "curves.png")
    print(f"TWM {hyperparams['policy']} on {args.env_id}: seeds {args.seeds}, {args.timesteps} agent steps, evaluation "
          f"every {args.eval_freq} ({args.eval_episodes} episodes; criterion: {args.criterion} actions), torch threads "
          f"{th.get_num_threads()}", flush=True)  # fmt: skip

    train_seed = functools.partial(
        _run_seed_with_records,
        records_dir=args.output_dir,
        timesteps=args.timesteps,
        eval_freq=args.eval_freq,
        env_id=args.env_id,
        hyperparams=hyperparams,
        threshold=args.threshold,
        n_eval_episodes=args.eval_episodes,
        criterion=args.criterion,
        verbose=0 if args.quiet else 1,
        diagnose_episodes=args.diagnose,
    )
    pool = None
    if args.workers > 1:
        # One process per seed, each with its own torch threads: seeds then run side by side on separate cores.
        pool = concurrent.futures.ProcessPoolExecutor(
            args.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=th.set_num_threads,
            initargs=(args.torch_threads,),
        )
    outcomes: Iterator[dict[str, Any]] = (pool.map if pool else map)(train_seed, args.seeds)

    results = []
    for seed, result in zip(args.seeds, outcomes):
        result.update(judge(result, args.hold_threshold, args.max_minutes))
        results.append(result)
        print(f"seed {seed}: best {result['best_mean_return']:.1f}, reached {args.threshold:g} at "
              f"{result['first_step_at_threshold']}, mean of the last five {result['last_five_mean_return']:.1f}, "
              f"training {result['training_seconds']:.0f} s, "
              f"evaluation {result['evaluation_seconds']:.0f} s", flush=True)  # fmt: skip
        # Written after every seed, so a long run leaves partial results behind.
        successes = sum(r["success"] for r in results)
        summary = {
            "benchmark": task.name,
            "env_id": args.env_id,
            "sb3_twm_version": sb3_twm.__version__,
            "torch_version": th.__version__,
            "torch_threads": args.torch_threads,
            "workers": args.workers,
            "cpu_count": os.cpu_count(),
            "machine": platform.platform(),
            "timesteps": args.timesteps,
            "eval_freq": args.eval_freq,
            "eval_episodes": args.eval_episodes,
            "threshold": args.threshold,
            "hold_threshold": args.hold_threshold,
            "criterion": args.criterion,
            "min_successes": args.min_successes,
            "max_minutes": args.max_minutes,
            "hyperparams": hyperparams,
            "successes": successes,
            "passed": successes >= args.min_successes,
            "seeds": results,
        }
        with open(json_path, "w") as file:
            json.dump(summary, file, indent=2)
        title = f"TWM {hyperparams['policy']} on {args.env_id} ({len(results)} seed{'s' * (len(results) != 1)})"
        # Another env's returns have their own range.
        return_range = task.return_range if args.env_id == task.env_id else None
        plot_curves(results, png_path, args.threshold, title, return_range, args.hold_threshold)
        if args.diagnose > 0:
            diagnostics.plot_diagnostics(results, os.path.join(args.output_dir, "diagnostics.png"), title)

    if pool is not None:
        pool.shutdown()
    print()
    print(format_table(results))
    print()
    hold = "" if args.hold_threshold is None else f" and held a mean of {args.hold_threshold:g} over the last five"
    max_env_steps = max(result["env_steps"][-1] for result in results)
    print(f"{successes}/{len(results)} seeds reached a mean return of {args.threshold:g}{hold} within "
          f"{max_env_steps} env steps ({args.timesteps} agent steps) and {args.max_minutes:g} min of training (need "
          f"{args.min_successes}): {'PASSED' if summary['passed'] else 'FAILED'}")  # fmt: skip
    print(f"results: {json_path}\nplot: {png_path}")
    return 0 if summary["passed"] else 1
