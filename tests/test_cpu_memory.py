"""Reusing freed CPU memory: the allocator setting changes where memory comes from, never what is computed."""

import ctypes
import resource

import pytest
import torch as th

from sb3_twm import TWM
from sb3_twm.common import cpu_memory
from sb3_twm.common.atari import make_twm_atari_env
from sb3_twm.common.cpu_memory import reuse_freed_memory

BLOCK_BYTES = 64 * 1024**2  # above glibc's largest mmap threshold (32 MiB)

needs_glibc = pytest.mark.skipif(not cpu_memory.is_supported(), reason="needs Linux with glibc")


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


def allocator_state() -> MallInfo2:
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc without mallinfo2 (< 2.33)")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2()


def mapped_bytes_of_a_block() -> int:
    """How much the mmapped total grows while one large tensor is alive."""
    before = allocator_state().hblkhd
    block = th.empty(BLOCK_BYTES, dtype=th.uint8)
    during = allocator_state().hblkhd
    del block
    return during - before


@needs_glibc
def test_large_blocks_come_from_the_heap_and_are_reused_inside():
    with reuse_freed_memory() as changed:
        assert changed
        assert mapped_bytes_of_a_block() == 0
        heap_sizes, page_faults = [], []
        for _ in range(6):  # as training updates do: allocate, use, free
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            block = th.ones(BLOCK_BYTES, dtype=th.uint8)
            page_faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
            del block
            heap_sizes.append(allocator_state().arena)
        # Freed memory is kept (never trimmed) and serves the next blocks: the heap stops growing and the pages
        # are not faulted in again.
        assert heap_sizes[-1] == heap_sizes[-2] == heap_sizes[-3] >= BLOCK_BYTES
        assert max(page_faults[-3:]) < 0.05 * BLOCK_BYTES / resource.getpagesize()


class RecordingLibc:
    """Stands in for glibc and records the allocator settings made."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append(("mallopt", parameter, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def recording_libc(monkeypatch) -> RecordingLibc:
    libc = RecordingLibc()
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: libc)
    return libc


REUSE = [("mallopt", -4, 0), ("mallopt", -1, -1)]  # M_MMAP_MAX 0, M_TRIM_THRESHOLD SIZE_MAX
DEFAULTS = [("mallopt", -4, 65536), ("mallopt", -1, 128 * 1024), ("malloc_trim", 0)]


def test_nested_contexts_restore_the_defaults_only_at_the_outermost_exit(recording_libc):
    with reuse_freed_memory():
        assert recording_libc.calls == REUSE
        with reuse_freed_memory() as changed:
            assert changed
        assert recording_libc.calls == REUSE
    assert recording_libc.calls == REUSE + DEFAULTS
    with reuse_freed_memory():
        pass
    assert recording_libc.calls == 2 * (REUSE + DEFAULTS)


def test_the_defaults_return_when_training_raises(recording_libc):
    with pytest.raises(RuntimeError, match="stopped"):
        with reuse_freed_memory():
            raise RuntimeError("stopped")
    assert recording_libc.calls == REUSE + DEFAULTS
    assert cpu_memory._depth == 0


def test_disabled_changes_nothing(recording_libc):
    with reuse_freed_memory(enabled=False) as changed:
        assert not changed
    assert recording_libc.calls == []


def test_training_memory_follows_the_option_and_the_device(pong_env, tiny_kwargs):
    on = TWM("CnnPolicy", pong_env, device="cpu", **tiny_kwargs)
    off = TWM("CnnPolicy", pong_env, device="cpu", reuse_cpu_memory=False, **tiny_kwargs)
    assert on.reuse_cpu_memory and not off.reuse_cpu_memory
    with on.training_memory() as changed:
        assert changed == cpu_memory.is_supported()
    with off.training_memory() as changed:
        assert not changed


@needs_glibc
def test_learning_is_bit_identical_with_and_without_reusing_memory(tiny_kwargs):
    runs = []
    for reuse in (True, False):
        env = make_twm_atari_env("PongNoFrameskip-v4", seed=0)
        model = TWM("CnnPolicy", env, seed=3, reuse_cpu_memory=reuse, **tiny_kwargs)
        model.learn(280)
        assert model._n_updates > 0
        runs.append(
            {
                f"{prefix}.{name}": value.detach().clone()
                for prefix, module in (("policy", model.policy), ("world_model", model.world_model), ("critic", model.critic))
                for name, value in module.state_dict().items()
            }
        )
        env.close()
    assert runs[0].keys() == runs[1].keys()
    assert all(th.equal(runs[0][key], runs[1][key]) for key in runs[0])


@pytest.mark.parametrize("reuse", [True, False])
def test_learn_trains_inside_the_allocator_setting(recording_libc, tiny_kwargs, reuse, monkeypatch):
    """learn() itself enters the setting: every training step runs with it on, and the defaults return after."""
    model = TWM("CnnPolicy", make_twm_atari_env("PongNoFrameskip-v4", seed=0), reuse_cpu_memory=reuse, **tiny_kwargs)
    calls_at_training_steps = []
    train_step = model.train_step

    def recording_train_step(*args, **kwargs):
        calls_at_training_steps.append(list(recording_libc.calls))
        return train_step(*args, **kwargs)

    monkeypatch.setattr(model, "train_step", recording_train_step)
    model.learn(240)
    assert len(calls_at_training_steps) == 10  # 40 steps past the prefill at 0.25 training steps per env step
    if reuse:
        assert all(calls == REUSE for calls in calls_at_training_steps)
        assert recording_libc.calls == REUSE + DEFAULTS
    else:
        assert recording_libc.calls == []
