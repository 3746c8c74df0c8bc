"""
Figures of the reference implementation (jrobine/twm at e9e9d6f, unmodified, default configuration for Pong's 6
actions, random frames, its own update functions called as its trainer calls them), measured by this project: the one
place they are kept. They are constants from the machine named below, not measurements of the machine a benchmark runs
on, so the benchmarks print them as such and compute no speed-up from them.
"""

REFERENCE_MACHINE = "2-core Intel Xeon (AVX-512/AMX), torch 2.13 CPU, 2 threads, median of 9, 2026-11-25"
REFERENCE_CPU_SECONDS = {
    "wm-update": 16.9,  # one world-model update, 100 x 16
    "imagine": 7.1,  # imagination 400 x 15 plus the actor-critic update
    "step": 31.6,  # training cost per env step: 1.316 x (16.9 + 7.1)
}
# The authors report about 10 h per Atari 100k run on one A100, i.e. about 0.37 s per env step.
AUTHORS_A100_SECONDS_PER_ENV_STEP = 0.37
