"""A small typed client of the control-plane API; every ffctl command goes through it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class ApiError(Exception):
    """The API refused a call; `errors` name the fields at fault."""

    status: int
    detail: str
    errors: list[dict[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.errors:
            return self.detail
        return "\n".join(
            f"{e['field']}: {e['message']}" if e.get("field") else e["message"]
            for e in self.errors
        )


class Client:
    def __init__(self, server: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=server, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def deploy(self, model_yaml: str) -> dict[str, Any]:
        return self._call(
            "POST", "/v1/deploy", content=model_yaml.encode(),
            headers={"content-type": "application/yaml"},
        )

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def contracts(self) -> list[str]:
        return list(self._call("GET", "/v1/contracts")["contracts"])

    def contract(self, contract: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/contracts/{contract}")

    def traffic(self, contract: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/contracts/{contract}/traffic")

    def rollout(self, contract: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/contracts/{contract}/rollout")

    def act(self, contract: str, action: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/contracts/{contract}/rollout/{action}")

    def events(self, contract: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/v1/contracts/{contract}/events")["events"])

    def variants(self, contract: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/contracts/{contract}/variants")

    def variant(self, contract: str, version: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/contracts/{contract}/variants/{version}")

    def delete_contract(self, contract: str, force: bool = False) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/contracts/{contract}", params={"force": force})

    def delete_variant(self, contract: str, version: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/contracts/{contract}/variants/{version}")

    def payloads(
        self, contract: str, count: int, variant: str | None = None, after: str | None = None
    ) -> dict[str, Any]:
        """A page of sampled request/response events; its `cursor` is the next `after`."""
        params: dict[str, Any] = {"count": count}
        if variant is not None:
            params["variant"] = variant
        if after is not None:
            params["after"] = after
        return self._call("GET", f"/v1/contracts/{contract}/payloads", params=params)

    def shadows(self, contract: str) -> dict[str, Any]:
        """How each shadow's answers compare with the primaries' (the shadow report)."""
        return self._call("GET", f"/v1/contracts/{contract}/shadows")

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text}
            detail = body.get("detail")
            raise ApiError(
                response.status_code,
                detail if isinstance(detail, str) else response.reason_phrase,
                body.get("errors") or [],
            )
        result: dict[str, Any] = response.json()
        return result
