"""The model.yaml schema: what a user writes to deploy one variant under a contract.

Unknown or misspelt fields are errors that name them; every error carries the dotted path
of the field it is about, so the API and ffctl can say exactly what to fix.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from forestflow_control_plane import names
from forestflow_control_plane.spec.variant import ContractSpec, Strict, VariantSpec


class PhaseIn(Strict):
    """How the new variant takes traffic: `immediate`; `canary` through explicit `steps`,
    each held `hold_seconds`; or `linear`, an even ramp over `duration_seconds` moving
    every `interval_seconds`."""

    policy: Literal["immediate", "canary", "linear"] = Field(
        default="immediate", description="how the new variant takes traffic"
    )
    steps: list[Annotated[int, Field(ge=1, le=100)]] | None = Field(
        default=None, min_length=1, max_length=100,
        description="canary: rising percents ending at 100, e.g. [5, 25, 100]",
    )
    hold_seconds: float = Field(
        default=60.0, ge=0, le=7 * 86_400, description="canary: time at each step"
    )
    duration_seconds: float | None = Field(
        default=None, gt=0, le=30 * 86_400, description="linear: time from 0 to 100 %"
    )
    interval_seconds: float = Field(
        default=30.0, gt=0, le=86_400, description="linear: time between moves"
    )

    @model_validator(mode="after")
    def _policy_needs(self) -> PhaseIn:
        if self.policy == "canary":
            if not self.steps:
                raise ValueError("steps: required for a canary, e.g. [5, 25, 50, 100]")
            rising = all(a < b for a, b in itertools.pairwise(self.steps))
            if self.steps[-1] != 100 or not rising:
                raise ValueError("steps: must increase and end at 100")
        elif self.steps is not None:
            raise ValueError(f"steps: only for a canary, not for {self.policy}")
        if self.policy == "linear":
            if self.duration_seconds is None:
                raise ValueError("duration_seconds: required for a linear ramp")
            if self.interval_seconds > self.duration_seconds:
                raise ValueError("interval_seconds: must not exceed duration_seconds")
        return self


class Gate(Strict):
    """Step only while the candidate meets the SLO and stays within `margin` of the
    incumbent; fail and roll back otherwise. Undecided below `min_requests`."""

    margin: float = Field(default=0.2, ge=0, le=100, description="0.2: up to 20 % worse")
    min_requests: int = Field(
        default=100, ge=1, le=10_000_000, description="fewer in a step: undecided, the step holds"
    )
    recheck_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="how often a step's gate is judged"
    )


class Rollout(Strict):
    """How this variant replaces the serving ones."""

    strategy: Literal["revision", "in_place"] = Field(
        default="revision",
        description="revision: a new variant phases in; in_place: new weights swapped into "
        "the running replicas of the same version",
    )
    phase_in: PhaseIn = PhaseIn()
    gate: Gate | None = Field(default=None, description="gate every step on metrics")


class SLO(Strict):
    """Absolute limits a gated rollout holds the candidate to."""

    p95_latency_ms: float | None = Field(
        default=None, gt=0, le=3_600_000, description="a gate fails a candidate above it"
    )
    error_rate: float | None = Field(
        default=None, ge=0, le=1, description="share of 5xx a gate allows"
    )


class Shadow(Strict):
    """A shadow serves no client: it gets a mirrored copy of the contract's traffic."""

    sample_rate: float = Field(
        default=1.0, ge=0, le=1, description="share of production requests mirrored"
    )


class Routing(Strict):
    """How the gateway picks a version for each request."""

    sticky_header: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="requests with the same value of this header reach the same version",
    )


class Expiry(Strict):
    """Retire old variants once a rollout succeeds; a variant with traffic never expires."""

    keep_latest: int | None = Field(
        default=None, ge=1, le=1000, description="expire all but the newest N"
    )
    ttl_seconds: float | None = Field(
        default=None, gt=0, le=10 * 365 * 86_400, description="expire variants this old"
    )
    on_replacement: bool = Field(
        default=False, description="expire the variants the new one replaced at 100 %"
    )


class ModelFile(Strict):
    contract: ContractSpec
    variant: VariantSpec
    rollout: Rollout = Rollout()
    slo: SLO = SLO()
    expiry: Expiry = Expiry()
    shadow: Shadow | None = Field(default=None, description="true, or {sample_rate: 0.1}")
    routing: Routing = Routing()

    @field_validator("shadow", mode="before")
    @classmethod
    def _shadow_flag(cls, value: Any) -> Any:
        """`shadow: true` is the short form of `shadow: {sample_rate: 1.0}`."""
        if value is True:
            return {}
        return None if value is False else value

    @model_validator(mode="after")
    def _tag_host_fits(self) -> ModelFile:
        """The version's own host is `<version>-<name>.<namespace>.<domain>`: its first label,
        like every DNS label, holds at most 63 characters, or Knative fails the whole Route."""
        label = names.tag_host_label(self.contract.name, self.variant.version)
        if len(label) > names.DNS_LABEL_MAX:
            raise ValueError(
                f"variant.version: {label!r}, the version's host label (<version>-<contract "
                f"name>), is {len(label)} characters; at most {names.DNS_LABEL_MAX}: shorten "
                "the version or the contract's name"
            )
        return self

    @model_validator(mode="after")
    def _shadow_rolls_out_nothing(self) -> ModelFile:
        if self.shadow is not None and self.rollout.strategy == "in_place":
            raise ValueError("rollout.strategy: a shadow takes no traffic to swap in place")
        return self


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ModelFileError(ValueError):
    """model.yaml is not valid; `errors` names every offending field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def parse_model_file(text: str) -> ModelFile:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelFileError([FieldError("", f"not valid YAML: {exc}")]) from None
    return validate_model_file(data)


def validate_model_file(data: Any) -> ModelFile:
    if not isinstance(data, dict):
        raise ModelFileError([FieldError("", "a model file is a mapping: contract, variant")])
    try:
        return ModelFile.model_validate(data)
    except ValidationError as exc:
        raise ModelFileError([_field_error(e) for e in exc.errors()]) from None


def _field_error(error: Any) -> FieldError:
    loc = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    message = message.removeprefix("Value error, ")
    # A model validator reports "field: why"; fold the field into the dotted path.
    if error["type"] == "value_error" and re.match(r"^[\w.]+: ", message):
        sub, _, message = message.partition(": ")
        loc = f"{loc}.{sub}" if loc else sub
    return FieldError(loc, message)


def local_path(uri: str) -> Path | None:
    """The filesystem path a URI names, or None for a remote one."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme in ("", ) or re.match(r"^[A-Za-z]$", parsed.scheme):
        return Path(uri)
    return None


def check_local_artifacts(model: ModelFile) -> None:
    """Refuse a model file whose local artifact or code directory does not exist."""
    errors = []
    path = local_path(model.variant.model.uri)
    if path is not None and not path.exists():
        errors.append(FieldError("variant.model.uri", f"no such file: {path}"))
    code = model.variant.model.python_path
    if code is not None and not Path(code).is_dir():
        errors.append(FieldError("variant.model.python_path", f"no such directory: {code}"))
    if errors:
        raise ModelFileError(errors)
