"""semcodec over datasets: Parquet tables of captions and folders of images, locally or on Ray.

Two layers, both documented in their modules:

* :mod:`.datasets` — functions on ``ray.data.Dataset`` (each adds columns, lazily, on an
  actor pool that loads the model once per worker):
  :func:`pack_dataset` (+ binary ``sem``), :func:`unpack_dataset` (+ ``text``),
  :func:`encode_dataset` (images → ``sem`` + ``text``), :func:`decode_dataset` (→ ``image``);
* :mod:`.jobs` — resumable jobs on files, run here or on a Ray cluster:
  :func:`pack_table` / :func:`unpack_table` (Parquet file or folder in, Parquet out),
  :func:`encode_folder` / :func:`decode_folder` (folders of images / ``.sem`` files).

Every row gets an ``error`` cell (null when it went well): a bad row is recorded, never
dropped, and never stops the job. The batch coders in :mod:`.coders` and :mod:`.images`
are what every distributor runs. Ray is needed only for :mod:`.datasets` and the ``ray``
distributor (``pip install 'semcodec[ray]'``); the local distributor needs only pyarrow.
Importing this package imports neither.

    >>> import pyarrow as pa
    >>> from semcodec.data import TextPacker, TextUnpacker
    >>> table = pa.table({"text": ["Two dogs on a beach.", "A lighthouse at dusk."]})
    >>> back = TextUnpacker()(TextPacker()(table).rename_columns(["original", "sem", "error"]))
    >>> back["text"].to_pylist() == table["text"].to_pylist()
    True
"""

from __future__ import annotations

from semcodec.data.coders import PackOptions, TextPacker, TextUnpacker
from semcodec.data.datasets import decode_dataset, encode_dataset, pack_dataset, unpack_dataset
from semcodec.data.images import ImageOptions
from semcodec.data.jobs import JobReport, decode_folder, encode_folder, pack_table, unpack_table

__all__ = [
    "ImageOptions",
    "JobReport",
    "PackOptions",
    "TextPacker",
    "TextUnpacker",
    "decode_dataset",
    "decode_folder",
    "encode_dataset",
    "encode_folder",
    "pack_dataset",
    "pack_table",
    "unpack_dataset",
    "unpack_table",
]
