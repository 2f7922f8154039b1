from __future__ import annotations

from typing import Any

import pytest

from forestflow_control_plane.policies.shadow import Shadow, sample_rate, shadows, wanted
from forestflow_control_plane.state.records import VariantRecord, VariantState
from tests.control_plane.policies.inputs import variant

SHADOW, SERVING = VariantState.SHADOW, VariantState.SERVING


ROWS: list[tuple[str, list[VariantRecord], tuple[Shadow, ...]]] = [
    ("no variants", [], ()),
    ("no shadows", [variant("v1", SERVING)], ()),
    ("default sample rate is everything", [variant("v2", SHADOW)], (Shadow("v2", 1.0),)),
    ("explicit sample rate",
     [variant("v2", SHADOW, spec={"shadow": {"sample_rate": 0.1}})], (Shadow("v2", 0.1),)),
    ("integer rate is a fraction",
     [variant("v2", SHADOW, spec={"shadow": {"sample_rate": 0}})], (Shadow("v2", 0.0),)),
    ("only shadows, oldest first",
     [variant("v4", SHADOW, 4.0), variant("v1", SERVING, 1.0),
      variant("v3", SHADOW, 3.0, {"shadow": {"sample_rate": 0.5}})],
     (Shadow("v3", 0.5), Shadow("v4", 1.0))),
    ("a serving variant's shadow field is ignored",
     [variant("v1", SERVING, spec={"shadow": {"sample_rate": 0.5}})], ()),
]


@pytest.mark.parametrize(("name", "variants", "want"), ROWS, ids=[r[0] for r in ROWS])
def test_shadows(name: str, variants: list[VariantRecord], want: tuple[Shadow, ...]) -> None:
    assert shadows(variants) == want


BAD: list[tuple[str, Any]] = [
    ("over one", 1.5),
    ("negative", -0.1),
    ("nan", float("nan")),
    ("string", "half"),
    ("bool", True),
]


@pytest.mark.parametrize(("name", "rate"), BAD, ids=[b[0] for b in BAD])
def test_bad_sample_rate_names_the_variant_and_field(name: str, rate: Any) -> None:
    record = variant("v2", SHADOW, spec={"shadow": {"sample_rate": rate}})
    with pytest.raises(ValueError, match=r"fraud/scoring@v2: shadow.sample_rate must be"):
        sample_rate(record)


WANTED: list[tuple[str, VariantRecord, bool]] = [
    ("shadow sampling", variant("v2", SHADOW, spec={"shadow": {"sample_rate": 0.01}}), True),
    ("shadow at zero", variant("v2", SHADOW, spec={"shadow": {"sample_rate": 0.0}}), False),
    ("not a shadow", variant("v2", SERVING), False),
]


@pytest.mark.parametrize(("name", "record", "want"), WANTED, ids=[w[0] for w in WANTED])
def test_wanted(name: str, record: VariantRecord, want: bool) -> None:
    assert wanted(record) is want
