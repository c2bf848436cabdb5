"""Parquet inputs of table jobs, read at a cost bounded by what each part needs.

* **Checked up front**: every input file is opened once, before any work, and must have
  the job's column with a fitting type (text for ``pack``, binary for ``unpack``); the
  message names the input file and the column.
* **Per-row byte limits before a value is read**: a row's cell can only be coded when it
  is at most :data:`semcodec.codec.MAX_TEXT_BYTES` (text) or
  :data:`~semcodec.codec.MAX_FILE_BYTES` (``.sem`` data). A row group whose column chunk
  holds more bytes, uncompressed (the footer says so), than its rows times that limit has
  at least one value over it: that column of that group is never decompressed, its rows
  get their message in ``error`` (a 51 KB file cannot expand into gigabytes of strings).
  Other cells are checked by length in Arrow (offsets, no copy) before any becomes a
  Python string (:func:`semcodec.data.coders.bounded`), and a value over the limit that a
  dictionary page repeats for many rows is checked on the dictionary, never expanded.
  A refused cell is null in the output too.
* **Linear in the file**: the footer is parsed once per worker and file, row-group
  offsets are computed once, and a worker that reads consecutive parts (the ``local``
  distributor) continues one stream of small batches instead of re-reading row groups;
  100,000 one-row row groups cost what 100,000 rows cost.

The footer's sizes are what a writer declared. Pages decompress to the sizes their own
headers declare, so a file that lies in its footer still costs at most one page at a time
(read in batches of :data:`BATCH_ROWS` rows), never a whole part of huge values.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from semcodec.errors import SemInputError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

BATCH_ROWS = 64
"""Rows per Arrow batch read from a file: each batch is checked before it is converted."""

CHUNK_SLACK = 4096
"""Bytes of page headers and encoding a column chunk may hold beyond its values."""

RUN_GROUPS = 4096
"""Row groups one Arrow reader is opened over at most (a fresh read never sets up more)."""


def row_limit(action: str) -> int:
    """The most bytes one cell of a ``pack`` (text) or ``unpack`` (``.sem``) column can usefully hold."""
    from semcodec.codec import MAX_FILE_BYTES, MAX_TEXT_BYTES

    return MAX_TEXT_BYTES if action == "pack" else MAX_FILE_BYTES


def too_long(action: str, size: int) -> str:
    """A row's message for a cell of ``size`` bytes over :func:`row_limit` (as the single-file commands say it)."""
    from semcodec.codec import MAX_TOKEN_BYTES, MAX_TOKENS

    limit = row_limit(action)
    if action == "pack":
        return (f"text is longer than {limit} UTF-8 bytes ({size}), so it has more than {MAX_TOKENS} tokens "
                f"(no token is longer than {MAX_TOKEN_BYTES} bytes)")
    return f".sem data is larger than the {limit}-byte limit of a .sem file ({size} bytes)"


def column_fits(action: str, kind: pa.DataType) -> bool:
    """Whether ``action`` can code a column of type ``kind`` (an all-null one can: its rows fail one by one)."""
    import pyarrow as pa

    if pa.types.is_null(kind):
        return True
    if action == "pack":
        return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    return (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
            or pa.types.is_fixed_size_binary(kind))


def open_parquet(source: str | Any, dictionary: str | None = None, metadata: Any = None) -> pq.ParquetFile:
    """``source`` opened for reading in small batches (no pre-buffering of whole row groups);
    the column named ``dictionary`` is read dictionary-encoded (a value many rows repeat is
    held once, not once per row). ``metadata``: the footer, already parsed."""
    import pyarrow.parquet as pq

    options: dict[str, Any] = {"pre_buffer": False, "buffer_size": 1 << 16}
    if dictionary is not None:
        options["read_dictionary"] = [dictionary]
    if metadata is not None:
        options["metadata"] = metadata
    try:
        return pq.ParquetFile(source, **options)
    except Exception as err:
        raise SemInputError(f"{source}: not a readable Parquet file ({err})") from None


def check_inputs(files: list[Any], column: str, action: str) -> list[int]:
    """Each file's row count, after checking that it has ``column`` with a type ``action`` can code.

    Raises :class:`SemInputError` naming the file and the column before any work starts.
    """
    counts = []
    for source in files:
        pf = open_parquet(source)
        schema = pf.schema_arrow
        if column not in schema.names:
            raise SemInputError(f"{source}: no column {column!r} (columns: {', '.join(schema.names) or 'none'})")
        kind = schema.field(column).type
        if not column_fits(action, kind):
            wanted = "text (string)" if action == "pack" else ".sem data (binary)"
            raise SemInputError(f"{source}: column {column!r} holds {kind}, not {wanted}")
        counts.append(pf.metadata.num_rows)
    return counts


@dataclass
class _File:
    """One input's footer, parsed once: row-group offsets, and how each group's column is read."""

    source: str
    pf: pq.ParquetFile
    schema: pa.Schema  # the file's own schema
    starts: list[int]  # first row of each group, then the file's row count
    column: int  # the column's index among the leaves (-1: not a plain leaf)
    oversized: set[int]  # groups whose column is never read
    probe: set[int]  # groups with a dictionary page that could hold a value over the limit
    repeated: dict[int, int]  # probed groups: their longest dictionary value
    dictionary_pf: pq.ParquetFile | None = None  # the column read dictionary-encoded (opened when needed)


class TableReader:
    """Reads rows ``start .. stop`` of Parquet files for one worker, with every cost bounded.

    :meth:`read` returns the rows (all columns), each cell over the per-row limit null, and
    ``{row: message}`` for those cells. Consecutive reads of one file continue one stream.

    Each row group's column is read in one of three ways, decided from the footer:

    * plain, in batches of :data:`BATCH_ROWS` rows (most groups; consecutive ones stream
      as one), each cell checked by length before the rows are handed on;
    * not at all, when the chunk declares more bytes than its rows times the limit;
    * dictionary-encoded, when its dictionary page holds a value over the limit (found by
      decoding that page once): such a value, repeated by every row, is never expanded.
    """

    def __init__(self, column: str, action: str) -> None:
        self.column = column
        self.action = action
        self.limit = row_limit(action)
        self._file: _File | None = None
        self._stream: tuple[str, int, Iterator[tuple[int, pa.Table, dict[int, str]]]] | None = None
        self._pending: tuple[int, pa.Table, dict[int, str]] | None = None

    def _open(self, source: str) -> _File:
        if self._file is not None and self._file.source == source:
            return self._file
        pf = open_parquet(source)
        md = pf.metadata
        starts = [0]
        for g in range(md.num_row_groups):
            starts.append(starts[-1] + md.row_group(g).num_rows)
        names = [md.schema.column(i).path for i in range(md.num_columns)]
        column = names.index(self.column) if self.column in names else -1
        oversized, probe = set(), set()
        if column >= 0:
            for g in range(md.num_row_groups):
                chunk = md.row_group(g).column(column)
                size = chunk.total_uncompressed_size
                if size > (starts[g + 1] - starts[g]) * self.limit + CHUNK_SLACK:
                    oversized.add(g)
                elif size > self.limit and chunk.has_dictionary_page:
                    probe.add(g)
        self._file = _File(source, pf, pf.schema_arrow, starts, column, oversized, probe, {})
        self._stream = None
        self._pending = None
        return self._file

    def _dictionary_pf(self, f: _File) -> pq.ParquetFile:
        if f.dictionary_pf is None:
            f.dictionary_pf = open_parquet(f.source, dictionary=self.column, metadata=f.pf.metadata)
        return f.dictionary_pf

    def _repeats_a_long_value(self, f: _File, group: int) -> bool:
        """Whether ``group``'s dictionary holds a value over the limit (its page decoded once, nothing expanded)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if group not in f.probe:
            return False
        if group not in f.repeated:
            longest = 0
            batches = self._dictionary_pf(f).iter_batches(1, row_groups=[group], columns=[self.column],
                                                          use_threads=False)
            first = next(iter(batches), None)
            if first is not None and pa.types.is_dictionary(first.column(0).type):
                longest = pc.max(pc.binary_length(first.column(0).dictionary)).as_py() or 0
            f.repeated[group] = longest
        return f.repeated[group] > self.limit

    def _bounded(self, f: _File, table: pa.Table) -> tuple[pa.Table, dict[int, str]]:
        """Rows as the file's schema has them, each cell over the limit null (never expanded), and their messages."""
        from semcodec.data.coders import bounded

        index = table.schema.get_field_index(self.column)
        if index < 0 or f.column < 0:
            return table, {}
        kept, refused = bounded(table[self.column], self.action)
        field = f.schema.field(self.column)
        return table.set_column(index, field, kept.cast(field.type)), refused

    def _batches(self, f: _File, group: int) -> Iterator[tuple[int, pa.Table, dict[int, str]]]:
        """``(first row, rows, {row: message})`` from the start of ``group`` to the end of the file.

        Plain batches are checked later, by the part (:meth:`read`); the others here.
        """
        import pyarrow as pa

        n = len(f.starts) - 1
        while group < n:
            row = f.starts[group]
            stop = group
            while (stop < n and stop - group < RUN_GROUPS and stop not in f.oversized
                   and not self._repeats_a_long_value(f, stop)):
                stop += 1
            if stop > group:  # groups group .. stop-1 are read plain, as one stream
                for batch in f.pf.iter_batches(BATCH_ROWS, row_groups=list(range(group, stop)),
                                                use_threads=False):
                    yield row, pa.Table.from_batches([batch]), {}
                    row += batch.num_rows
                group = stop
                continue
            if group in f.oversized:
                yield from self._unread(f, group)
            else:
                for batch in self._dictionary_pf(f).iter_batches(BATCH_ROWS, row_groups=[group], use_threads=False):
                    table, refused = self._bounded(f, pa.Table.from_batches([batch]))
                    yield row, table, refused
                    row += batch.num_rows
            group += 1

    def _unread(self, f: _File, group: int) -> Iterator[tuple[int, pa.Table, dict[int, str]]]:
        """An oversized group's rows without its column (nulls instead), each with the message why."""
        import pyarrow as pa

        schema = f.schema
        md = f.pf.metadata.row_group(group)
        size = md.column(f.column).total_uncompressed_size
        message = (f"not read: row group {group} holds {size} bytes of {self.column!r} for {md.num_rows} row(s), "
                   f"more than the {self.limit}-byte limit of a row")
        others = [name for name in schema.names if name != self.column]
        index = schema.get_field_index(self.column)
        row = f.starts[group]
        for batch in f.pf.iter_batches(BATCH_ROWS, row_groups=[group], columns=others, use_threads=False):
            part = pa.Table.from_batches([batch])
            part = part.add_column(index, schema.field(index), pa.nulls(part.num_rows, schema.field(index).type))
            yield row, part, dict.fromkeys(range(part.num_rows), message)
            row += part.num_rows

    def _continues(self, f: _File, source: str, start: int) -> bool:
        """Whether the open stream reaches ``start`` within the row group it is in (else a fresh one starts there)."""
        if self._stream is None or self._stream[0] != source:
            return False
        at = self._stream[1]
        return at == start or (at < start and bisect.bisect_right(f.starts, at) == bisect.bisect_right(f.starts, start))

    def read(self, source: str, start: int, stop: int) -> tuple[pa.Table, dict[int, str]]:
        """Rows ``start .. stop`` of ``source``, cells over the limit null, and ``{row in the result: message}``."""
        import pyarrow as pa

        f = self._open(source)
        if self._stream is None or not self._continues(f, source, start):
            group = max(0, bisect.bisect_right(f.starts, start) - 1)
            self._stream = (source, f.starts[group], self._batches(f, group))
            self._pending = None
        stream = self._stream[2]
        pieces: list[pa.Table] = []
        refused: dict[int, str] = {}
        got = 0
        while start + got < stop:
            item = self._pending if self._pending is not None else next(stream, None)
            self._pending = None
            if item is None:
                break
            row, table, messages = item
            end = row + table.num_rows
            if end <= start + got:
                continue  # before the rows wanted
            lo = start + got - row
            take = min(end, stop) - (row + lo)
            pieces.append(table.slice(lo, take))
            refused.update((got + i - lo, m) for i, m in messages.items() if lo <= i < lo + take)
            got += take
            if row + lo + take < end:  # the rest belongs to the next part
                rest = {i - lo - take: m for i, m in messages.items() if i >= lo + take}
                self._pending = (row + lo + take, table.slice(lo + take), rest)
        self._stream = (source, start + got, stream)
        if not pieces:
            return f.schema.empty_table(), refused
        table, over = self._bounded(f, pa.concat_tables(pieces))  # plain cells: checked once per part
        return table, {**over, **refused}
