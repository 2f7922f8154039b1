"""Run an OCI image's entrypoint from its unpacked root filesystem: the stand-in for a
container runtime. This sandbox runs none (podman's crun: "cgroups in hybrid mode not
supported"), so `umoci unpack` lays the image out as runtime bundles do, and the process
starts as the image's config says (its arguments, environment, working directory and user)
in a chroot, in mount and PID namespaces of its own, with /dev and /proc mounted. It shares
the machine's network, as a container with host networking would."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("buildah", "mmdebstrap", "umoci", "unshare", "chroot")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@dataclass(frozen=True)
class Bundle:
    rootfs: Path
    args: list[str]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int


def unpack(layout: Path, bundle: Path) -> Bundle:
    """`umoci unpack` the image at an OCI layout (its `latest` tag) into `bundle`."""
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
        check=True, capture_output=True,
    )
    process = json.loads((bundle / "config.json").read_text())["process"]
    env = dict(entry.split("=", 1) for entry in process["env"])
    user = process["user"]
    return Bundle(bundle / "rootfs", process["args"], env, process["cwd"], user["uid"],
                  user["gid"])


def start(bundle: Bundle, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start the image's entrypoint with `env` over the image's own environment."""
    root = shlex.quote(str(bundle.rootfs))
    variables = [f"{k}={v}" for k, v in {**bundle.env, **env}.items()]
    command = shlex.join(["sh", "-c", f"cd {shlex.quote(bundle.cwd)} && exec \"$@\"", "sh",
                          *bundle.args])
    inside = (
        f"mount --rbind /dev {root}/dev && mount -t proc proc {root}/proc && "
        f"exec chroot --userspec={bundle.uid}:{bundle.gid} {root} "
        f"env -i {shlex.join(variables)} {command}"
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", inside],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, env={"PATH": os.environ["PATH"]},
        )
