"""
Optuna storage of ``python -m rl_zoo3.train --algo twm -optimize --storage <URL>`` for many workers on many machines.

rl-zoo3 hands the ``--storage`` string to ``optuna.create_study`` as it is, and a URL gives an ``RDBStorage`` without
heartbeats: a worker killed in the middle of a trial (SIGKILL, a lost machine, the out-of-memory killer) leaves its
trial ``RUNNING`` for ever, and it counts against ``--max-total-trials``. For TWM, a database URL (PostgreSQL, MySQL,
SQLite) becomes an ``optuna.storages.RDBStorage`` with heartbeats: each worker records a heartbeat of its running trial
every ``SB3_TWM_OPTUNA_HEARTBEAT_INTERVAL`` seconds; the next worker that starts a trial marks any trial whose
heartbeat is older than ``SB3_TWM_OPTUNA_GRACE_PERIOD`` seconds ``FAIL`` and, through
``optuna.storages.RetryHeartbeatStaleTrialCallback``, puts a copy of it (same parameters, system attribute
``failed_trial``) in the queue, at most ``SB3_TWM_OPTUNA_MAX_RETRY`` times per trial.

The settings are environment variables because the zoo's command line has no place for them (``--storage`` is a plain
string and ``-params`` are TWM's hyperparameters) and because they belong to the worker, not to the study.
"""

import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GRACE_PERIOD_VARIABLE",
    "HEARTBEAT_INTERVAL_VARIABLE",
    "MAX_RETRY_VARIABLE",
    "WORKER_ATTRIBUTE",
    "HeartbeatSettings",
    "heartbeat_storage",
    "is_database_url",
    "studies_with_heartbeats",
    "worker_name",
]

HEARTBEAT_INTERVAL_VARIABLE = "SB3_TWM_OPTUNA_HEARTBEAT_INTERVAL"
GRACE_PERIOD_VARIABLE = "SB3_TWM_OPTUNA_GRACE_PERIOD"
MAX_RETRY_VARIABLE = "SB3_TWM_OPTUNA_MAX_RETRY"
# User attribute of every TWM trial: the worker that runs it (host:pid), seen in the study and in optuna-dashboard.
WORKER_ATTRIBUTE = "worker"


@dataclass(frozen=True)
class HeartbeatSettings:
    """
    Heartbeats of a worker's running trial (see the module docstring).

    :param interval: Seconds between two heartbeats; 0 turns heartbeats (and with them the retries) off.
    :param grace_period: Seconds without a heartbeat after which a running trial is marked ``FAIL``.
    :param max_retry: How many times a failed trial is queued again (0: never).
    """

    interval: int = 60
    grace_period: int = 120
    max_retry: int = 1

    def __post_init__(self) -> None:
        if self.interval < 0 or self.max_retry < 0:
            raise ValueError(f"{HEARTBEAT_INTERVAL_VARIABLE} and {MAX_RETRY_VARIABLE} must be >= 0, got {self}.")
        if self.interval > 0 and self.grace_period <= self.interval:
            # Optuna checks a trial against the grace period, which must outlast at least one heartbeat.
            raise ValueError(
                f"{GRACE_PERIOD_VARIABLE}={self.grace_period} must be longer than "
                f"{HEARTBEAT_INTERVAL_VARIABLE}={self.interval} (e.g. twice as long)."
            )

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> "HeartbeatSettings":
        """
        The settings of ``SB3_TWM_OPTUNA_HEARTBEAT_INTERVAL`` (default 60), ``SB3_TWM_OPTUNA_GRACE_PERIOD`` (default
        twice the interval) and ``SB3_TWM_OPTUNA_MAX_RETRY`` (default 1).

        :param environ: The environment (``os.environ`` if None).
        :return: The settings.
        """
        environ = os.environ if environ is None else environ

        def read(name: str, default: int) -> int:
            text = environ.get(name, "").strip()
            if not text:
                return default
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{name}={text!r} is not a whole number of seconds or retries.") from None

        interval = read(HEARTBEAT_INTERVAL_VARIABLE, cls.interval)
        return cls(interval, read(GRACE_PERIOD_VARIABLE, 2 * interval), read(MAX_RETRY_VARIABLE, cls.max_retry))


def is_database_url(storage: Any) -> bool:
    """
    Whether ``storage`` (the zoo's ``--storage``) is an SQLAlchemy database URL (``postgresql+psycopg2://...``,
    ``mysql://...``, ``sqlite:///...``), which Optuna opens as an ``RDBStorage``; the zoo's other form, a ``.log`` file,
    is a journal storage.

    :param storage: The value of ``--storage``.
    :return: Whether it is a database URL.
    """
    return isinstance(storage, str) and "://" in storage and not storage.endswith(".log")


def heartbeat_storage(url: str, settings: HeartbeatSettings | None = None) -> Any:
    """
    The ``optuna.storages.RDBStorage`` of ``url`` with heartbeats and retries of failed trials.

    :param url: A database URL.
    :param settings: The heartbeat settings (those of the environment if None).
    :return: The storage (``url`` itself when heartbeats are off).
    """
    import optuna

    settings = HeartbeatSettings.from_environment() if settings is None else settings
    if settings.interval == 0:
        return url
    # Trials of a world model last hours: a connection the server or a firewall dropped meanwhile is replaced.
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        # Heartbeats and retries are experimental in Optuna's terms; they are what this storage is for.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(settings.max_retry) if settings.max_retry else None
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=settings.interval,
            grace_period=settings.grace_period,
            heartbeat_stale_trial_callback=retry,
        )


@contextmanager
def studies_with_heartbeats(optuna_module: Any, url: str) -> Iterator[Any]:
    """
    Within the block, ``optuna_module.create_study(storage=url, ...)`` opens ``url`` with heartbeats
    (:func:`heartbeat_storage`); other storages are passed on as they are.

    rl-zoo3 builds the study from the ``--storage`` string inside ``ExperimentManager.hyperparameters_optimization``,
    which has no parameter for the storage object, so its call of ``optuna.create_study`` is the one place to give it.

    :param optuna_module: The ``optuna`` module the zoo calls.
    :param url: The database URL of ``--storage``.
    :return: The storage used.
    """
    storage = heartbeat_storage(url)
    create_study = optuna_module.create_study

    def create_study_with_heartbeats(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("storage") == url:
            kwargs["storage"] = storage
        return create_study(*args, **kwargs)

    optuna_module.create_study = create_study_with_heartbeats
    try:
        yield storage
    finally:
        optuna_module.create_study = create_study


def worker_name() -> str:
    """:return: ``host:pid`` of this process (the ``worker`` user attribute of the trials it runs)."""
    return f"{socket.gethostname()}:{os.getpid()}"
