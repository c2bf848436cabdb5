"""The dataset options of ``semcodec pack|unpack|encode|decode`` and their dispatch to
:mod:`semcodec.data.jobs` (library code, which never imports this module).

The command modules call :func:`add_options` on their parsers and, first thing in the
command, ``if wants_dataset_job(args): return run(args, "pack")``. Tables: ``semcodec pack
IN.parquet -o OUT.parquet [--column text]`` writes every input column plus binary ``sem``;
``semcodec unpack OUT.parquet -o BACK.parquet`` adds ``text``. Folders: ``semcodec encode
photos/ -o sems/ --ray``, ``semcodec decode sems/ -o photos/ --ray``. ``--ray`` is
``--distributor ray``; ``--ray-address`` joins a running cluster.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from semcodec.cli.common import int_at_least
from semcodec.cli.failures import note

_HELP = {
    "pack": "Parquet file or folder in, Parquet out (every input column plus binary 'sem' and 'error')",
    "unpack": "Parquet file or folder in, Parquet out (every input column plus 'text' and 'error')",
    "encode": "a folder of images in, a folder of .sem files out (failures in semcodec-errors.jsonl)",
    "decode": "a folder of .sem files in, a folder of images out (failures in semcodec-errors.jsonl)",
}


_positive = int_at_least(1)


def add_options(parser: argparse.ArgumentParser, action: str) -> None:
    """Add the dataset options to the ``action`` subcommand's parser."""
    group = parser.add_argument_group("datasets", f"{_HELP[action]}; a re-run skips finished parts")
    group.add_argument(
        "--distributor", choices=("local", "ray"),
        help="run as a resumable dataset job, here (local) or on Ray (default: local for Parquet input)",
    )
    group.add_argument("--ray", dest="distributor", action="store_const", const="ray", help="--distributor ray")
    group.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (default: start a local one)")
    group.add_argument("--workers", type=_positive, metavar="N", help="Ray workers (default: one per cluster CPU)")
    if action in ("pack", "unpack"):
        default = "text" if action == "pack" else "sem"
        group.add_argument("--column", default=default, help=f"input column to {action} (default {default})")
        group.add_argument("--rows-per-part", type=_positive, default=256, metavar="N",
                           help="rows per output part: the unit of work and of resumption (default 256)")
    else:
        group.add_argument("--gpus", type=float, default=0, metavar="G", help="GPUs per Ray worker (local models)")


def wants_dataset_job(args: argparse.Namespace) -> bool:
    """A dataset job was asked for (``--distributor``/``--ray``), or the input is a table or a folder
    of them (``pack``/``unpack``), or a folder of ``.sem`` files (``decode``)."""
    if getattr(args, "distributor", None) or getattr(args, "ray_address", None):
        return True
    inputs = getattr(args, "inputs", None) or [getattr(args, "input", "-")]
    if len(inputs) != 1:
        return False
    if args.command in ("pack", "unpack"):
        return inputs[0].endswith(".parquet") or _folder_with(Path(inputs[0]), ".parquet")
    return args.command == "decode" and _folder_with(Path(inputs[0]), ".sem")


def _folder_with(path: Path, suffix: str) -> bool:
    try:
        return path.is_dir() and any(p.suffix == suffix for p in path.iterdir())
    except OSError:
        return False


def run(args: argparse.Namespace, action: str) -> int:
    """Run the dataset job ``args`` describe; returns the exit code. Errors propagate to the
    CLI's one error map (:mod:`semcodec.cli.failures`): Ray missing is exit 3, bad input 1."""
    from semcodec.data import jobs
    from semcodec.errors import SemInputError

    distributor = args.distributor or ("ray" if args.ray_address else "local")
    if distributor == "ray":
        from semcodec.data.datasets import require_ray

        require_ray()  # before any work: one clear line and exit code 3 without Ray
    inputs = getattr(args, "inputs", None) or [args.input]
    if len(inputs) != 1:
        raise SemInputError(f"a dataset job takes one input (a Parquet file or a folder), not {len(inputs)}")
    if not args.output or args.output == "-":
        kind = "table" if action in ("pack", "unpack") else "folder"
        raise SemInputError(f"a dataset job needs -o (the output {kind})")
    progress = not getattr(args, "quiet", False)
    run: dict[str, Any] = {
        "distributor": distributor, "address": args.ray_address, "workers": args.workers,
        "force": args.force, "progress": progress,
    }
    if action == "pack":
        report = jobs.pack_table(inputs[0], args.output, column=args.column, options=_pack_options(args),
                                 rows_per_part=args.rows_per_part, **run)
    elif action == "unpack":
        report = jobs.unpack_table(inputs[0], args.output, column=args.column, rows_per_part=args.rows_per_part,
                                   max_tokens=getattr(args, "max_tokens", None), **run)
    else:
        from semcodec.data.images import ImageOptions

        report = jobs.run_folder_job(action, inputs[0], args.output, ImageOptions.from_args(args),
                                     num_gpus=args.gpus, **run)
    if progress or report.exit_code:
        note(f"semcodec: {report.summary()}")
    return report.exit_code


def _pack_options(args: argparse.Namespace) -> Any:
    from semcodec.codec import AUTO
    from semcodec.data.coders import PackOptions
    from semcodec.registry import generator_id_by_name, model_id_by_name

    return PackOptions(
        model_id=args.model if args.model == AUTO else model_id_by_name(args.model),
        generator_id=generator_id_by_name(args.generator) if args.generator else 0,
        seed=args.seed, width=args.width, height=args.height, check=args.check,
    )
