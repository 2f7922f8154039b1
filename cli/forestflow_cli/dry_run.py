"""`ffctl deploy FILE --dry-run`: the Knative objects a first deploy of the file makes,
printed without a server. Both platforms apply these very objects; for `--platform knative`
the equivalent `kn` / `kubectl` commands follow as YAML comments, so the output still pipes
into `kubectl apply -f -`."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from forestflow_cli.exit_codes import ExitCode, fail
from forestflow_cli.model_files import read_model_file
from forestflow_cli.output import out
from forestflow_control_plane.knative.admission import InvalidObjectError, check_all
from forestflow_control_plane.knative.render import kn_commands, manifests_yaml
from forestflow_control_plane.knative.resources import make_objects
from forestflow_control_plane.rollouts.deploys import first_state
from forestflow_control_plane.settings import Settings
from forestflow_control_plane.spec.model_file import ModelFileError, parse_model_file


class PlatformName(StrEnum):
    LOCAL = "local"
    KNATIVE = "knative"


def print_manifests(file: Path, platform: PlatformName, image: str | None) -> None:
    try:
        model = parse_model_file(read_model_file(file))
    except ModelFileError as exc:
        fail(f"{file}: invalid model file", ExitCode.BAD_INPUT, str(exc).splitlines())
    image = image or os.environ.get("FF_RUNTIME_IMAGE") or Settings.runtime_image
    objects = make_objects(first_state(model), image)
    try:
        check_all(objects)
    except InvalidObjectError as exc:
        fail("a cluster would refuse these objects", ExitCode.BAD_INPUT, str(exc).splitlines())
    out.print(manifests_yaml(objects), end="", markup=False, highlight=False, soft_wrap=True)
    if platform is PlatformName.KNATIVE:
        lines = "\n".join(kn_commands(objects)).splitlines()
        commented = ["# The same with kn and kubectl:", *(f"# {line}" for line in lines)]
        out.print("\n".join(commented), markup=False, highlight=False, soft_wrap=True)
