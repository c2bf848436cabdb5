"""``semcodec pack``, ``unpack`` and ``info``: the text side of the command line (parsers and calls).

The round trip is byte-exact, like ``cat``: nothing is stripped on ``pack`` or added on ``unpack``.

    >>> import os, tempfile
    >>> from semcodec.cli import main
    >>> home = os.getcwd(); os.chdir(tempfile.mkdtemp())
    >>> _ = open("c.txt", "wb").write(b"A red kite.\\r\\n")
    >>> main(["pack", "c.txt", "-q"]), main(["unpack", "c.txt.sem", "-o", "back.txt"])
    (0, 0)
    >>> open("back.txt", "rb").read()
    b'A red kite.\\r\\n'
    >>> os.chdir(home)
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from typing import Any

from semcodec.cli import datasets
from semcodec.cli.common import (
    FORMATTER,
    INPUT_ONLY_HELP,
    STDIN_DEFAULT_HELP,
    STDIO,
    TokenProgress,
    batch_result,
    dimension,
    epilog,
    generator_name,
    int_at_least,
    model_name_or_auto,
    output_plan,
    read_sem,
    read_text,
    refuse_existing,
    say,
    seed,
)
from semcodec.cli.failures import item_failed, named, note, reader_left
from semcodec.display import printable
from semcodec.errors import SemError
from semcodec.exitcodes import EXIT_OK
from semcodec.fileio import permission_bits, refuse_terminal_output, write_output
from semcodec.registry import DEFAULT_MODEL_ID


def register(sub: Any) -> None:
    """Add ``pack``, ``unpack`` and ``info`` to the top-level subparsers."""
    from semcodec.codec import DEFAULT_MAX_TOKENS, MAX_TOKENS

    p = sub.add_parser(
        "pack", help="code a text description into a .sem file", formatter_class=FORMATTER, stdin_default="inputs",
        description="Code UTF-8 text into a .sem file, byte for byte (a final newline is coded too; "
        "unpack gives back exactly the same bytes).",
        epilog=epilog(
            "  semcodec pack caption.txt                 # writes caption.txt.sem\n"
            "  printf 'A red boat on a river.' | semcodec pack -o boat.sem --compare\n"
            "  semcodec pack < caption.txt > caption.sem  # no FILE: standard input to standard output\n"
            "  semcodec pack a.txt b.txt -o out/          # one .sem per input in out/ (made if missing)\n"
            "  semcodec pack description.txt --model 8    # a detailed description, as VLMs write them\n"
            "  semcodec pack paragraph.txt --model 11     # several short captions of one image\n"
            "  semcodec pack caption.txt -o /dev/null --compare   # sizes only\n"
            "  semcodec pack captions.parquet -o packed.parquet --column caption --ray   # a table",
            notes=PROGRESS_HELP,
            stdio=STDIN_DEFAULT_HELP,
        ),
    )
    p.add_argument("inputs", nargs="*", metavar="FILE", help="text file(s); - or none reads standard input")
    p.add_argument(
        "-o", "--output", metavar="OUT",
        help="output file (- for stdout), or a folder (ending with /, made if missing; or an existing one): "
        "one FILE.sem per input in it",
    )
    p.add_argument(
        "--model", default=str(DEFAULT_MODEL_ID), type=model_name_or_auto,
        help=f"probability model id or name (see 'semcodec model list'; default {DEFAULT_MODEL_ID}, for one-sentence "
        "captions; 8 for detailed descriptions, 11 for several short captions; each is named inside the "
        "payload of the 1-byte header), "
        "or 'auto': try every model and keep the smallest file -- slower (one pack per model) "
        "but smaller, like zstd --ultra",
    )
    p.add_argument(
        "--generator", type=generator_name,
        help="text-to-image generator recorded in the header, e.g. openai:dall-e-3",
    )
    p.add_argument("--width", type=dimension, default=1024, help="image width to regenerate at (default 1024)")
    p.add_argument("--height", type=dimension, default=1024, help="image height (default 1024)")
    p.add_argument("--seed", type=seed, default=0, help="generator seed recorded in the header (default 0)")
    p.add_argument("--check", action="store_true", help="add a 2-byte integrity check of the text")
    p.add_argument("--compare", action="store_true", help="also report UTF-8, zlib and brotli sizes")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing regular files")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary or progress line on stderr")
    datasets.add_options(p, "pack")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser(
        "unpack", help="decode a .sem file back to its text", formatter_class=FORMATTER, stdin_default="inputs",
        description="Decode .sem file(s) to the exact bytes that were packed (like cat: nothing added).",
        epilog=epilog(
            "  semcodec unpack caption.sem              # text to stdout\n"
            "  cat caption.sem | semcodec unpack        # no FILE: standard input\n"
            "  semcodec unpack caption.sem -o caption.txt\n"
            "  semcodec unpack *.sem -o texts/           # each output written as its file finishes\n"
            f"  semcodec unpack long.sem --max-tokens {MAX_TOKENS}   # a text longer than the default budget",
            notes=PROGRESS_HELP,
            stdio=STDIN_DEFAULT_HELP,
        ),
    )
    p.add_argument("inputs", nargs="*", metavar="FILE", help=".sem file(s); - or none reads standard input")
    p.add_argument(
        "-o", "--output", metavar="OUT",
        help="output file (default stdout), or a folder (ending with /, made if missing; or an existing one): "
        "one text per input in it",
    )
    _add_max_tokens(p, DEFAULT_MAX_TOKENS, MAX_TOKENS)
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing regular files")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress line on stderr (a dataset job: no progress or summary)")
    datasets.add_options(p, "unpack")
    p.set_defaults(func=cmd_unpack)

    p = sub.add_parser(
        "info", help="show a .sem file's header, sizes and text", formatter_class=FORMATTER, stdin_default="input",
        description="Show every header field, payload bits, bits per character and micro-bits per pixel.",
        epilog=epilog(
            "  semcodec info caption.sem --json\n  semcodec info caption.sem --header-only\n"
            "  cat caption.sem | semcodec info", stdio=INPUT_ONLY_HELP,
        ),
    )
    p.add_argument("input", nargs="?", metavar="FILE", help=".sem file; - or none reads standard input")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--header-only", action="store_true", help="do not decode the payload (no model needed)")
    _add_max_tokens(p, DEFAULT_MAX_TOKENS, MAX_TOKENS)
    p.set_defaults(func=cmd_info)


PROGRESS_HELP = (
    "A long text shows a progress line on stderr while it is coded, when stderr is a terminal\n"
    "(tokens done, of how many when known, tokens/s, and the time left when known; erased when\n"
    "done); never in a pipe or a log, nor with -q."
)


def _add_max_tokens(parser: argparse.ArgumentParser, default: int, most: int) -> None:
    parser.add_argument(
        "--max-tokens", type=int_at_least(0, most), default=default, metavar="N",
        help=f"token budget: refuse a file whose text has more than N tokens (default {default}, for untrusted "
        f"input; at most {most}, the format's limit): bounds the time and memory a crafted file costs",
    )


def _comparison(text: str) -> str:
    raw = text.encode("utf-8")
    parts = [f"UTF-8 {len(raw)} B", f"zlib -9 {len(zlib.compress(raw, 9))} B"]
    try:
        import brotli

        parts.append(f"brotli -q11 {len(brotli.compress(raw, quality=11))} B")
    except ImportError:
        parts.append("brotli n/a (pip install brotli)")
    return ", ".join(parts)


def _default_pack_output(src: str) -> str:
    return STDIO if src == STDIO else src + ".sem"


def _default_unpack_output(src: str) -> str:
    return STDIO


def _note_budget(src: str, text: str, data: bytes) -> None:
    """Say (even under -q: it is about the file just written) when a reader's default token
    budget will refuse it, and what option it needs."""
    from semcodec.codec import DEFAULT_MAX_TOKENS, budget_needed

    if len(text.encode("utf-8")) <= DEFAULT_MAX_TOKENS:  # every token is at least one byte: it fits
        return
    need = budget_needed(data, text)
    if need > DEFAULT_MAX_TOKENS:
        note(f"semcodec: note: {src}: {need} tokens, more than readers' default budget of {DEFAULT_MAX_TOKENS}: "
             f"unpack it with --max-tokens {need} (max_tokens={need} in Python)")


def cmd_pack(args: argparse.Namespace) -> int:
    if datasets.wants_dataset_job(args):
        return datasets.run(args, "pack")
    import semcodec
    from semcodec.codec import AUTO
    from semcodec.registry import generator_id_by_name, model_id_by_name

    model_id: int | str = AUTO if args.model == AUTO else model_id_by_name(args.model)
    generator_id = generator_id_by_name(args.generator) if args.generator else 0  # (names checked while parsing)
    plan = output_plan(args.inputs, args.output, _default_pack_output, ".sem")
    many = len(plan) > 1
    failures = 0
    for src, target in plan:
        progress = TokenProgress(f"packing {src}" if many else "packing", quiet=args.quiet)
        try:
            refuse_terminal_output(target, ".sem")
            refuse_existing(target, args.force)
            text = read_text(src)
            data = semcodec.pack(
                text, model_id=model_id, generator_id=generator_id, seed=args.seed,
                width=args.width, height=args.height, check=args.check, progress=progress.update,
            )
            progress.close()
            write_output(target, data, args.force, permission_bits(src))
            rate = f" ({8 * len(data) / len(text):.2f} bits/char)" if text else ""
            line = f"{src}: {len(text)} chars -> {len(data)} B{rate}"
            if args.compare:
                line += f"; {_comparison(text)}"
            say(line, args.quiet)
            _note_budget(src, text, data)
        except Exception as err:
            progress.close()
            if not many:
                raise named(src, err) from err
            failures += 1
            item_failed(src, err)
        finally:
            progress.close()  # (an interruption too: its one line starts on a clean row)
    return batch_result(failures, len(plan), "packed")


def cmd_unpack(args: argparse.Namespace) -> int:
    if datasets.wants_dataset_job(args):
        return datasets.run(args, "unpack")
    from semcodec.codec import SemFile, unpack_many

    plan = output_plan(args.inputs, args.output, _default_unpack_output, ".txt", concatenate=True)
    many = len(plan) > 1
    failures = 0
    blobs: list[bytes] = []
    readable: list[tuple[str, str]] = []
    for src, target in plan:
        try:
            refuse_existing(target, args.force)
            blobs.append(read_sem(src))
            readable.append((src, target))
        except Exception as err:
            if not many:
                raise named(src, err) from err
            failures += 1
            item_failed(src, err)

    # Files get their output as soon as they are decoded; texts bound for stdout keep the
    # inputs' order (`unpack a.sem b.sem > both.txt`), each written once those before it are.
    stdout_queue = [i for i, (_, target) in enumerate(readable) if target == STDIO]
    ready: dict[int, SemFile | SemError] = {}

    def write(index: int, outcome: SemFile | SemError) -> None:
        if readable[index][1] != STDIO:
            emit(index, outcome)
            return
        ready[index] = outcome
        while stdout_queue and stdout_queue[0] in ready:
            first = stdout_queue.pop(0)
            emit(first, ready.pop(first))

    def emit(index: int, outcome: SemFile | SemError) -> None:
        src, target = readable[index]
        if target == STDIO:
            progress.clear()  # the text starts on a clean row of the terminal
        try:
            if isinstance(outcome, SemError):
                raise outcome
            write_output(target, outcome.text.encode("utf-8"), args.force, permission_bits(src))
        except Exception as err:
            if reader_left(err):  # `| head`: stop, as one file would, not one failure per file
                raise
            fail(src, err)

    def fail(src: str, err: Exception) -> None:
        nonlocal failures
        if not many:
            raise named(src, err) from err
        failures += 1
        progress.close()
        item_failed(src, err)

    # One shared model pass per step serves every file; each output is written as its file ends.
    progress = TokenProgress("decoding", quiet=args.quiet)
    try:
        if blobs:
            unpack_many(blobs, progress.on_step, max_tokens=args.max_tokens, on_file=write)
    finally:
        progress.close()
    return batch_result(failures, len(plan), "unpacked")


def _info(path: str, decode: bool, max_tokens: int | None = None) -> dict[str, object]:
    """Every header field, the sizes and rates of the ``.sem`` file at ``path``; with ``decode``, its text too."""
    import semcodec
    from semcodec import ubpp
    from semcodec.container import decode_header
    from semcodec.registry import generator_name, model_spec

    data = read_sem(path)
    header, check_value, offset = decode_header(data)
    info: dict[str, object] = {
        "format_version": header.version,
        "file_bytes": len(data),
        "header_bytes": offset,
        "payload_bytes": len(data) - offset,
        "payload_bits": 8 * (len(data) - offset),
        "model_id": header.model_id,
        "model": model_spec(header.model_id).name,
        "generator_id": header.generator_id,
        "generator": generator_name(header.generator_id),
        "seed": header.seed,
        "width": header.width,
        "height": header.height,
        "integrity_check": check_value.hex() if header.check else None,
        ubpp.KEY: ubpp.reported(8 * len(data), header.width, header.height),
        ubpp.KEY_AT_1024: ubpp.reported(8 * len(data), 1024, 1024),
    }
    if decode:
        decoded = semcodec.unpack(data, max_tokens=max_tokens)
        bpc = decoded.bits_per_character
        info.update(
            characters=len(decoded.text),
            tokens=decoded.n_tokens,
            bits_per_character=None if bpc is None else round(bpc, 4),
            text=decoded.text,
        )
    return info


def cmd_info(args: argparse.Namespace) -> int:
    try:
        info = _info(args.input, decode=not args.header_only, max_tokens=args.max_tokens)
    except Exception as err:
        raise named(args.input, err) from err
    # Whatever stdout's encoding: JSON falls back to \u escapes (still JSON), the listing to
    # backslash escapes, rather than failing halfway through the output.
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    if args.json:
        out = json.dumps(info, ensure_ascii=False, indent=2)
        if not _encodable(out, encoding):
            out = json.dumps(info, ensure_ascii=True, indent=2)
    else:
        width = max(len(k) for k in info)
        lines = []
        for key, value in info.items():
            shown = printable(value) if isinstance(value, str) else value  # a hostile text may hold escapes
            lines.append(f"{key:<{width}}  {shown}")
        out = "\n".join(lines)
        if not _encodable(out, encoding):
            out = out.encode(encoding, "backslashreplace").decode(encoding)
    print(out)
    return EXIT_OK


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True
