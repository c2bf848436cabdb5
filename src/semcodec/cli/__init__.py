"""The ``semcodec`` command line: people in, exit codes out.

One package, one job per module:

* :mod:`.failures` — every exception → exit code and one-line message, for every command;
* :mod:`.common` — argument types, bounded inputs, output planning, stderr lines;
* :mod:`.text` (``pack``, ``unpack``, ``info``), :mod:`.model`, :mod:`.images`
  (``encode``, ``decode``), :mod:`.bench` — only parsers and calls.

Library code (:mod:`semcodec.pipeline`, :mod:`semcodec.bench`) never imports this package.

    >>> import os, tempfile
    >>> home = os.getcwd(); os.chdir(tempfile.mkdtemp())
    >>> main(["pack", "missing.txt"])  # stderr: semcodec: error: missing.txt: No such file or directory
    1
    >>> os.chdir(home)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from semcodec.cli.failures import interrupted, run, signals_interrupt

MAIN_DESCRIPTION = """\
Semantic image codec at micro-bits per pixel. A description of an image is
arithmetic-coded with a small language model (SmolLM2-135M-Instruct, run in exact
integer arithmetic so files decode identically on every machine) into a .sem file of
a dozen bytes; a text-to-image model paints it back.

text <-> .sem:   semcodec pack caption.txt -o caption.sem
                 semcodec unpack caption.sem            (text to stdout, byte for byte)
                 cat caption.sem | semcodec unpack      (no FILE: a pipe is read, as gzip does)
                 semcodec info caption.sem --json
image <-> .sem:  semcodec encode photo.jpg -o photo.sem --captioner openai
                 semcodec decode photo.sem -o photo.png
"""


TEXT_COMMANDS = frozenset({"pack", "unpack", "info"})
"""Commands :func:`main` parses with a parser of the text commands alone."""


def build_parser(text_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line; ``text_only``: just ``pack``, ``unpack`` and ``info``.

    The image and bench parsers take their defaults from the image pipeline and the
    benches, whose imports cost a cold ``semcodec unpack`` about 50 ms; a text command's
    own parser (its options, usage and errors) is the same either way.
    """
    from semcodec.cli import model, text
    from semcodec.cli.common import FORMATTER, TOP_STDIO_HELP, CommandParser
    from semcodec.exitcodes import EXIT_CODES_HELP

    parser = argparse.ArgumentParser(
        prog="semcodec", description=MAIN_DESCRIPTION, epilog=f"{TOP_STDIO_HELP}\n\n{EXIT_CODES_HELP}",
        formatter_class=FORMATTER,
    )
    parser.add_argument("--version", action="version", version="semcodec 0.1.0 (.sem format 3; reads 1, 2 and 3)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    text.register(sub)
    if not text_only:
        from semcodec.cli import bench, images

        model.register(sub)
        images.register(sub)
        bench.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (usage errors exit 2 through argparse) and run the command.

    From its first line on, Ctrl-C, SIGTERM and SIGHUP end the command through its cleanup
    (no temp file is left) with one line and exit code 128 + the signal's number.
    """
    with signals_interrupt():
        try:
            words = list(sys.argv[1:] if argv is None else argv)
            args = build_parser(text_only=bool(words) and words[0] in TEXT_COMMANDS).parse_args(words)
            return run(args.func, args)
        except KeyboardInterrupt as err:  # while the command's modules load or its arguments parse
            return interrupted(err)


if __name__ == "__main__":
    sys.exit(main())
