"""Run a benchmark script's ``main`` so that a bad corpus or a missing model is one line on
stderr with semcodec's exit codes, not a traceback (shared by the scripts in this folder)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_script(name: str, main: Callable[[], int]) -> int:
    from semcodec.errors import SemError, SemModelError
    from semcodec.exitcodes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_UNAVAILABLE

    try:
        return main()
    except SemModelError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (SemError, OSError) as err:
        detail = f"{err.filename}: {err.strerror}" if isinstance(err, OSError) and err.filename else str(err)
        print(f"{name}: error: {detail}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
