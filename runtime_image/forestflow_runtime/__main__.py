"""`python -m forestflow_runtime`: configuration from FF_* variables, then serve.

OpenMP reads OMP_WAIT_POLICY once, when torch loads it, so the default is set here, before the
import: idle OpenMP threads then sleep instead of spinning for milliseconds after every
parallel region, and the event loop, which shares the cores with them, keeps its CPU.
"""

import logging
import os
import sys

from forestflow_runtime.config import ConfigError, load_config


def main() -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"forestflow_runtime: configuration error: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Imported only now: torch takes a second or two, and a bad variable should fail at once.
    from forestflow_runtime.server import serve

    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
