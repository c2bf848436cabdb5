"""semcodec over Ray Data: each function takes a ``ray.data.Dataset`` and returns a new one, lazily.

Model work runs in an actor pool (``map_batches`` with a callable class from
:mod:`semcodec.data.coders` or :mod:`semcodec.data.images`): each actor loads the model once,
takes ``num_cpus`` CPUs (1 by default: the exact coder runs on one BLAS thread, see
``SEMCODEC_THREADS``) and ``num_gpus`` GPUs, and the pool has ``workers`` actors (default:
as many as the cluster has CPUs). Batches reach the coders as Arrow tables, so columns are
kept as they are. Ray hands each *block* to one actor, so a dataset needs at least as
many blocks as workers to use them all (``read_parquet(..., override_num_blocks=N)``,
``from_arrow([table1, table2, ...])`` or ``repartition(N)``). Pools start with one actor
and grow to ``workers``; leave a CPU free for the tasks that read the input, and one per
further pool when chaining (``unpack_dataset(pack_dataset(ds))`` on a 2-CPU cluster waits
forever: give it 3). ``fixed_pool=True`` starts every actor at once instead, for inputs
already in memory whose output goes straight to the driver (see :func:`actor_pool_args`).
The returned dataset keeps the input's row order (its ``DataContext`` has
``preserve_order`` set).

    ray.init()
    ds = ray.data.read_parquet("captions/")
    packed = pack_dataset(ds, text_column="caption")           # + binary "sem", + "error"
    back = unpack_dataset(packed.drop_columns(["caption"]))     # + "text", + "error"
    back.write_parquet("roundtrip/")

Importing this module does not import Ray; each function does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semcodec.data.coders import ERROR_COLUMN, SEM_COLUMN, TEXT_COLUMN, PackOptions, TextPacker, TextUnpacker
from semcodec.data.images import IMAGE_COLUMN, ImageDatasetDecoder, ImageDatasetEncoder, ImageOptions
from semcodec.pipeline.errors import BackendUnavailableError

if TYPE_CHECKING:
    from ray.data import Dataset

DEFAULT_BATCH_ROWS = 64
"""Rows per batch handed to a coder: enough for ``unpack_many``'s lockstep, small enough to spread."""


def require_ray() -> Any:
    """``ray`` (with Ray Data), or :class:`BackendUnavailableError` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise BackendUnavailableError(
            f"the Ray distributor needs Ray Data ({err.name or err}): pip install 'semcodec[ray]'"
        ) from None
    return ray


def actor_pool_args(
    workers: int | None, num_cpus: float, num_gpus: float, *, fixed: bool = False, blocks: int | None = None,
    upstream: Dataset | None = None,
) -> dict[str, Any]:
    """``map_batches`` keyword arguments for an actor pool of ``workers`` (None: as many as the
    cluster can run, see :func:`pool_size`).

    ``blocks``: how many blocks the input has, when known; the pool never has more actors
    (each would load the model for nothing). ``upstream``: the dataset the pool maps, whose
    own actor pools and read tasks hold CPUs while this pool runs.

    By default the pool starts with one actor and grows to ``workers`` as blocks queue up
    (the others join seconds later, each loading the model then). ``fixed`` starts all
    ``workers`` at once; only do that when nothing else in the job needs a CPU while the
    pool runs (input already in memory, output taken by the driver): a fixed pool that
    takes every CPU of the cluster starves the tasks that read its input, and any
    downstream pool or write (``read_parquet`` then hangs on a 2-CPU cluster with 2
    workers, even with reads asking for 0 CPUs; measured with Ray 2.60). A request the
    cluster cannot meet raises :class:`BackendUnavailableError` at once, instead of a job
    that waits forever.
    """
    ray = require_ray()
    if blocks is not None and workers is not None:
        workers = max(1, min(workers, blocks))
    if ray.is_initialized():
        workers = pool_size(ray.cluster_resources(), workers, num_cpus, num_gpus, fixed=fixed,
                            upstream=_upstream_needs(upstream) if upstream is not None else (0.0, 0, False))
    elif workers is None:
        workers = 1
    if blocks is not None:
        workers = max(1, min(workers, blocks))
    if fixed:
        pool = ray.data.ActorPoolStrategy(size=workers)
    else:
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=workers)
    args: dict[str, Any] = {"compute": pool, "num_cpus": num_cpus}
    if num_gpus:
        args["num_gpus"] = num_gpus
    return args


def pool_size(
    resources: dict[str, float], workers: int | None, num_cpus: float, num_gpus: float, *, fixed: bool = False,
    upstream: tuple[float, int, bool] = (0.0, 0, False),
) -> int:
    """How many workers of ``num_cpus`` CPUs and ``num_gpus`` GPUs a pool gets on a cluster with
    ``resources`` (``ray.cluster_resources()``): ``workers``, or when None as many as fit (a
    growing pool asking for more gets as many as fit; a fixed one cannot start: an error).

    ``upstream``: ``(CPUs held by earlier pools of the chain, how many pools, whether tasks
    (reads) need a CPU too)``. Raises :class:`BackendUnavailableError`, one line naming what
    is missing, when the request cannot be met: Ray would wait for it forever.

    >>> pool_size({"CPU": 8.0}, None, 1, 0), pool_size({"CPU": 8.0}, 32, 1, 0, upstream=(0.0, 0, True))
    (8, 7)
    """
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    held, pools, tasks = upstream
    have = f"{cpus:g} CPU{'s' if cpus != 1 else ''}, {gpus:g} GPU{'s' if gpus != 1 else ''}"
    if num_gpus > gpus:
        what = "no GPU" if not gpus else f"{gpus:g} GPU{'s' if gpus != 1 else ''}"
        raise BackendUnavailableError(
            f"each Ray worker asks for {num_gpus:g} GPU{'s' if num_gpus != 1 else ''}, and the Ray cluster has "
            f"{what} ({have}): drop the GPU request (--gpus) or join a cluster with GPUs"
        )
    if num_cpus > cpus:
        raise BackendUnavailableError(
            f"each Ray worker asks for {num_cpus:g} CPUs, and the Ray cluster has {cpus:g} ({have})"
        )
    free = cpus - held - (1 if tasks else 0)
    first = (workers or 1) * num_cpus if fixed else num_cpus
    if first > free:
        need = held + first + (1 if tasks else 0)
        parts = [f"{held:g} for the earlier pools' workers"] if pools else []
        parts.append(f"{first:g} for {'this pool' if pools else 'the pool'}'s {'workers' if fixed else 'first worker'}")
        if pools and not fixed and held == pools * num_cpus:
            parts = [f"{num_cpus:g} for each pool's first worker"]
        if tasks:
            parts.append("1 for the tasks that read the input")
        chain = f"this chain of {pools + 1} actor pools" if pools else "this actor pool"
        raise BackendUnavailableError(
            f"{chain} needs at least {need:g} CPUs ({' and '.join(parts)}), and the Ray cluster has {cpus:g}: "
            "give Ray more CPUs" + (" or materialize() the dataset between the pools" if pools else
                                    " or ask for fewer workers")
        )
    fit = int(free // num_cpus) if num_cpus else int(cpus) or 1
    if num_gpus:
        fit = min(fit, int(gpus // num_gpus))
    if workers is None or (workers > fit and not fixed):  # a growing pool stops where the cluster does
        return max(1, fit)
    if workers > fit:
        raise BackendUnavailableError(
            f"{workers} Ray workers ask for {workers * num_cpus:g} CPUs"
            + (f" and {workers * num_gpus:g} GPUs" if num_gpus else "")
            + f", and the Ray cluster can run {fit} ({have}"
            + (f", {held + (1 if tasks else 0):g} CPUs held by the rest of the job" if held or tasks else "")
            + "): ask for fewer workers"
        )
    return workers


def _upstream_needs(ds: Dataset) -> tuple[float, int, bool]:
    """What ``ds``'s own plan holds while a pool mapping it runs: the CPUs of its actor pools'
    first workers, how many pools, and whether it runs tasks (reads, task maps) needing a CPU.
    (0, 0, False) when the plan cannot be read (another Ray version): no check then."""
    import ray.data

    try:
        stack = [ds._logical_plan.dag]
    except AttributeError:
        return 0.0, 0, False
    held, pools, tasks, seen = 0.0, 0, False, set()
    while stack:
        op = stack.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        compute = getattr(op, "compute", None)
        args = getattr(op, "ray_remote_args", None) or {}
        if isinstance(compute, ray.data.ActorPoolStrategy):
            pools += 1
            held += compute.min_size * float(args.get("num_cpus", 1))
        elif isinstance(compute, ray.data.TaskPoolStrategy) or type(op).__name__.startswith(("Read", "ListFiles")):
            tasks = True
        stack.extend(getattr(op, "input_dependencies", None) or [])
    return held, pools, tasks


def _ordered(ds: Dataset) -> Dataset:
    ds.context.execution_options.preserve_order = True
    return ds


def _map_in_pool(
    ds: Dataset,
    coder: type,
    coder_kwargs: dict[str, Any],
    *,
    batch_size: int,
    workers: int | None,
    num_cpus: float,
    num_gpus: float = 0,
    fixed_pool: bool = False,
    carry_env: bool = False,
) -> Dataset:
    """``ds`` (order kept) mapped by ``coder(**coder_kwargs)`` in an actor pool, batches as Arrow tables.

    ``carry_env``: the workers get this process's backend settings (:func:`backend_env`)
    and, inside ``coder_kwargs["options"]``, its credentials (never in a ``runtime_env``:
    Ray logs those).
    """
    require_ray()
    env: dict[str, Any] = {"runtime_env": backend_env()} if carry_env else {}
    if carry_env:
        coder_kwargs = {**coder_kwargs, "options": (coder_kwargs.get("options") or ImageOptions()).with_secrets()}
    return _ordered(ds).map_batches(
        coder,
        fn_constructor_kwargs=coder_kwargs,
        batch_format="pyarrow",
        batch_size=batch_size,
        udf_modifying_row_count=False,
        **env,
        **actor_pool_args(workers, num_cpus, num_gpus, fixed=fixed_pool, upstream=ds),
    )


def pack_dataset(
    ds: Dataset,
    text_column: str = TEXT_COLUMN,
    *,
    sem_column: str = SEM_COLUMN,
    error_column: str = ERROR_COLUMN,
    options: PackOptions | None = None,
    workers: int | None = None,
    num_cpus: float = 1,
    batch_size: int = DEFAULT_BATCH_ROWS,
    fixed_pool: bool = False,
) -> Dataset:
    """``ds`` plus a binary ``sem`` column (``semcodec.pack`` of ``text_column``) and ``error``.

    A row that cannot be packed (null, not a string, over the token limit) gets a null
    ``sem`` and its message in ``error``; the job goes on. ``options`` sets the header
    fields (model id, generator id, seed, size, check), as ``semcodec pack``'s options do.
    ``fixed_pool`` starts all ``workers`` at once (see the module docstring).
    """
    return _map_in_pool(
        ds,
        TextPacker,
        {"text_column": text_column, "sem_column": sem_column, "error_column": error_column, "options": options},
        batch_size=batch_size, workers=workers, num_cpus=num_cpus, fixed_pool=fixed_pool,
    )


def unpack_dataset(
    ds: Dataset,
    sem_column: str = SEM_COLUMN,
    *,
    text_column: str = TEXT_COLUMN,
    error_column: str = ERROR_COLUMN,
    max_tokens: int | None = None,
    workers: int | None = None,
    num_cpus: float = 1,
    batch_size: int = DEFAULT_BATCH_ROWS,
    fixed_pool: bool = False,
) -> Dataset:
    """``ds`` plus ``text`` decoded from ``sem_column`` and ``error``.

    The rows of a batch decode in lockstep (:func:`semcodec.codec.unpack_many`). A corrupt
    or null cell, or one whose text has more tokens than ``max_tokens`` (None: the codec's
    default budget), gets a null ``text`` and its message in ``error``. An existing column
    named ``text_column`` (or ``error_column``) is replaced.
    """
    return _map_in_pool(
        ds,
        TextUnpacker,
        {"sem_column": sem_column, "text_column": text_column, "error_column": error_column,
         "max_tokens": max_tokens},
        batch_size=batch_size, workers=workers, num_cpus=num_cpus, fixed_pool=fixed_pool,
    )


def encode_dataset(
    ds: Dataset,
    image_column: str = IMAGE_COLUMN,
    *,
    options: ImageOptions | None = None,
    sem_column: str = SEM_COLUMN,
    text_column: str = TEXT_COLUMN,
    error_column: str = ERROR_COLUMN,
    workers: int | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int = 16,
    fixed_pool: bool = False,
) -> Dataset:
    """``ds`` plus ``sem`` (the encoded file), ``text`` (its description) and ``error``.

    ``image_column`` holds encoded image bytes (``read_binary_files``) or image arrays
    (``read_images``). ``options`` are ``semcodec encode``'s: captioner, generator, critic,
    reflection rounds, seeds, bit budget, size, backend timeouts, and ``jobs``, the images
    each worker has in flight at once (API captioners). Give ``num_gpus`` for local models.
    Backend settings read from the environment (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
    ``SEMCODEC_*``, ``HF_*``) go to the workers with them.
    """
    return _map_in_pool(
        ds,
        ImageDatasetEncoder,
        {
            "options": options, "image_column": image_column, "sem_column": sem_column,
            "text_column": text_column, "error_column": error_column,
        },
        batch_size=batch_size, workers=workers, num_cpus=num_cpus, num_gpus=num_gpus, fixed_pool=fixed_pool,
        carry_env=True,
    )


def decode_dataset(
    ds: Dataset,
    sem_column: str = SEM_COLUMN,
    *,
    options: ImageOptions | None = None,
    image_column: str = IMAGE_COLUMN,
    text_column: str = TEXT_COLUMN,
    error_column: str = ERROR_COLUMN,
    workers: int | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int = 16,
    fixed_pool: bool = False,
) -> Dataset:
    """``ds`` plus ``image`` (encoded in ``options.image_format``, PNG by default), ``text`` and ``error``.

    Each file is painted at its header's size and seed with its header's generator, or
    ``options.generator`` when given.
    """
    return _map_in_pool(
        ds,
        ImageDatasetDecoder,
        {
            "options": options, "sem_column": sem_column, "image_column": image_column,
            "text_column": text_column, "error_column": error_column,
        },
        batch_size=batch_size, workers=workers, num_cpus=num_cpus, num_gpus=num_gpus, fixed_pool=fixed_pool,
        carry_env=True,
    )


def backend_env() -> dict[str, Any]:
    """A Ray ``runtime_env`` carrying this process's backend settings (not its secrets, not
    node-local paths) to the workers: :func:`semcodec.data.images.worker_settings`."""
    from semcodec.data.images import worker_settings

    return {"env_vars": worker_settings()}
