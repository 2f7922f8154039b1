"""Process entry points of the control plane and the local platform:
`python -m forestflow_control_plane api|worker|gateway|mirror`, configured by the environment,
which is read here and nowhere else."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from forestflow_control_plane.api.app import create_app
from forestflow_control_plane.api.auth import load_tokens
from forestflow_control_plane.composition import Parts
from forestflow_control_plane.rollouts.worker import run_worker
from forestflow_control_plane.settings import Settings
from forestflow_control_plane.shadows.mirror import run_mirror


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m forestflow_control_plane")
    parser.add_argument("process", choices=["api", "worker", "gateway", "mirror"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.from_env()
    if args.process == "api":
        app = create_app(Parts(settings), load_tokens(os.environ))
        uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning")
    elif args.process == "gateway":
        uvicorn.run(
            Parts(settings).gateway(), host=settings.gateway_host, port=settings.gateway_port,
            log_level="warning", lifespan="on", timeout_graceful_shutdown=30,
        )
    elif args.process == "mirror":
        run_mirror(settings, Parts(settings).shadow_targets())
    else:
        run_worker(Parts(settings), settings.reconcile_seconds)


if __name__ == "__main__":
    main()
