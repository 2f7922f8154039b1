"""`ffctl deploy FILE`: send a model.yaml to the API and, with `--wait`, follow the rollout
it starts to its end; the exit code says how it ended."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from forestflow_cli.dry_run import PlatformName, print_manifests
from forestflow_cli.exit_codes import ExitCode, fail
from forestflow_cli.follow import follow_rollout, wait_job
from forestflow_cli.model_files import example_input, read_model_file
from forestflow_cli.options import Server, Token
from forestflow_cli.output import out
from forestflow_cli.session import api

ModelFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="model.yaml")]
Wait = Annotated[
    bool, typer.Option(help="Follow the rollout; exit 1 unless it succeeds.")
]
Timeout = Annotated[float, typer.Option(help="Seconds to wait with --wait.")]
UntilPercent = Annotated[
    int | None,
    typer.Option(
        min=1, max=100, show_default=False,
        help="With --wait: return (0) once the new version has held this share or more "
        "through a whole step, its gate passed there, instead of waiting for 100 %; then "
        "`ffctl promote` or `ffctl rollback`.",
    ),
]


DryRun = Annotated[
    bool,
    typer.Option(
        help="Print the Knative objects a first deploy of FILE makes, and change nothing; "
        "no server needed."
    ),
]
Platform = Annotated[
    PlatformName, typer.Option(help="With --dry-run, knative adds the kn/kubectl commands.")
]
Image = Annotated[
    str | None,
    typer.Option(show_default=False, help="With --dry-run: the runtime image (FF_RUNTIME_IMAGE)."),
]


def deploy(
    file: ModelFile,
    wait: Wait = False,
    timeout: Timeout = 600.0,
    until_percent: UntilPercent = None,
    dry_run: DryRun = False,
    platform: Platform = PlatformName.LOCAL,
    image: Image = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Register the variant a model.yaml describes and roll it out."""
    if dry_run:
        print_manifests(file, platform, image)
        return
    with api(server, token) as client:
        result = client.deploy(read_model_file(file))
        contract, version = result["contract"], result["version"]
        out.print(f"deployed {contract}@{version} (rollout job {result['job']})", highlight=False)
        if wait:
            deadline = time.monotonic() + timeout
            job = wait_job(client, result["job"], deadline)
            if job["status"] != "finished":
                fail(f"rollout {job['status']}: {job.get('error') or ''}", ExitCode.FAILED)
            state = client.variant(contract, version)["state"]
            if state == "shadow":
                out.print(f"{contract}@{version} runs as a shadow: mirrored traffic only")
            else:
                outcome = follow_rollout(client, contract, version, deadline, until_percent)
                if not outcome.ok:
                    fail(f"rollout {outcome.status}: {outcome.reason}", ExitCode.FAILED)
        body = client.contract(contract)
    name = contract.split("/", 1)[1]
    url = f"{result['url']}/v1/{name}/predict"
    request = json.dumps({"input": example_input(body)})
    out.print(f"inference URL: {url}", highlight=False, soft_wrap=True)
    out.print(
        f"curl -s -X POST {url} -H 'content-type: application/json' -d {shlex.quote(request)}",
        soft_wrap=True, highlight=False, markup=False,
    )
