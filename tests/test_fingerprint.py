"""A seeded tiny learn() computes exactly what it computed when the fingerprints were recorded (same machine only)."""

import json

import fingerprint as fp
import pytest


@pytest.mark.parametrize("name", sorted(fp.CONFIGURATIONS))
def test_seeded_tiny_learn_is_bit_identical_to_the_recorded_fingerprint(name):
    recorded = json.loads(fp.FIXTURE.read_text())
    if recorded["machine"] != fp.machine():
        pytest.skip(
            f"fingerprints were recorded on {recorded['machine']}, this is {fp.machine()}: float kernels differ between "
            "machines; record them here with `python tests/fingerprint.py --write` on the commit to compare against"
        )
    current = fp.fingerprint(name)
    expected = recorded["fingerprints"][name]
    different = sorted(part for part in expected if current.get(part) != expected[part])
    assert not different, f"{name}: these parts changed: {different}"
