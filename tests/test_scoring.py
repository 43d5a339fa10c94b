"""Key matching and intervals."""

from __future__ import annotations

import pytest

from factinject.scoring import contains_key, share, wilson_interval


@pytest.mark.parametrize(
    "answer, key, expected",
    [
        ("TinyLLM is released under the MIT license.", "MIT", True),
        ("the mit license", "MIT", True),
        ("Please submit a patch.", "MIT", False),  # whole words only
        ("See https://github.com/jasonacox/TinyLLM/ for code", "https://github.com/jasonacox/TinyLLM", True),
        ("It is maintained by Jason  Cox!", "Jason Cox", True),
        ("Jason Coxon maintains it", "Jason Cox", False),
        ("No. It does not run on Windows.", "no", True),
        ("It does not run on Windows.", "no", False),
        ("Version 4.2.1 is the latest", "4.2.1", True),
        ("Version 4.2.10 is the latest", "4.2.1", False),
        ("Based in TROMSØ", "Tromsø", True),
    ],
)
def test_contains_key(answer, key, expected):
    assert contains_key(answer, key) is expected


def test_aliases():
    assert contains_key("It has eight legs", "8", ["eight"])
    assert not contains_key("It has six legs", "8", ["eight"])


def test_wilson_interval_is_honest_at_small_n():
    lo, hi = wilson_interval(9, 10)
    assert 0.55 < lo < 0.6 and 0.98 < hi <= 1.0
    lo, hi = wilson_interval(900, 1000)
    assert hi - lo < 0.04
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert share(3, 4)["share"] == 0.75 and share(3, 4)["n"] == 4
