"""
Optuna search space of TWM for ``python -m rl_zoo3.train --algo twm -optimize``.

The search is anchored at the configuration being tuned (the zoo's hyperparameters for the env, ``-params`` included;
TWM's defaults where no configuration is known): learning rates, entropy coefficients and thresholds, the imagination
horizon, the discount threshold and the buffer temperature are sampled in fixed ranges; batch sizes and model sizes are
sampled between half and twice the configured value (within fixed sane bounds), so tuning a small configuration stays
small. Every trial parameter is the absolute value that was used, and ``convert_twm_params`` turns trial parameters
back into TWM keyword arguments (``--storage ... --study-name ... --trial-id N``), merged into the configured
``world_model_kwargs``, ``policy_kwargs`` and ``critic_optimizer_kwargs``.
"""

import contextvars
import inspect
from typing import Any

from sb3_twm.twm.policies import DEFAULT_NET_ARCH, TWMPolicy
from sb3_twm.twm.twm import TWM
from sb3_twm.world_model import world_model_defaults

__all__ = ["as_kwargs_dict", "convert_twm_params", "sample_twm_params"]

# The configuration a zoo trial starts from; set by the ExperimentManager patch of sb3_twm.zoo around the zoo's
# objective (the zoo passes the sampler no hyperparameters).
BASE_HYPERPARAMS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("twm_base_hyperparams", default=None)

# Fixed bounds of the anchored size parameters: (low, high).
SIZE_BOUNDS: dict[str, tuple[int, int]] = {
    "batch_size": (2, 256),
    "imagination_batch_size": (4, 1024),
    "embed_dim": (16, 512),
    "num_layers": (1, 12),
    "actor_critic_width": (16, 1024),
    "cnn_channels": (4, 96),
}
MAX_IMAGINATION_HORIZON = 20
# Values per dimension of Box actions: odd (0 is one of them), from a coarse 5 to a fine 21.
MIN_ACTION_BINS, MAX_ACTION_BINS = 5, 21


def _twm_default(name: str) -> Any:
    return inspect.signature(TWM.__init__).parameters[name].default


def _policy_default(name: str) -> Any:
    return inspect.signature(TWMPolicy.__init__).parameters[name].default


def as_kwargs_dict(value: Any) -> dict[str, Any]:
    """
    A kwargs entry of the zoo's configuration as a dict.

    :param value: None, a dict, or a string the zoo would ``eval`` (as it does for ``policy_kwargs`` in
        ``ExperimentManager._preprocess_hyperparams``, in the namespace of ``rl_zoo3.exp_manager``).
    :return: The keyword arguments.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        from rl_zoo3 import exp_manager  # the namespace the zoo evaluates these strings in

        value = eval(value, vars(exp_manager))
    return dict(value)


def _is_cnn(policy: Any) -> bool:
    if isinstance(policy, str):
        return "cnn" in policy.lower()
    return isinstance(policy, type) and issubclass(policy, TWMPolicy) and policy.observation_architecture == "cnn"


def _net_arch_width(net_arch: Any) -> int:
    # The widest hidden layer of the actor and critic (the policy's defaults where net_arch gives none).
    if net_arch is None:
        return max(DEFAULT_NET_ARCH)
    if isinstance(net_arch, dict):
        return max([*net_arch.get("pi", DEFAULT_NET_ARCH), *net_arch.get("vf", DEFAULT_NET_ARCH)])
    return max(net_arch, default=max(DEFAULT_NET_ARCH))


def _scale_net_arch(net_arch: Any, scale: float) -> Any:
    def scaled(layers: list[int]) -> list[int]:
        return [max(1, round(width * scale)) for width in layers]

    if net_arch is None:
        return scaled(list(DEFAULT_NET_ARCH))
    if isinstance(net_arch, dict):
        return {key: scaled(list(value)) for key, value in net_arch.items()}
    return scaled(list(net_arch))


def _around(name: str, value: int, high_limit: int | None = None) -> tuple[int, int]:
    """Range ``[value / 2, 2 * value]`` clipped to ``SIZE_BOUNDS[name]`` (and ``high_limit``)."""
    low_bound, high_bound = SIZE_BOUNDS[name]
    if high_limit is not None:
        high_bound = min(high_bound, high_limit)
    high = max(1, min(high_bound, 2 * int(value)))
    low = min(high, max(low_bound, int(value) // 2))
    return low, high


def _base_hyperparams(additional_args: dict[str, Any] | None) -> dict[str, Any]:
    base = (additional_args or {}).get("hyperparams")
    if base is None:
        base = BASE_HYPERPARAMS.get()
    return dict(base or {})


def sample_twm_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Sample TWM hyperparameters (rl-zoo3 sampler signature).

    :param trial: The Optuna trial.
    :param n_actions: The zoo's count of continuous action dimensions (0 for Discrete actions): with Box actions the
        values per dimension (``policy_kwargs["action_bins"]``, odd) are searched too.
    :param n_envs: Number of training envs (bounds ``batch_size`` by the sequences the random prefill holds).
    :param additional_args: The zoo's extra arguments; ``additional_args["hyperparams"]``, if given, is the
        configuration to anchor the search at (otherwise the one the zoo is tuning, else TWM's defaults).
    :return: Keyword arguments for ``TWM`` (nested dicts merged into the configured ones).
    """
    base = _base_hyperparams(additional_args)
    world_model_kwargs = {**world_model_defaults(), **as_kwargs_dict(base.get("world_model_kwargs"))}
    policy_kwargs = as_kwargs_dict(base.get("policy_kwargs"))
    sequence_length = int(base.get("sequence_length", _twm_default("sequence_length")))
    per_env_prefill = int(base.get("learning_starts", _twm_default("learning_starts"))) // max(int(n_envs), 1)

    trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
    trial.suggest_float("critic_lr", 1e-6, 3e-4, log=True)
    trial.suggest_float("ent_coef", 1e-4, 0.1, log=True)
    trial.suggest_float("entropy_threshold", 0.0, 0.5)
    trial.suggest_float("latent_entropy_coef", 0.5, 20.0, log=True)
    trial.suggest_float("latent_entropy_threshold", 0.0, 0.3)
    trial.suggest_float("discount_threshold", 0.01, 0.3, log=True)
    trial.suggest_float("buffer_temperature", 1.0, 100.0, log=True)
    # Pretraining the actor-critic needs sequences of the horizon in the random prefill.
    horizon_high = max(1, min(MAX_IMAGINATION_HORIZON, per_env_prefill - 2))
    trial.suggest_int("imagination_horizon", min(5, horizon_high), horizon_high)
    # The first batch must fit into the random prefill (distinct sequence starts).
    start_limit = max(1, (per_env_prefill - sequence_length + 1) * max(int(n_envs), 1))
    batch_size = base.get("batch_size", _twm_default("batch_size"))
    trial.suggest_int("batch_size", *_around("batch_size", batch_size, start_limit), log=True)
    imagination_batch_size = base.get("imagination_batch_size", _twm_default("imagination_batch_size"))
    trial.suggest_int("imagination_batch_size", *_around("imagination_batch_size", imagination_batch_size), log=True)
    low, high = _around("embed_dim", world_model_kwargs["embed_dim"])
    trial.suggest_int("embed_dim", low + low % 2, max(high - high % 2, low + low % 2), step=2)  # even (positions)
    trial.suggest_int("num_layers", *_around("num_layers", world_model_kwargs["num_layers"]), log=True)
    width = _net_arch_width(policy_kwargs.get("net_arch"))
    trial.suggest_int("actor_critic_width", *_around("actor_critic_width", width), log=True)
    if _is_cnn(base.get("policy", "CnnPolicy")):
        channels = policy_kwargs.get("cnn_channels", _policy_default("cnn_channels"))
        trial.suggest_int("cnn_channels", *_around("cnn_channels", channels), log=True)
    if n_actions > 0:
        trial.suggest_int("action_bins", MIN_ACTION_BINS, MAX_ACTION_BINS, step=2)
    return convert_twm_params(dict(trial.params), base)


def _pop_world_model_params(params: dict[str, Any], configured: dict[str, Any]) -> dict[str, Any]:
    # Trial parameters of world_model_kwargs, taken out of ``params``.
    world_model: dict[str, Any] = {}
    for name in ("latent_entropy_coef", "latent_entropy_threshold"):
        if name in params:
            world_model[name] = float(params.pop(name))
    if "num_layers" in params:
        world_model["num_layers"] = int(params.pop("num_layers"))
    if "embed_dim" in params:
        configured = {**world_model_defaults(), **configured}
        embed_dim = int(params.pop("embed_dim"))
        world_model["embed_dim"] = embed_dim
        # The feed-forward width keeps its ratio to the model width.
        world_model["feedforward_dim"] = max(1, round(configured["feedforward_dim"] * embed_dim / configured["embed_dim"]))
    return world_model


def _pop_policy_params(params: dict[str, Any], configured: dict[str, Any]) -> dict[str, Any]:
    # Trial parameters of policy_kwargs, taken out of ``params``.
    policy: dict[str, Any] = {}
    if "actor_critic_width" in params:
        net_arch = configured.get("net_arch")
        scale = int(params.pop("actor_critic_width")) / _net_arch_width(net_arch)
        policy["net_arch"] = _scale_net_arch(net_arch, scale)
    for name in ("cnn_channels", "action_bins"):
        if name in params:
            policy[name] = int(params.pop(name))
    return policy


def convert_twm_params(params: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """
    Turn trial parameters into ``TWM`` keyword arguments (rl-zoo3 converter, used for ``--trial-id``).

    :param params: The trial's parameters (as ``sample_twm_params`` suggested them).
    :param base: The configuration the trial was anchored at; its ``world_model_kwargs``, ``policy_kwargs`` and
        ``critic_optimizer_kwargs`` are kept where the trial did not sample a value (the zoo integration passes it).
    :return: Keyword arguments for ``TWM``.
    """
    base = _base_hyperparams({"hyperparams": base})
    params = dict(params)
    hyperparams: dict[str, Any] = {}
    for name in ("learning_rate", "ent_coef", "entropy_threshold", "discount_threshold", "buffer_temperature"):
        if name in params:
            hyperparams[name] = float(params.pop(name))
    for name in ("imagination_horizon", "batch_size", "imagination_batch_size"):
        if name in params:
            hyperparams[name] = int(params.pop(name))

    if "critic_lr" in params:
        critic = as_kwargs_dict(base.get("critic_optimizer_kwargs"))
        hyperparams["critic_optimizer_kwargs"] = {**critic, "lr": float(params.pop("critic_lr"))}

    world_model = _pop_world_model_params(params, as_kwargs_dict(base.get("world_model_kwargs")))
    if world_model:
        hyperparams["world_model_kwargs"] = {**as_kwargs_dict(base.get("world_model_kwargs")), **world_model}
    policy = _pop_policy_params(params, as_kwargs_dict(base.get("policy_kwargs")))
    if policy:
        hyperparams["policy_kwargs"] = {**as_kwargs_dict(base.get("policy_kwargs")), **policy}

    if params:
        raise ValueError(f"Unknown TWM trial parameters {sorted(params)} (from another version of sb3-twm?).")

    # Imagination starts from states of a world-model batch: at most batch_size * sequence_length of them.
    if "imagination_batch_size" in hyperparams or "batch_size" in hyperparams:
        batch_size = hyperparams.get("batch_size", base.get("batch_size", _twm_default("batch_size")))
        sequence_length = int(base.get("sequence_length", _twm_default("sequence_length")))
        imagination_batch_size = hyperparams.get(
            "imagination_batch_size", base.get("imagination_batch_size", _twm_default("imagination_batch_size"))
        )
        hyperparams["imagination_batch_size"] = int(min(imagination_batch_size, batch_size * sequence_length))
    return hyperparams
