"""`python -m e2e.cluster up|down`: the test cluster's life (cluster.py says what it is).

`up` builds the binaries, or reuses them (build.sh), replaces any cluster already up, and
writes `env.sh` in FF_CLUSTER_HOME (default /tmp/forestflow-cluster): KUBECONFIG (contexts
`ff-admin` and `ff-worker`, the ServiceAccount knative/control-plane.yaml binds),
FF_KUBE_CONTEXT=ff-worker, FF_RUNTIME_IMAGE and FF_TEST_CLUSTER. Needs root (network
namespaces), Go, iproute2 and socat.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from e2e.cluster.cluster import Cluster, down

HERE = Path(__file__).resolve().parent
HOME = Path(os.environ.get("FF_CLUSTER_HOME", "/tmp/forestflow-cluster"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster")
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args()
    down(HOME)
    if args.command == "down":
        return
    started = time.monotonic()
    built = subprocess.run([str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE,
                           text=True)
    bin_dir = Path(built.stdout.strip().splitlines()[-1])
    ready = time.monotonic()
    env = Cluster(HOME, bin_dir).up()
    print(f"cluster up: binaries in {ready - started:.0f} s, started in "
          f"{time.monotonic() - ready:.0f} s; source {env}")


if __name__ == "__main__":
    main()
