"""The exit codes of every ``semcodec`` command, in one place (documented in ``--help``)."""

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_PARTIAL = 4
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70

EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  bad input: not a .sem file, corrupt or truncated, unsupported version, unknown
     model id, a limit exceeded, text that cannot be coded losslessly, output exists
  2  usage error: an unknown option, a missing argument, or an option value that is
     malformed or names nothing known (--width 0, --model 99, --score x), as with gzip
  3  a model or backend is unavailable (weights missing, download or API failed)
  4  a batch finished, but some of its files failed (each is reported on stderr)
  70 internal error (a bug: please report it; SEMCODEC_DEBUG=1 shows the traceback)
  130 interrupted by Ctrl-C; 143 by SIGTERM, 129 by SIGHUP (128 + the signal's number);
      no partial output or temp file is left behind
"""
