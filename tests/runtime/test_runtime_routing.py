"""The router: table-driven matches, and remembered matches that behave like fresh ones."""

import pytest

from forestflow_runtime.http import Request, Response
from forestflow_runtime.routing import MethodNotAllowed, Router, route


async def handler(request: Request) -> Response:
    return Response(200, b"{}")


def router() -> Router:
    return Router(
        [
            route("POST", "/v2/models/{name}/infer", handler, "v2"),
            route("POST", "/v1/models/{name}:predict", handler, "v1"),
            route("GET", "/v1/models/{name}", handler),
            route("POST", "/v1/{name}/predict", handler, "plain"),
        ]
    )


@pytest.mark.parametrize(
    ("method", "path", "want"),
    [
        ("POST", "/v2/models/m/infer", ("v2", {"name": "m"})),
        ("POST", "/v1/models/m:predict", ("v1", {"name": "m"})),
        ("GET", "/v1/models/m", ("", {"name": "m"})),
        ("POST", "/v1/m/predict", ("plain", {"name": "m"})),
        ("POST", "/nowhere", None),
    ],
)
def test_match_twice_gives_the_same_answer(
    method: str, path: str, want: tuple[str, dict[str, str]] | None
) -> None:
    table = router()
    for _ in range(2):  # the second time from the remembered match
        found = table.match(method, path)
        got = None if found is None else (found[0].protocol, found[1])
        assert got == want


def test_remembered_params_are_a_fresh_dict_each_time() -> None:
    table = router()
    first = table.match("POST", "/v1/m/predict")
    assert first is not None
    first[1]["name"] = "changed"
    second = table.match("POST", "/v1/m/predict")
    assert second is not None and second[1] == {"name": "m"}


def test_wrong_method_is_405_even_after_a_remembered_match() -> None:
    table = router()
    assert table.match("POST", "/v1/m/predict") is not None
    with pytest.raises(MethodNotAllowed):
        table.match("GET", "/v1/m/predict")
