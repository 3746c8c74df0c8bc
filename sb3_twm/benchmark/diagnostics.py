"""
What the world model and the actor-critic make of real play, recorded along a learning check (``python -m
sb3_twm.benchmark learn-cartpole --diagnose``): at each evaluation, greedy episodes are played on the evaluation env
and passed through the networks, teacher-forced, and the dataset's terminal steps are scored too.

Per evaluation it records how the episodes ended, the termination probability the dynamics model gives the real
terminal steps (of the episodes and of the dataset, by cause for CartPole) and the largest one it gives a step that
went on, its reward error, the critic's values against the real discounted returns (overall and over the last steps
before a termination, and how well their ranking follows the returns: a correlation), the decoder's error on the
greedy latents per observation feature (in the observation's units) and of imagination rolled a horizon ahead with
the played actions, and the entropies of the latent and of the actor.
``plot_diagnostics`` draws them against env steps next to the return curve; ``python -m sb3_twm.benchmark.diagnostics
OUTPUT_DIR`` draws them from the records a check writes as it goes (``seed-N-evaluations.jsonl``), also while it runs.
"""

import argparse
import glob
import json
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize

from sb3_twm.common.distributions import categorical_entropy
from sb3_twm.common.type_aliases import ImaginationStart
from sb3_twm.world_model.imagination import imagine

# CartPole-v1 terminates when the cart leaves +-2.4 or the pole leans beyond 12 degrees (gymnasium's CartPoleEnv).
CARTPOLE_X_LIMIT = 2.4
CARTPOLE_ANGLE_LIMIT = 12 * 2 * np.pi / 360
# One colour per way an episode ended, the same in every panel and seed.
CAUSE_COLORS = {"cart off track": "tab:blue", "pole fell": "tab:orange", "truncated": "tab:green", "terminated": "tab:red"}
# Steps before a termination over which the critic's anticipation is measured.
FINAL_STEPS = 20
# Vector observations up to this many features get a reconstruction error per feature.
MAX_VECTOR_FEATURES = 16
# Steps between the starts of the open-loop imagination checks.
OPEN_LOOP_STRIDE = 10
# CartPole-v1's observation features (gymnasium's CartPoleEnv), for the plot's legend.
CARTPOLE_FEATURES = ("cart position", "cart velocity", "pole angle", "pole angular velocity")


def termination_cause(env_id: str, observation: np.ndarray) -> str:
    """
    :param env_id: The Gymnasium env.
    :param observation: The original (unnormalised) observation at or just before the termination.
    :return: ``"cart off track"`` or ``"pole fell"`` for CartPole (whichever limit the state is nearer to, relative
        to the limit), ``"terminated"`` for other envs.
    """
    if not env_id.startswith("CartPole"):
        return "terminated"
    position, angle = abs(float(observation[0])), abs(float(observation[2]))
    return "cart off track" if position / CARTPOLE_X_LIMIT >= angle / CARTPOLE_ANGLE_LIMIT else "pole fell"


def play_episodes(model: Any, eval_env: VecEnv, n_episodes: int, deterministic: bool = True) -> list[dict[str, Any]]:
    """
    Play whole episodes with the model's policy on a one-env evaluation env.

    :param model: A TWM model.
    :param eval_env: Evaluation env (one env, possibly in a frozen ``VecNormalize``).
    :param n_episodes: Episodes.
    :param deterministic: Greedy actions.
    :return: Per episode, the original observations ``(S, *obs_shape)``, actions, rewards, whether it terminated
        (rather than being truncated) and its terminal original observation.
    """
    vec_normalize = unwrap_vec_normalize(eval_env)
    episodes = []
    observation = eval_env.reset()
    for _ in range(n_episodes):
        observations, actions, rewards = [], [], []
        while True:
            original = vec_normalize.get_original_obs() if vec_normalize is not None else observation
            action, _ = model.predict(observation, deterministic=deterministic)
            next_observation, reward, done, infos = eval_env.step(action)
            observations.append(np.asarray(original[0]))
            actions.append(np.asarray(action[0]))
            reward_value = vec_normalize.get_original_reward()[0] if vec_normalize is not None else reward[0]
            rewards.append(float(reward_value))
            observation = next_observation
            if done[0]:
                info = infos[0]
                terminal = np.asarray(info["terminal_observation"])
                if vec_normalize is not None:
                    terminal = vec_normalize.unnormalize_obs(terminal)
                episodes.append({
                    "observations": np.stack(observations),
                    "actions": np.stack(actions),
                    "rewards": np.asarray(rewards, dtype=np.float32),
                    "terminated": not info.get("TimeLimit.truncated", False),
                    "terminal_observation": terminal,
                })  # fmt: skip
                break
    return episodes


@th.no_grad()
def _score_sequences(model: Any, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> dict[str, Any]:
    # observations: (B, S, *obs_shape) original; actions: (B, S) or (B, S, A); rewards: (B, S) raw. No dones inside.
    buffer = model.replay_buffer
    features = buffer.observation_features(observations, model._vec_normalize_env)
    encoder = model.policy.encoder
    logits = encoder(features)  # (B, S, K, C)
    z = encoder.latent(features, temperature=0.0)  # (B, S, K*C)
    transformed = buffer.training_rewards(rewards, model._vec_normalize_env)
    dynamics = model.world_model.dynamics_model
    was_training = dynamics.training
    dynamics.eval()
    prediction = dynamics(
        z, buffer.action_tensor(actions), transformed[:, :-1], th.zeros_like(transformed[:, :-1], dtype=th.bool)
    )
    dynamics.train(was_training)
    continue_probability = prediction.discount_logits.float().sigmoid() / model.gamma  # (B, S)
    actor_logits = model.policy.actor(z)
    distribution = model.policy.action_distribution
    reconstructions = model.world_model.observation_model.decoder(z)
    return {
        "z": z,
        "reconstruction_error": (reconstructions.float() - features).abs(),  # (B, S, *obs_shape), in feature units
        "transformed_rewards": transformed,
        "termination_probability": (1.0 - continue_probability).clamp(0.0, 1.0),
        "reward_error": (prediction.reward.float() - transformed).abs(),
        "values": model.critic(z).squeeze(-1).float(),
        "latent_entropy": categorical_entropy(logits) / np.log(logits.shape[-1]),  # (B, S, K)
        "actor_entropy": distribution.normalized_entropy(actor_logits),
    }


def errors_by_feature(model: Any, errors: np.ndarray, env_id: str) -> dict[str, float]:
    """
    :param model: A TWM model.
    :param errors: ``(N, F)`` absolute errors of decoded latents, in the networks' feature units (normalised
        observations).
    :param env_id: The Gymnasium env (CartPole's features are named).
    :return: For vector observations of at most ``MAX_VECTOR_FEATURES`` features, the mean error of each feature in
        the observation's own units (VecNormalize's scaling undone, its clipping ignored), by feature name; otherwise
        one mean over all features (``"all features"``), in feature units.
    """
    if len(model.observation_space.shape) != 1 or errors.shape[1] > MAX_VECTOR_FEATURES:
        return {"all features": float(errors.mean())}
    scale = np.ones(errors.shape[1])
    vec_normalize = model._vec_normalize_env
    if vec_normalize is not None and vec_normalize.norm_obs:
        scale = np.sqrt(vec_normalize.obs_rms.var + vec_normalize.epsilon)
    named = env_id.startswith("CartPole") and errors.shape[1] == len(CARTPOLE_FEATURES)
    names = CARTPOLE_FEATURES if named else tuple(f"feature {index}" for index in range(errors.shape[1]))
    return {name: float(value) for name, value in zip(names, errors.mean(0) * scale)}


@th.no_grad()
def open_loop_errors(
    model: Any, episodes: list[dict[str, Any]], env_id: str, stride: int = OPEN_LOOP_STRIDE
) -> dict[str, dict[str, float]] | None:
    """
    What imagination makes of the played actions: from the most likely latent of every ``stride``-th state of the
    episodes, the dynamics model is rolled ``imagination_horizon`` steps ahead with the actions that were really taken
    (as training imagines: the step before as context, sampled latents, its own rewards fed back, no restarts), and the
    latents it reaches are decoded and compared with the real observations that far ahead, and with the decoded
    latents of those observations (so that the latent's own coarseness is told from the dynamics model's error).
    Draws from a generator of its own.

    :param model: A TWM model.
    :param episodes: What :func:`play_episodes` returned.
    :param env_id: The Gymnasium env (for the feature names).
    :param stride: Steps between starts.
    :return: By feature as :func:`errors_by_feature` gives them, against the real observation ``horizon``
        steps ahead: ``model``, the decoded imagined state's error; ``most likely latents``, the same when each next
        latent is the most likely one instead of a sample (how much of it is the sampling's); ``no change``, the error
        of predicting that the observation stays as it was at the start (how far the state really moved); ``decoder``,
        the error of the decoded latent of the real observation (the latent's resolution there). In the latent's own
        terms, against that decoded real latent: ``model vs latent``, the decoded imagined state's error, and ``latent
        no change``, how far the decoded latents moved. None when no episode is longer than the horizon plus one.
    """
    horizon = model.imagination_horizon
    buffer = model.replay_buffer
    encoder = model.policy.encoder
    context_z, context_actions, context_rewards, start_z, actions = [], [], [], [], []
    start_features, real_features, real_z = [], [], []
    for episode in episodes:
        length = len(episode["rewards"])
        if length < horizon + 2:
            continue
        features = buffer.observation_features(episode["observations"], model._vec_normalize_env)  # (S, F)
        z = encoder.latent(features, temperature=0.0)  # (S, K*C)
        episode_actions = buffer.action_tensor(episode["actions"])
        rewards = buffer.training_rewards(episode["rewards"], model._vec_normalize_env)
        for start in range(1, length - horizon, stride):
            context_z.append(z[start - 1])
            context_actions.append(episode_actions[start - 1])
            context_rewards.append(rewards[start - 1])
            start_z.append(z[start])
            actions.append(episode_actions[start : start + horizon])
            start_features.append(features[start])
            real_features.append(features[start + horizon])
            real_z.append(z[start + horizon])
    if not start_z:
        return None
    start = ImaginationStart(
        th.stack(context_z),
        th.stack(context_actions),
        th.stack(context_rewards),
        th.zeros(len(start_z), dtype=th.bool, device=buffer.device),
        th.stack(start_z),
    )
    planned = th.stack(actions)  # (N, H) or (N, H, A)

    def replay_actions() -> Callable[[th.Tensor], th.Tensor]:
        steps = iter(range(horizon))
        return lambda _: planned[:, next(steps)]  # imagination asks once per step, in order

    def no_restart(count: int) -> th.Tensor:
        raise AssertionError("a discount threshold of 0 never restarts")

    decoder = model.world_model.observation_model.decoder

    def imagined_state(temperature: float) -> th.Tensor:
        # The decoded latent imagination reaches after the horizon: (N, F).
        with th.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            th.manual_seed(0)
            trajectories = imagine(
                model.world_model.dynamics_model, start, replay_actions(), horizon, 0.0, no_restart, temperature
            )
        return decoder(trajectories.z[:, -1]).float().flatten(1)

    def by_feature(predicted: th.Tensor, target: th.Tensor) -> dict[str, float]:
        return errors_by_feature(model, (predicted - target).abs().cpu().numpy(), env_id)

    real, initial = th.stack(real_features).flatten(1), th.stack(start_features).flatten(1)
    decoded_real = decoder(th.stack(real_z)).float().flatten(1)
    decoded_start = decoder(start.z).float().flatten(1)
    sampled, most_likely = imagined_state(1.0), imagined_state(0.0)
    return {
        "no change": by_feature(initial, real),
        "decoder": by_feature(decoded_real, real),
        "latent no change": by_feature(decoded_start, decoded_real),
        "model": by_feature(sampled, real),
        "most likely latents": by_feature(most_likely, real),
        "model vs latent": by_feature(sampled, decoded_real),
    }


def episode_diagnostics(model: Any, episodes: list[dict[str, Any]], env_id: str) -> dict[str, Any]:
    """
    Pass played episodes through the networks.

    :param model: A TWM model.
    :param episodes: What :func:`play_episodes` returned.
    :param env_id: The Gymnasium env (for the termination causes).
    :return: Means over the episodes (see the module docstring); None where no episode terminated.
    """
    causes: dict[str, int] = {}
    terminal_probabilities, false_alarms, reward_errors, latent, actor = [], [], [], [], []
    value_errors, final_value_errors, final_values, final_returns = [], [], [], []
    all_values, all_returns, reconstruction_errors = [], [], []
    for episode in episodes:
        scores = _score_sequences(model, episode["observations"][None], episode["actions"][None], episode["rewards"][None])
        termination = scores["termination_probability"][0].numpy()
        values = scores["values"][0].numpy()
        rewards = scores["transformed_rewards"][0].numpy()
        # Real discounted returns; a truncated episode bootstraps from the critic's last value.
        returns = np.zeros_like(rewards)
        following = 0.0 if episode["terminated"] else float(values[-1])
        for t in reversed(range(len(rewards))):
            following = rewards[t] + model.gamma * following
            returns[t] = following
        value_errors.append(float(np.mean(values - returns)))
        all_values.append(values)
        all_returns.append(returns)
        reconstruction_errors.append(scores["reconstruction_error"][0].flatten(1).numpy())  # (S, features)
        reward_errors.append(float(scores["reward_error"].mean()))
        latent.append(float(scores["latent_entropy"].mean()))
        actor.append(float(scores["actor_entropy"].mean()))
        if episode["terminated"]:
            cause = termination_cause(env_id, episode["terminal_observation"])
            terminal_probabilities.append(float(termination[-1]))
            final = slice(max(0, len(values) - FINAL_STEPS), None)
            final_value_errors.append(float(np.mean(values[final] - returns[final])))
            final_values.append(float(np.mean(values[final])))
            final_returns.append(float(np.mean(returns[final])))
        else:
            cause = "truncated"
        causes[cause] = causes.get(cause, 0) + 1
        if len(termination) > 1:
            false_alarms.append(float(termination[:-1].max()))

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    values_pooled, returns_pooled = np.concatenate(all_values), np.concatenate(all_returns)
    # Whether the critic ranks states as their real returns do (not just their mean level): None when the returns do
    # not vary (e.g. every episode truncated at the same length with flat values).
    ranking = None
    if values_pooled.std() > 0 and returns_pooled.std() > 0:
        ranking = float(np.corrcoef(values_pooled, returns_pooled)[0, 1])

    return {
        "episode_lengths": [len(episode["rewards"]) for episode in episodes],
        "causes": causes,
        "episode_terminal_probability": mean(terminal_probabilities),
        "episode_max_false_termination": mean(false_alarms),
        "reward_error": mean(reward_errors),
        "value_error": mean(value_errors),
        "final_value_error": mean(final_value_errors),
        "final_value": mean(final_values),
        "final_return": mean(final_returns),
        "value_return_correlation": ranking,
        "reconstruction_error": errors_by_feature(model, np.concatenate(reconstruction_errors), env_id),
        "latent_entropy": mean(latent),
        "actor_entropy": mean(actor),
    }


def dataset_diagnostics(model: Any, env_id: str, window: int = 16, max_terminals: int = 256) -> dict[str, Any]:
    """
    Score the dataset's real terminations: each terminal step, with the ``window - 1`` steps before it of its episode
    as context, is passed through the dynamics model.

    :param model: A TWM model (one env).
    :param env_id: The Gymnasium env (for the termination causes).
    :param window: Steps per scored sequence.
    :param max_terminals: At most this many of the newest terminal steps are scored.
    :return: Per cause, how many terminations the dataset holds (``counts``, and ``recent_counts`` among the newest
        1,000 steps) and the mean termination probability the dynamics model gives them (``terminal_probability``).
    """
    buffer = model.replay_buffer
    size = buffer.size()
    if buffer.n_envs != 1 or buffer.full:
        raise ValueError("dataset_diagnostics reads one env's dataset that has not wrapped around.")
    terminated = buffer.terminated[:size, 0]
    dones = terminated | buffer.truncated[:size, 0]
    counts: dict[str, int] = {}
    recent_counts: dict[str, int] = {}
    scored: dict[str, list[float]] = {}
    indices = np.flatnonzero(terminated)
    causes = [termination_cause(env_id, buffer.observations[index, 0]) for index in indices]
    for index, cause in zip(indices, causes):
        counts[cause] = counts.get(cause, 0) + 1
        if index >= size - 1000:
            recent_counts[cause] = recent_counts.get(cause, 0) + 1
    for index, cause in zip(indices[-max_terminals:], causes[-max_terminals:]):
        start = max(0, index - window + 1)
        # The context starts after the previous episode's end.
        earlier_dones = np.flatnonzero(dones[start:index])
        if len(earlier_dones):
            start += int(earlier_dones[-1]) + 1
        steps = slice(start, index + 1)
        scores = _score_sequences(
            model, buffer.observations[steps, 0][None], buffer.actions[steps, 0][None], buffer.rewards[steps, 0][None]
        )
        scored.setdefault(cause, []).append(float(scores["termination_probability"][0, -1]))
    return {
        "counts": counts,
        "recent_counts": recent_counts,
        "terminal_probability": {cause: float(np.mean(values)) for cause, values in scored.items()},
    }


EMPTY_DATASET_DIAGNOSTICS: dict[str, Any] = {"counts": {}, "recent_counts": {}, "terminal_probability": {}}


def diagnose(model: Any, eval_env: VecEnv, env_id: str, n_episodes: int) -> dict[str, Any]:
    """
    :param model: A TWM model.
    :param eval_env: Evaluation env (its normalisation synchronised with the training env's).
    :param env_id: The Gymnasium env.
    :param n_episodes: Greedy episodes to play.
    :return: :func:`episode_diagnostics` of fresh greedy episodes, :func:`open_loop_errors` of them under
        ``"open_loop_error"``, :func:`dataset_diagnostics` under ``"dataset"`` (empty for several envs or a dataset
        that has wrapped around), and
        under ``"training"`` the means of the training metrics since SB3 last wrote its logs (a few episodes: imagined
        returns and values, losses, entropies).
    """
    episodes = play_episodes(model, eval_env, n_episodes, deterministic=True)
    result = episode_diagnostics(model, episodes, env_id)
    result["open_loop_error"] = open_loop_errors(model, episodes, env_id)
    buffer = model.replay_buffer
    # The dataset's terminations are scored where they lie in time order: one env, not wrapped around.
    readable = buffer.n_envs == 1 and not buffer.full
    result["dataset"] = dataset_diagnostics(model, env_id) if readable else EMPTY_DATASET_DIAGNOSTICS
    result["training"] = model._metrics.means()
    return result


def plot_diagnostics(results: list[dict[str, Any]], path: str, title: str) -> None:
    """
    Write a PNG with one column per seed: the greedy return with how the episodes ended, the termination
    probabilities given to real terminal steps (and the largest given to steps that went on), the critic against the
    real returns before terminations, and the entropies.

    :param results: ``run_seed`` results with ``diagnostics`` per evaluation.
    :param path: PNG path.
    :param title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 6
    figure, axes = plt.subplots(rows, len(results), figsize=(5.5 * len(results), 2.6 * rows), squeeze=False)
    for column, result in enumerate(results):
        steps = np.asarray(result["env_steps"])
        records = result["diagnostics"]

        def series(key: str, records: list[dict[str, Any]] = records) -> np.ndarray:
            return np.asarray([np.nan if record.get(key) is None else record[key] for record in records], dtype=float)

        axis = axes[0, column]
        axis.plot(steps, result["deterministic_mean_return"], color="black", marker="o", markersize=3,
                  label="greedy return")  # fmt: skip
        causes = sorted({cause for record in records for cause in record["causes"]})
        twin = axis.twinx()
        for cause in causes:
            share = [record["causes"].get(cause, 0) / max(1, sum(record["causes"].values())) for record in records]
            twin.plot(steps, share, linestyle="--", color=CAUSE_COLORS.get(cause), label=f"share: {cause}")
        twin.set_ylim(-0.05, 1.05)
        twin.set_ylabel("share of episodes")
        axis.set_ylabel("return")
        axis.set_title(f"seed {result['seed']}: evaluation (greedy)")
        lines = axis.get_legend_handles_labels()
        twin_lines = twin.get_legend_handles_labels()
        axis.legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], fontsize=7, loc="center right")

        axis = axes[1, column]
        axis.plot(steps, series("episode_terminal_probability"), color="black", marker="o", markersize=3,
                  label="eval episodes: real terminal step")  # fmt: skip
        dataset_causes = sorted({cause for record in records for cause in record["dataset"]["terminal_probability"]})
        for cause in dataset_causes:
            values = [record["dataset"]["terminal_probability"].get(cause, np.nan) for record in records]
            axis.plot(steps, values, linestyle="--", color=CAUSE_COLORS.get(cause), label=f"dataset: {cause}")
        axis.plot(steps, series("episode_max_false_termination"), color="grey", linestyle=":",
                  label="eval episodes: max over steps that went on")  # fmt: skip
        axis.set_ylim(-0.05, 1.05)
        axis.set_ylabel("P(termination)")
        axis.set_title("dynamics model: predicted termination")
        axis.legend(fontsize=7)

        axis = axes[2, column]
        axis.plot(steps, series("final_value"), marker="o", markersize=3,
                  label=f"critic value, last {FINAL_STEPS} steps before termination")  # fmt: skip
        axis.plot(steps, series("final_return"), marker="x", markersize=3, label="real return there")
        axis.plot(steps, series("value_error"), color="grey", linestyle=":", label="mean value - return, all steps")
        imagined = [record.get("training", {}).get("actor_critic/return", np.nan) for record in records]
        axis.plot(
            steps, imagined, color="tab:green", marker=".", alpha=0.7, label="imagined lambda-return at the start (training)"
        )
        axis.set_ylabel("value (transformed rewards)")
        axis.set_title("critic vs real discounted returns")
        axis.legend(fontsize=7)

        axis = axes[3, column]
        axis.plot(steps, series("latent_entropy"), label="latent (encoder) entropy / ln C")
        axis.plot(steps, series("actor_entropy"), label="actor entropy (normalised)")
        axis.set_ylim(-0.05, 1.05)
        axis.set_title("entropies on evaluation states")
        axis.legend(fontsize=7)

        axis = axes[4, column]
        errors = [record.get("reconstruction_error") or {} for record in records]
        for name in dict.fromkeys(name for error in errors for name in error):  # in the records' order
            axis.plot(steps, [error.get(name, np.nan) for error in errors], marker=".", label=name)
        axis.set_ylabel("mean |decoded - real|")
        axis.set_title("decoder on greedy latents (observation units); critic's ranking")
        twin = axis.twinx()
        twin.plot(steps, series("value_return_correlation"), color="black", linestyle="--",
                  label="corr(critic value, real return)")  # fmt: skip
        twin.set_ylim(-1.05, 1.05)
        lines, twin_lines = axis.get_legend_handles_labels(), twin.get_legend_handles_labels()
        axis.legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], fontsize=7)

        axis = axes[5, column]
        open_loop = [record.get("open_loop_error") or {} for record in records]
        names = dict.fromkeys(name for errors in open_loop for name in errors.get("model", {}))

        def ratio(errors: dict[str, dict[str, float]], kind: str, baseline_kind: str, name: str) -> float:
            baseline = errors.get(baseline_kind, {}).get(name, np.nan)
            return errors.get(kind, {}).get(name, np.nan) / baseline if baseline else np.nan

        for index, name in enumerate(names):
            axis.plot(steps, [ratio(errors, "model vs latent", "latent no change", name) for errors in open_loop],
                      marker=".", color=f"C{index}", label=f"{name}")  # fmt: skip
            axis.plot(steps, [ratio(errors, "model", "no change", name) for errors in open_loop], linestyle="--",
                      color=f"C{index}", alpha=0.7)  # fmt: skip
        axis.axhline(1.0, color="grey", linestyle=":", label="no better than predicting no change")
        axis.set_yscale("log")
        axis.set_ylabel("error / no-change error")
        axis.set_title("imagination a horizon ahead with the played actions\n"
                       "(solid: vs the decoded real latents, dashed: vs the real states)")  # fmt: skip
        axis.legend(fontsize=6)
        axis.set_xlabel("env steps")
        for row in range(rows):
            axes[row, column].grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def results_from_records(paths: list[str]) -> list[dict[str, Any]]:
    """
    :param paths: ``seed-N-evaluations.jsonl`` files written by a learning check with ``--diagnose``.
    :return: Per seed, the curves in ``run_seed``'s layout (``seed``, ``steps``, ``env_steps``, the returns and
        ``diagnostics``).
    """
    results = []
    for path in sorted(paths):
        match = re.search(r"seed-(-?\d+)-evaluations\.jsonl$", path)
        with open(path) as file:
            records = [json.loads(line) for line in file if line.strip()]
        if not records or "diagnostics" not in records[0]:
            continue
        result: dict[str, Any] = {"seed": int(match.group(1)) if match else len(results)}
        result["steps"] = [record["step"] for record in records]
        # Records written before env steps were recorded come from runs without a frame skip: the same count.
        result["env_steps"] = [record.get("env_steps", record["step"]) for record in records]
        for key in ("deterministic_mean_return", "mean_return"):
            result[key] = [record[key] for record in records]
        result["diagnostics"] = [record["diagnostics"] for record in records]
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    """
    Plot the diagnostics of a learning check's output folder.

    :param argv: The arguments (default: ``sys.argv[1:]``).
    :return: The exit status.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("output_dir", help="The check's --output-dir (it holds seed-N-evaluations.jsonl).")
    parser.add_argument("--png", default=None, help="Plot path (default: OUTPUT_DIR/diagnostics.png).")
    args = parser.parse_args(argv)
    results = results_from_records(glob.glob(os.path.join(args.output_dir, "seed-*-evaluations.jsonl")))
    if not results:
        parser.error(f"no records with diagnostics in {args.output_dir} (run the check with --diagnose EPISODES)")
    path = args.png or os.path.join(args.output_dir, "diagnostics.png")
    plot_diagnostics(results, path, f"{args.output_dir}: {len(results)} seed(s)")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
