"""Commands that change a contract: the rollout actions (promote, pause, resume, rollback,
abort) and `delete contract|variant`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from forestflow_cli.options import ContractArg, Output, Server, Token
from forestflow_cli.output import Format, emit, percents
from forestflow_cli.session import api

ACTIONS = {
    "promote": "Skip the remaining steps: the new variant takes 100 %.",
    "pause": "Hold the rollout at its current split.",
    "resume": "Continue a paused rollout from its step.",
    "rollback": "Restore exactly the split before the rollout; the new variant fails.",
    "abort": "Like rollback, recorded as aborted.",
}
VersionArg = Annotated[str, typer.Argument(help="The variant's version, e.g. v3.")]
Force = Annotated[
    bool, typer.Option("--force", help="Delete even while versions serve traffic.")
]


def action(name: str) -> Callable[..., None]:
    """The command for one rollout action."""

    def command(
        contract: ContractArg, server: Server = None, token: Token = None,
        output: Output = Format.TABLE,
    ) -> None:
        with api(server, token) as client:
            result = client.act(contract, name)
        emit(result, output, summary)

    command.__doc__ = ACTIONS[name] + "\n\njson / yaml: the API's answer."
    return command


def summary(result: dict[str, Any]) -> str:
    progress = (result["rollout"] or {}).get("progress", {})
    return (
        f"{result['contract']}: rollout of {progress.get('candidate')} "
        f"{progress.get('status')}\ntraffic: {percents(result['traffic'])}"
    )


def delete_contract(
    contract: ContractArg, force: Force = False, server: Server = None, token: Token = None,
    output: Output = Format.TABLE,
) -> None:
    """Delete a contract, its variants and their endpoints (its event log stays). Refused
    while a version serves traffic, unless --force."""
    with api(server, token) as client:
        deleted = client.delete_contract(contract, force=force)
    versions = ", ".join(v["version"] for v in deleted["variants"]) or "none"
    emit(deleted, output, lambda d: f"deleted {d['name']} (variants: {versions})")


def delete_variant(
    contract: ContractArg, version: VersionArg, server: Server = None, token: Token = None,
    output: Output = Format.TABLE,
) -> None:
    """Retire one variant (marked expired, its endpoint goes). Refused while it serves
    traffic or a rollout needs it."""
    with api(server, token) as client:
        deleted = client.delete_variant(contract, version)
    emit(deleted, output, lambda d: f"deleted {contract}@{d['version']} ({d['state']})")
