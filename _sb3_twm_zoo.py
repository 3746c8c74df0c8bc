"""
Start-up hook that makes ``--algo twm`` available in rl-zoo3 (``python -m rl_zoo3.train --algo twm ...``).

rl-zoo3 has no plugin mechanism for algorithms, so sb3-twm installs this module at the top of site-packages together
with ``_sb3_twm_zoo.pth`` (and ``_sb3_twm_zoo.start``, its PEP 829 twin for Python >= 3.15). At interpreter start it
only puts a small finder on ``sys.meta_path``; nothing else is imported (stdlib only, no torch, no sb3_twm). When one of
the three rl-zoo3 modules below is imported, the finder lets it load normally and then calls the matching function of
``sb3_twm.zoo``, which adds TWM additively (``dict.setdefault``: an upstream ``twm`` entry would win):

- ``rl_zoo3.utils``: ``ALGOS["twm"]``
- ``rl_zoo3.hyperparams_opt``: ``HYPERPARAMS_SAMPLER["twm"]`` and ``HYPERPARAMS_CONVERTER["twm"]``
- ``rl_zoo3.exp_manager``: the default hyperparameters file of ``--algo twm`` (sb3-twm's ``twm.yml``, unless
  ``--conf-file`` is given), datasets saved with ``--save-freq`` checkpoints, and ``-i`` continuing the run exactly

A failure inside sb3_twm only warns (rl-zoo3 keeps working without twm). ``SB3_TWM_NO_ZOO_HOOK=1`` turns the hook
off; ``python -m sb3_twm.zoo train|enjoy|record_video ...`` is the explicit entry point that needs no hook.
"""

import os
import sys

__all__ = ["install", "is_disabled"]

# rl-zoo3 module -> function of sb3_twm.zoo that registers TWM in it.
_TARGETS = {
    "rl_zoo3.utils": "register_algo",
    "rl_zoo3.hyperparams_opt": "register_sampler",
    "rl_zoo3.exp_manager": "patch_experiment_manager",
}
_OPT_OUT = "SB3_TWM_NO_ZOO_HOOK"


def is_disabled() -> bool:
    """Whether the user turned the hook off (``SB3_TWM_NO_ZOO_HOOK`` set to anything but ``''``/``0``/``false``/``no``)."""
    return os.environ.get(_OPT_OUT, "").strip().lower() not in ("", "0", "false", "no")


def _warn(message):
    import warnings  # not at module level: nothing but os and sys at interpreter start

    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _after_import(name, module):
    try:
        from sb3_twm import zoo

        getattr(zoo, _TARGETS[name])(module)
    except Exception as exc:  # never break rl-zoo3 (or the interpreter) because of sb3_twm
        _warn(
            f"sb3-twm could not register TWM with {name} ({exc!r}); '--algo twm' may be unavailable. "
            f"Set {_OPT_OUT}=1 to silence this, or use 'python -m sb3_twm.zoo'."
        )


class _Loader:
    """Wraps the real loader of a target module: execute it, then register TWM in it."""

    def __init__(self, inner, name):
        self._inner = inner
        self._name = name

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _after_import(self._name, module)

    def __getattr__(self, attr):  # get_source, get_resource_reader, is_package, ...
        return getattr(self._inner, attr)


class _Finder:
    """Meta-path finder that answers only for the target modules, by asking the other finders."""

    _sb3_twm_zoo_finder = True  # marker, also recognised across copies of this module

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if getattr(finder, "_sb3_twm_zoo_finder", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None

    def invalidate_caches(self):
        pass


def install():
    """Put the finder on ``sys.meta_path`` (idempotent; called by the ``.pth``/``.start`` file at start-up)."""
    try:
        if is_disabled() or any(getattr(finder, "_sb3_twm_zoo_finder", False) for finder in sys.meta_path):
            return
        sys.meta_path.insert(0, _Finder())
        for name in _TARGETS:  # imported before the hook was installed: register now
            if name in sys.modules:
                _after_import(name, sys.modules[name])
    except Exception as exc:  # a start-up hook must never stop the interpreter
        _warn(f"sb3-twm's rl-zoo3 hook failed to install: {exc!r}")
