"""
Every default is written once, in code; the README's hyperparameter table and the docstrings are checked against it.
The values themselves are the reference's (``test_twm.py::test_defaults_equal_the_specification``).
"""

import ast
import inspect
import pathlib
import re

import pytest
from torch import nn

from sb3_twm import TWM, TWMPolicy
from sb3_twm.twm.actor_critic import ACTOR_OPTIMIZER_DEFAULTS, CRITIC_OPTIMIZER_DEFAULTS
from sb3_twm.world_model import world_model_defaults
from sb3_twm.world_model.world_model import OPTIMIZER_DEFAULTS

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def readme_table() -> dict[str, str]:
    """:return: keyword -> default cell of the README's hyperparameter table."""
    text = README.read_text()
    section = text[text.index("## Hyperparameters") : text.index("\n## ", text.index("## Hyperparameters") + 3)]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `(\w+)` \| (.+?) \| .* \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def literal(text: str) -> object:
    if text == "SiLU":
        return nn.SiLU
    return ast.literal_eval(text.replace("_", "") if re.fullmatch(r"[\d_]+", text) else text)


def pairs(cell: str) -> dict[str, object]:
    """``\\`key=value\\`, ...`` -> {key: value}."""
    return {key: literal(value) for key, value in re.findall(r"`(\w+)=([^`]+)`", cell)}


def signature_defaults(function: object) -> dict[str, object]:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


NESTED = {
    "world_model_kwargs": world_model_defaults(),
    "observation_optimizer_kwargs": OPTIMIZER_DEFAULTS,
    "dynamics_optimizer_kwargs": OPTIMIZER_DEFAULTS,
    "actor_optimizer_kwargs": ACTOR_OPTIMIZER_DEFAULTS,
    "critic_optimizer_kwargs": CRITIC_OPTIMIZER_DEFAULTS,
    "policy_kwargs": {k: v for k, v in signature_defaults(TWMPolicy.__init__).items() if k != "lr_schedule"},
}
# Constructor keywords the table leaves out: SB3's own plumbing, documented by SB3.
NOT_IN_TABLE = {
    "replay_buffer_class",
    "replay_buffer_kwargs",
    "stats_window_size",
    "tensorboard_log",
    "verbose",
    "seed",
    "device",
    "_init_setup_model",
}


def test_readme_table_lists_every_keyword_with_its_default():
    table = readme_table()
    defaults = signature_defaults(TWM.__init__)
    assert set(table) == set(defaults) - NOT_IN_TABLE
    for name, cell in table.items():
        if name in NESTED:
            assert pairs(cell) == NESTED[name], name
            continue
        values = re.findall(r"`([^`]+)`", cell)
        assert len(values) == 1, (name, cell)
        assert literal(values[0]) == defaults[name], name


@pytest.mark.parametrize("cls", [TWM, TWMPolicy])
def test_every_constructor_argument_is_documented(cls):
    documented = set(re.findall(r":param (\w+):", inspect.getdoc(cls) or ""))
    documented |= set(re.findall(r":param (\w+):", inspect.getdoc(cls.__init__) or ""))
    arguments = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert arguments - documented == set()


def test_the_derived_training_ratio_the_docstring_states():
    assert "(1.316" in inspect.getdoc(TWM)
    assert TWM("CnnPolicy", None, _init_setup_model=False).steps_per_env_step == pytest.approx(1.3158, abs=5e-5)


def test_world_model_kwargs_reach_the_models_unchanged():
    # Each key goes to the one constructor that declares it, and its default there is what the table says.
    keys = {key for key in world_model_defaults()}
    model = TWM(
        "MlpPolicy",
        "CartPole-v1",
        learning_starts=40,
        batch_size=2,
        sequence_length=4,
        imagination_batch_size=8,
        world_model_kwargs={
            **dict(embed_dim=16, num_heads=2, head_dim=8, num_layers=1, feedforward_dim=32, dropout=0.0),
            **dict(latent_entropy_coef=2.5, reward_coef=3.0),
        },
        policy_kwargs=dict(net_arch=[8], latent_categoricals=2, latent_classes=2),
    )
    world_model = model.world_model
    assert world_model.observation_model.latent_entropy_coef == 2.5 and world_model.reward_coef == 3.0
    assert world_model.dynamics_model.memory_length == world_model_defaults()["memory_length"]
    assert "num_actions" not in keys and "activation_fn" not in keys  # set by TWM from the env and the policy
    with pytest.raises(ValueError, match=r"Unknown world_model_kwargs \['activation_fn'\]"):
        TWM("MlpPolicy", "CartPole-v1", world_model_kwargs={"activation_fn": nn.ReLU}, _init_setup_model=True)
