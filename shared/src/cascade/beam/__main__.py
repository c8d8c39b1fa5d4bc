"""``python -m cascade.beam``: the statistics pipeline (``cascade.beam.pipeline``), or
with ``--mode=materialize`` the transform's split (``cascade.beam.materialize``).

Also the Flex Template's ``FLEX_TEMPLATE_PYTHON_PY_FILE`` (shared/Dockerfile.beam): the
launcher runs this file, and the pipeline's classes stay in an importable module, so
Dataflow's workers unpickle them from the package installed in the same image.
"""

import argparse
import os
import sys

from cascade.beam.materialize_request import MATERIALIZE_MODE
from cascade.beam.pipeline import SDK_IMAGE_ENV
from cascade.beam.pipeline import run as statistics


def _main() -> None:
    """``--mode`` (a template parameter) picks the pipeline; the rest are its arguments."""
    modes = argparse.ArgumentParser(add_help=False)
    modes.add_argument("--mode", choices=["statistics", MATERIALIZE_MODE], default="statistics")
    chosen, rest = modes.parse_known_args(sys.argv[1:])
    sdk_image = os.environ.get(SDK_IMAGE_ENV)
    if chosen.mode == MATERIALIZE_MODE:
        from cascade.beam.materialize import run as materialize

        materialize(rest, sdk_image=sdk_image)
        return
    statistics(rest, sdk_image=sdk_image)


_main()
