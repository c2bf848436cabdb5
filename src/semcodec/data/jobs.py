"""Dataset jobs on files: Parquet tables (pack/unpack) and folders of images or ``.sem`` files.

A job is cut into *parts* named by what they hold, so a job that dies can be re-run and
skips what it finished:

* a table job reads Parquet files (one file, or every ``*.parquet`` of a folder, by name)
  and cuts each into row ranges; part ``part-FFFFF-RRRRRRRRRRRR.parquet`` holds rows
  ``R ..`` of input file ``F``. A part is written whole or not at all (temporary file,
  then rename), so an existing part is complete. With ``-o OUT.parquet`` the parts are
  staged in ``OUT.parquet.parts/`` and joined, in order, into ``OUT.parquet`` at the end;
  with ``-o OUT/`` the parts are the output (a folder of Parquet files, readable as one
  table by pyarrow, pandas, DuckDB, Spark or ``ray.data.read_parquet``). A small manifest
  (``_semcodec_job.json``) records what the parts are parts of: resuming a different
  job into the same place is refused.
* an image job's parts are its output files (atomic too); a re-run skips outputs that
  exist (``force`` redoes them).

A bad row never stops a job: a table row gets its message in the ``error`` column (its
``sem``/``text`` is null), an image gets a line in ``semcodec-errors.jsonl`` next to the
outputs; the job's report counts them (exit code 4 when there are any).

Distributors: ``local`` runs the parts in this process (pyarrow is the only extra
dependency); ``ray`` runs them on a Ray actor pool (``address`` joins an existing
cluster, else a local one is started and stopped again). Multi-node clusters need the
inputs and outputs on storage every node sees.

    >>> import tempfile, pathlib, pyarrow as pa, pyarrow.parquet as pq
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> pq.write_table(pa.table({"id": [7, 8], "text": ["A red boat.", "Two dogs."]}), d / "in.parquet")
    >>> pack_table(d / "in.parquet", d / "out.parquet", progress=False).exit_code
    0
    >>> report = unpack_table(d / "out.parquet", d / "back.parquet", progress=False)
    >>> pq.read_table(d / "back.parquet").column_names
    ['id', 'text', 'sem', 'error']
    >>> pq.read_table(d / "back.parquet")["text"].to_pylist()
    ['A red boat.', 'Two dogs.']
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semcodec.data.coders import ERROR_COLUMN, SEM_COLUMN, TEXT_COLUMN, PackOptions, TextPacker, TextUnpacker
from semcodec.data.images import ImageDecoder, ImageEncoder, ImageOptions
from semcodec.errors import SemInputError
from semcodec.exitcodes import EXIT_OK, EXIT_PARTIAL
from semcodec.fileio import OutputExistsError, write_output

if TYPE_CHECKING:
    import pyarrow as pa

DISTRIBUTORS = ("local", "ray")
DEFAULT_ROWS_PER_PART = 256
MANIFEST = "_semcodec_job.json"
ERRORS_SIDECAR = "semcodec-errors.jsonl"


def require_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        from semcodec.pipeline.errors import BackendUnavailableError

        raise BackendUnavailableError("Parquet input needs pyarrow: pip install 'semcodec[ray]' (or pyarrow)") from None
    return pyarrow


@dataclass
class JobReport:
    """What a job did. ``failures`` are whole parts that could not be done (re-run to retry)."""

    output: Path
    rows: int = 0
    bad_rows: int = 0
    parts: int = 0
    skipped_parts: int = 0
    failures: list[str] = field(default_factory=list)
    errors_at: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.bad_rows or self.failures else EXIT_OK

    def summary(self) -> str:
        done = f"{self.rows} rows in {self.parts} part(s) ({self.skipped_parts} already done)"
        bad = f"; {self.bad_rows} row(s) failed, see {self.errors_at}" if self.bad_rows else ""
        failed = f"; {len(self.failures)} part(s) failed (re-run to retry)" if self.failures else ""
        return f"{self.output}: {done}{bad}{failed}"


# -- table jobs --------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """Rows ``start .. stop`` of input file ``source``, written as ``name``."""

    name: str
    source: str
    start: int
    stop: int


@dataclass(frozen=True)
class TableJob:
    """A pack or unpack of one column of a table (picklable: it travels to Ray workers).

    ``max_tokens`` is an unpack's token budget per row (None: the codec's default).
    """

    action: str  # "pack" | "unpack"
    column: str
    output_column: str
    error_column: str = ERROR_COLUMN
    pack: PackOptions = field(default_factory=PackOptions)
    max_tokens: int | None = None

    def coder(self) -> Callable[..., pa.Table]:
        if self.action == "pack":
            return TextPacker(self.column, self.output_column, self.error_column, self.pack)
        return TextUnpacker(self.column, self.output_column, self.error_column, max_tokens=self.max_tokens)


def parquet_inputs(path: Path) -> list[Path]:
    """A Parquet file, or the ``*.parquet`` files of a folder sorted by name (``_``/``.`` names skipped).

    Paths are absolute: Ray workers do not share the driver's working directory.
    """
    path = path.resolve()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".parquet" and not p.name.startswith(("_", ".")))
        if not files:
            raise SemInputError(f"{path}: no .parquet files")
        return files
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    return [path]


def plan_parts(files: list[Path], rows_per_part: int, job: TableJob | None = None) -> list[Part]:
    """Deterministic parts: each file cut into ranges of ``rows_per_part`` rows.

    With ``job``, every file is first checked to have the job's column (see
    :func:`semcodec.data.tables.check_inputs`): a missing column is one message naming the
    input, before any work.
    """
    from semcodec.data.tables import check_inputs

    counts = check_inputs(files, job.column, job.action) if job else [_rows(f) for f in files]
    parts = []
    for f_index, (source, n) in enumerate(zip(files, counts, strict=True)):
        for start in range(0, n, rows_per_part):
            stop = min(n, start + rows_per_part)
            parts.append(Part(f"part-{f_index:05d}-{start:012d}.parquet", str(source), start, stop))
    return parts


def _rows(source: Path) -> int:
    from semcodec.data.tables import open_parquet

    return int(open_parquet(source).metadata.num_rows)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_output(path, buf.getvalue(), force=True)


class PartWorker:
    """Codes whole parts: read the rows, code them, write the part. A Ray actor or a local object."""

    def __init__(self, job: TableJob, staging: str) -> None:
        from semcodec.data.tables import TableReader

        self.coder = job.coder()
        self.job = job
        self.staging = Path(staging)
        self.reader = TableReader(job.column, job.action)  # one footer parse per file, not per part

    def run(self, part: Part) -> dict[str, Any]:
        """``{name, rows, bad, failure}``; a failure (unreadable rows, full disk) is its message,
        naming the input and its rows."""
        from semcodec.data.coders import error_message

        try:
            rows, refused = self.reader.read(part.source, part.start, part.stop)
            table = self.coder(rows, refused)
            write_parquet_atomic(table, self.staging / part.name)
            bad = table.num_rows - table[self.job.error_column].null_count
            return {"name": part.name, "rows": table.num_rows, "bad": bad, "failure": None}
        except Exception as err:
            where = f"{part.source} (rows {part.start}..{part.stop - 1})"
            return {"name": part.name, "rows": 0, "bad": 0, "failure": f"{where}: {error_message(err)}"}

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        results = [self.run(Part(**row)) for row in batch.to_pylist()]
        schema = pa.schema([("name", pa.string()), ("rows", pa.int64()), ("bad", pa.int64()), ("failure", pa.string())])
        return pa.Table.from_pylist(results, schema=schema)


def _layout(out: Path) -> tuple[Path, bool]:
    """The folder the parts go to, and whether they are joined into one file ``out`` at the end."""
    if out.suffix == ".parquet" and not out.is_dir():
        return out.with_name(out.name + ".parts"), True
    return out, False


def _manifest(job: TableJob, files: list[Path], rows_per_part: int) -> dict[str, Any]:
    inputs = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return {"job": asdict(job), "rows_per_part": rows_per_part, "inputs": inputs}


def _ours(name: str) -> bool:
    """A name a table job writes in its parts folder: a part, the manifest, or a temp file of either."""
    plain = name[1:].split(".", 1)[0] if name.startswith(".") else name
    return plain.startswith("part-") or plain == MANIFEST.removesuffix(".json") or name == MANIFEST


@contextlib.contextmanager
def _claim(staging: Path, join: bool, out: Path, force: bool) -> Iterator[None]:
    """The parts folder, created if needed and locked for this job (``flock``, released at exit).

    A second job on the same output fails at once with one line instead of racing this one.
    A parts folder that ends with no part in it is left as it was found (no manifest, and
    removed if this job made it). For ``-o OUT.parquet`` the folder is this job's own:
    never a symlink, made with ``mkdir``.
    """
    import fcntl
    import stat

    made = False
    try:
        if join:
            os.mkdir(staging)
        else:
            staging.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(staging)
        made = True
    except FileExistsError:
        pass
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    if join:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(staging, flags)
    except OSError as err:
        if join and err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SemInputError(f"{staging} is not a folder (a symlink or a file): refusing to use it") from None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SemInputError(f"{out} is being written by another semcodec job; wait for it to finish") from None
        now = os.lstat(staging) if join else os.stat(staging)
        if not (stat.S_ISDIR(now.st_mode) and os.path.samestat(now, os.fstat(fd))):
            # the job that held the lock finished (and removed its parts folder) meanwhile
            if join and out.exists() and not force:
                raise OutputExistsError(out)
            raise SemInputError(f"{out} was being written by another semcodec job; run again once it is done")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                names = os.listdir(staging)
                if not any(n.startswith("part-") and n.endswith(".parquet") for n in names):
                    if MANIFEST in names:
                        os.unlink(staging / MANIFEST)
                    if made:
                        os.rmdir(staging)
    finally:
        os.close(fd)


def _prepare(staging: Path, manifest: dict[str, Any], force: bool, files: list[Path]) -> None:
    """Check that the parts folder is empty or belongs to this very job (``force``: clear its parts)."""
    from semcodec.fileio import refuse_inputs

    marker = staging / MANIFEST
    if force:
        for p in staging.iterdir():
            if p.name == MANIFEST or (p.name.startswith("part-") and p.suffix == ".parquet"):
                refuse_inputs(files, p)  # a hard link to an input is not cleared either
                p.unlink()
    if marker.exists():
        if json.loads(marker.read_text()) != json.loads(json.dumps(manifest)):
            raise SemInputError(
                f"{staging} holds parts of a different job (other inputs or options); remove it or use -f"
            )
        return
    if any(not p.name.startswith(".") for p in staging.iterdir()):
        raise SemInputError(f"{staging} exists and is not empty (use an empty or new folder, or -f)")
    write_output(marker, (json.dumps(manifest, indent=1) + "\n").encode(), force=True)


def _join(parts: list[Part], staging: Path, out: Path, force: bool) -> None:
    """Concatenate the parts, in order, into ``out`` (a new file, put in place atomically by
    :func:`semcodec.fileio.output_stream`), then remove the parts folder's own files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semcodec.fileio import output_stream

    with output_stream(out, force) as handle:
        writer: pq.ParquetWriter | None = None
        schema: pa.Schema | None = None
        for part in parts:
            table = pq.read_table(staging / part.name)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(handle, schema)
            writer.write_table(table.cast(schema))
        if writer is None:  # an empty input: an empty output with no columns to guess
            pq.write_table(pa.table({}), handle)
        else:
            writer.close()
    for name in os.listdir(staging):
        if _ours(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging / name)
    with contextlib.suppress(OSError):  # something else in it (not ours): it stays
        os.rmdir(staging)


def run_table_job(
    job: TableJob,
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    distributor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    rows_per_part: int = DEFAULT_ROWS_PER_PART,
    force: bool = False,
    progress: bool = True,
) -> JobReport:
    """Run ``job`` over a Parquet file or folder into ``out_path`` (see the module docstring).

    Inputs are never removed or replaced: an output (or parts folder) that is an input, or
    holds one, is refused before any work."""
    from semcodec.fileio import refuse_existing, refuse_inputs

    require_pyarrow()
    if distributor not in DISTRIBUTORS:
        raise SemInputError(f"unknown distributor {distributor!r} (known: {', '.join(DISTRIBUTORS)})")
    if rows_per_part < 1:
        raise SemInputError("rows per part must be at least 1")
    out = Path(out_path)
    staging, join = _layout(out)
    files = parquet_inputs(Path(in_path))
    refuse_inputs([Path(in_path), *files], out, folder=not join)
    refuse_inputs([Path(in_path), *files], staging, folder=True)
    if join:
        refuse_existing(out, force)  # the join replaces it at the very end, atomically
    parts = plan_parts(files, rows_per_part, job)
    with _claim(staging, join, out, force):
        _prepare(staging, _manifest(job, files, rows_per_part), force, files)
        report = _run_claimed(job, parts, staging, out, distributor, address, workers, progress)
        if join and not report.failures:
            _join(parts, staging, out, force)
    return report


def _run_claimed(
    job: TableJob, parts: list[Part], staging: Path, out: Path, distributor: str, address: str | None,
    workers: int | None, progress: bool,
) -> JobReport:
    pending = [p for p in parts if not (staging / p.name).exists()]
    report = JobReport(out, parts=len(parts), skipped_parts=len(parts) - len(pending),
                       errors_at=f"the {job.error_column!r} column of {out}")
    total = sum(p.stop - p.start for p in parts)
    bar = _bar(f"{job.action}: rows", total, progress)
    waiting = {p.name for p in pending}
    done = sum(p.stop - p.start for p in parts if p.name not in waiting)
    bar(done)
    for result in _run_parts(job, pending, staging, distributor, address, workers):
        if result["failure"]:
            report.failures.append(result["failure"])
            _say(f"semcodec: error: {result['failure']}", progress=True)
            continue
        done += result["rows"]
        bar(done)
    # Count bad rows over every part (also those finished by an earlier run).
    import pyarrow.parquet as pq

    for part in parts:
        path = staging / part.name
        if path.exists():
            column = pq.read_table(path, columns=[job.error_column])[job.error_column]
            report.rows += len(column)
            report.bad_rows += len(column) - column.null_count
    return report


def _run_parts(
    job: TableJob, pending: list[Part], staging: Path, distributor: str, address: str | None, workers: int | None
) -> Iterator[dict[str, Any]]:
    if not pending:
        return
    if distributor == "local":
        worker = PartWorker(job, str(staging))
        for part in pending:
            yield worker.run(part)
        return
    with ray_session(address) as ray:
        from semcodec.data.datasets import actor_pool_args

        blocks = min(len(pending), 1000)
        ds = ray.data.from_items([asdict(p) for p in pending], override_num_blocks=blocks)
        ds.context.execution_options.preserve_order = True
        results = _map_batches(
            ds, PartWorker,
            fn_constructor_kwargs={"job": job, "staging": str(staging.resolve())},
            batch_size=1,
            batch_format="pyarrow",
            udf_modifying_row_count=False,
            # The parts are in memory and their results go to this process: nothing else
            # wants a CPU, so every worker starts (and loads the model) at once.
            **actor_pool_args(workers, 1, 0, fixed=True, blocks=blocks),
        )
        yield from results.iter_rows()


def pack_table(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    column: str = TEXT_COLUMN,
    sem_column: str = SEM_COLUMN,
    options: PackOptions | None = None,
    **run: Any,
) -> JobReport:
    """Every input column plus binary ``sem`` (``semcodec.pack`` of ``column``) and ``error``.

    ``run`` takes :func:`run_table_job`'s keywords: ``distributor``, ``address``, ``workers``,
    ``rows_per_part``, ``force``, ``progress``.
    """
    return run_table_job(TableJob("pack", column, sem_column, pack=options or PackOptions()), in_path, out_path, **run)


def unpack_table(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    column: str = SEM_COLUMN,
    text_column: str = TEXT_COLUMN,
    max_tokens: int | None = None,
    **run: Any,
) -> JobReport:
    """Every input column plus ``text`` decoded from ``column`` (an existing ``text`` is replaced) and ``error``.

    ``max_tokens``: each row's token budget (None: the codec's default); a row over it gets
    its message in ``error``.
    """
    job = TableJob("unpack", column, text_column, max_tokens=max_tokens)
    return run_table_job(job, in_path, out_path, **run)


# -- Ray session -------------------------------------------------------------------


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, initialised: joins ``address`` or starts a local cluster, and stops what it started.

    Quiet by design: Ray's own progress bars and INFO logs are off (our progress line counts
    rows), workers' logs stay in the session folder (``log_to_driver=False``), and the
    notice that a new local cluster uses token authentication (Ray's secure default, kept)
    is not printed. The job's actor pools do not restart a dead worker (``max_restarts=0``,
    see :func:`_map_batches`), which also ends the ``core_worker.cc`` error line Ray prints
    for every restartable actor whose constructor arguments sit in the object store.
    """
    import logging

    from semcodec.data.datasets import require_ray

    ray = require_ray()
    started = False
    if not ray.is_initialized():
        notice = logging.getLogger(_TOKEN_AUTH_LOGGER)
        notice.addFilter(_drop_token_auth_notice)
        try:
            ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        finally:
            notice.removeFilter(_drop_token_auth_notice)
        started = True
    # Our own progress line counts rows; Ray's bars and logs would interleave with it (row
    # and part failures are reported by the job itself).
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _map_batches(ds: Any, fn: type, **kwargs: Any) -> Any:
    """``ds.map_batches(fn, **kwargs)`` with ``max_restarts=0`` where this Ray takes it.

    Ray Data's default restarts a dead worker forever and retries its batch forever: a part
    that kills its worker (out of memory) would loop. Here the job stops with the error and
    a re-run resumes from the finished parts. (Ray 2.60 takes the setting only as a
    deprecated ``**ray_remote_args``; its deprecation warning is not for our users.)
    """
    import inspect
    import warnings

    if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(ds.map_batches).parameters.values()):
        kwargs["max_restarts"] = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(fn, **kwargs)

_TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _drop_token_auth_notice(record: Any) -> bool:
    return not str(record.msg).startswith("Token authentication is enabled for this Ray cluster")


def _bar(label: str, total: int, enabled: bool) -> Callable[[int], None]:
    from semcodec.pipeline.progress import Progress

    return Progress(enabled=enabled, prefix="semcodec: ").steps(label, total)


def _say(message: str, progress: bool) -> None:
    import sys

    if progress:
        print(message, file=sys.stderr, flush=True)


# -- image folder jobs ---------------------------------------------------------------


class FileWorker:
    """Encodes images into ``.sem`` files, or decodes ``.sem`` files into images; one batch at a time."""

    def __init__(self, action: str, options: ImageOptions) -> None:
        self.action = action
        self.coder: ImageEncoder | ImageDecoder = ImageEncoder(options) if action == "encode" else ImageDecoder(options)

    def run(self, items: list[tuple[str, str]]) -> list[str | None]:
        """The error (or None) for each ``(source, output)``; outputs are written atomically."""
        from semcodec.data.coders import error_message

        cells: list[Any] = []
        for source, _ in items:
            try:
                cells.append(Path(source).read_bytes())
            except OSError as err:
                cells.append(err)
        readable = [i for i, c in enumerate(cells) if not isinstance(c, OSError)]
        errors: list[str | None] = [error_message(c) if isinstance(c, OSError) else None for c in cells]
        if isinstance(self.coder, ImageEncoder):
            out = self.coder.map_cells([cells[i] for i in readable], [Path(items[i][0]).name for i in readable])
        else:
            out = self.coder.decode_cells([cells[i] for i in readable])
        for i, (data, _text, error) in zip(readable, out, strict=True):
            if error is None and data is not None:
                try:
                    write_output(items[i][1], data, force=True)
                except OSError as err:
                    error = error_message(err)
            errors[i] = error
        return errors

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        rows = batch.to_pylist()
        errors = self.run([(r["source"], r["output"]) for r in rows])
        return pa.table({"source": [r["source"] for r in rows], "error": pa.array(errors, pa.string())})


def run_folder_job(
    action: str,
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: ImageOptions | None = None,
    *,
    distributor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    num_gpus: float = 0,
    force: bool = False,
    progress: bool = True,
) -> JobReport:
    """``encode`` a folder of images into ``.sem`` files, or ``decode`` a folder of ``.sem`` files.

    Outputs that exist are finished work and skipped (``force`` redoes them); failures go
    to ``OUT/semcodec-errors.jsonl`` (one ``{"input", "error"}`` per line) and the report.
    """
    from semcodec.pipeline import imaging
    from semcodec.pipeline.batch import images_in, output_names

    if distributor not in DISTRIBUTORS:
        raise SemInputError(f"unknown distributor {distributor!r} (known: {', '.join(DISTRIBUTORS)})")
    options = options or ImageOptions()
    source, out = Path(in_dir), Path(out_dir)
    if not source.is_dir():
        raise SemInputError(f"{source}: not a folder (dataset jobs take a folder of inputs)")
    if out.exists() and not out.is_dir():
        raise SemInputError(f"{out} exists and is not a folder")
    if action == "encode":
        inputs = images_in(source)
        outputs = output_names(inputs, out, ".sem")
        kinds = f"images ({', '.join(sorted(imaging.IMAGE_SUFFIXES))})"
    else:
        inputs = sorted(p for p in source.iterdir() if p.suffix == ".sem" and p.is_file())
        outputs = output_names(inputs, out, "." + options.image_format)
        kinds = ".sem files"
    if not inputs:
        raise SemInputError(f"{source}: no {kinds}")
    out.mkdir(parents=True, exist_ok=True)
    items = [(str(i), str(o)) for i, o in zip(inputs, outputs, strict=True)]
    pending = [item for item in items if force or not Path(item[1]).exists()]
    report = JobReport(out, rows=len(items), parts=len(items), skipped_parts=len(items) - len(pending),
                       errors_at=str(out / ERRORS_SIDECAR))
    bar = _bar(f"{action}: files", len(items), progress)
    done = report.skipped_parts
    bar(done)
    failed: list[dict[str, str]] = []
    for src, error in _run_files(action, options, pending, distributor, address, workers, num_gpus):
        done += 1
        bar(done)
        if error is not None:
            failed.append({"input": src, "error": error})
            _say(f"semcodec: error: {src}: {error}", progress)
    report.bad_rows = len(failed)
    sidecar = out / ERRORS_SIDECAR
    if failed:
        lines = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failed)
        write_output(sidecar, lines.encode("utf-8"), force=True)
    elif sidecar.exists():
        sidecar.unlink()
    return report


def _run_files(
    action: str,
    options: ImageOptions,
    pending: list[tuple[str, str]],
    distributor: str,
    address: str | None,
    workers: int | None,
    num_gpus: float,
) -> Iterator[tuple[str, str | None]]:
    if not pending:
        return
    chunk = max(1, options.jobs)
    if distributor == "local":
        worker = FileWorker(action, options)
        for lo in range(0, len(pending), chunk):
            items = pending[lo : lo + chunk]
            yield from zip((s for s, _ in items), worker.run(items), strict=True)
        return
    with ray_session(address) as ray:
        from semcodec.data.datasets import actor_pool_args, backend_env

        rows = [{"source": str(Path(s).resolve()), "output": str(Path(o).resolve())} for s, o in pending]
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 1000))
        ds.context.execution_options.preserve_order = True
        results = _map_batches(
            ds, FileWorker,
            fn_constructor_kwargs={"action": action, "options": options.with_secrets()},  # not in runtime_env: logged
            batch_size=chunk,
            batch_format="pyarrow",
            udf_modifying_row_count=False,
            runtime_env=backend_env(),
            # As in _run_parts, but a pool that asks for GPUs grows: it finds out how many there are.
            **actor_pool_args(workers, 1, num_gpus, fixed=not num_gpus, blocks=-(-len(rows) // chunk)),
        )
        for (src, _), row in zip(pending, results.iter_rows(), strict=True):
            yield src, row["error"]


def encode_folder(in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                  options: ImageOptions | None = None, **run: Any) -> JobReport:
    """:func:`run_folder_job` with ``action="encode"``."""
    return run_folder_job("encode", in_dir, out_dir, options, **run)


def decode_folder(in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                  options: ImageOptions | None = None, **run: Any) -> JobReport:
    """:func:`run_folder_job` with ``action="decode"``."""
    return run_folder_job("decode", in_dir, out_dir, options, **run)


__all__ = [
    "DISTRIBUTORS",
    "JobReport",
    "Part",
    "PartWorker",
    "TableJob",
    "decode_folder",
    "encode_folder",
    "pack_table",
    "run_folder_job",
    "run_table_job",
    "unpack_table",
]
