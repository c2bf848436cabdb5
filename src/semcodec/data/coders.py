"""Batch coders: an Arrow table of rows in, the same rows plus ``sem``/``text`` and ``error`` out.

These are the units of work that every distributor runs: in this process (``local``)
or as the callable class of a Ray Data actor pool (``ray``). A coder loads the model
once, in its constructor, then codes any number of batches; a Ray actor therefore
loads the model once per worker.

A bad row never stops a batch: its output cell is null and its ``error`` cell holds the
one-line message (null when the row is fine). Rows keep their order and every input
column is kept. Only pyarrow is needed here (no Ray).

    >>> import pyarrow as pa
    >>> packed = TextPacker()(pa.table({"id": [1, 2], "text": ["A red boat.", None]}))
    >>> packed.column_names
    ['id', 'text', 'sem', 'error']
    >>> packed["error"].to_pylist()
    [None, 'no text (null)']
    >>> TextUnpacker()(packed.drop_columns(["text"]))["text"].to_pylist()
    ['A red boat.', None]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from semcodec.errors import SemError
from semcodec.registry import DEFAULT_MODEL_ID

if TYPE_CHECKING:
    import pyarrow as pa

SEM_COLUMN = "sem"
TEXT_COLUMN = "text"
ERROR_COLUMN = "error"


def error_message(err: BaseException) -> str:
    """One line for a row's ``error`` cell: a semcodec error's message, or the type of a bug."""
    text = str(err) if isinstance(err, SemError) else f"internal error: {type(err).__name__}: {err}"
    return " ".join(text.split())


def with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """``table`` with column ``name`` set to ``values`` (replaced in place if it exists, else appended)."""
    index = table.schema.get_field_index(name)
    if index >= 0:
        return table.set_column(index, name, values)
    return table.append_column(name, values)


def _sized(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind))


def bounded(column: pa.ChunkedArray | pa.Array, action: str) -> tuple[pa.ChunkedArray, dict[int, str]]:
    """``column`` with every cell over the per-row byte limit of ``action`` (``pack``: text,
    ``unpack``: ``.sem`` data) made null, and ``{row: message}`` for those cells.

    Lengths come from Arrow's offsets (no copy); a dictionary-encoded column is checked on its
    dictionary, so a value repeated by many rows is never expanded. The type is kept.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from semcodec.data.tables import row_limit, too_long

    chunked = column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column])
    limit = row_limit(action)
    chunks: list[pa.Array] = []
    refused: dict[int, str] = {}
    offset = 0
    for chunk in chunked.chunks:
        dictionary = pa.types.is_dictionary(chunk.type)
        values = chunk.dictionary if dictionary else chunk
        if _sized(values.type):
            lengths = pc.binary_length(values)
            over = pc.fill_null(pc.greater(lengths, limit), False)
            if pc.any(over).as_py():
                rows = pc.fill_null(pc.take(over, chunk.indices), False) if dictionary else over
                row_lengths = pc.take(lengths, chunk.indices) if dictionary else lengths
                for i in pc.indices_nonzero(rows).to_pylist():
                    refused[offset + i] = too_long(action, row_lengths[i].as_py())
                # take, not if_else: the result holds only the kept values' bytes (if_else
                # would keep the whole old buffer, which later kernels size their output by)
                keep = pc.if_else(over, pa.scalar(None, pa.int64()), pa.array(range(len(values)), pa.int64()))
                kept = pc.take(values, keep)
                if dictionary:
                    indices = pc.if_else(rows, pa.scalar(None, chunk.indices.type), chunk.indices)
                    chunk = pa.DictionaryArray.from_arrays(indices, kept)
                else:
                    chunk = kept
        chunks.append(chunk)
        offset += len(chunk)
    return pa.chunked_array(chunks, chunked.type), refused


def require_column(table: pa.Table, name: str) -> None:
    """Raise :class:`SemError` naming ``table``'s columns unless it has one called ``name``."""
    if name not in table.column_names:
        raise SemError(f"no column {name!r} (columns: {', '.join(table.column_names)})")


@dataclass(frozen=True)
class PackOptions:
    """Header fields every row is packed with (as ``semcodec pack``'s options)."""

    model_id: int | str = DEFAULT_MODEL_ID  # or "auto": the smallest file of every profile
    generator_id: int = 0
    seed: int = 0
    width: int = 1024
    height: int = 1024
    check: bool = False


class TextPacker:
    """Callable class: adds a binary ``sem`` column holding ``semcodec.pack(text)`` of each row."""

    def __init__(
        self,
        text_column: str = TEXT_COLUMN,
        sem_column: str = SEM_COLUMN,
        error_column: str = ERROR_COLUMN,
        options: PackOptions | None = None,
    ) -> None:
        from semcodec.models import load_model

        self.text_column = text_column
        self.sem_column = sem_column
        self.error_column = error_column
        self.options = options or PackOptions()
        first = self.options.model_id
        load_model(DEFAULT_MODEL_ID if isinstance(first, str) else first)  # once per worker, not per row

    def __call__(self, table: pa.Table, refused: dict[int, str] | None = None) -> pa.Table:
        """``table`` plus the two columns; ``refused`` rows (``{row: message}``) are not packed."""
        import pyarrow as pa

        from semcodec.codec import pack

        require_column(table, self.text_column)
        o = self.options
        sems: list[bytes | None] = []
        errors: list[str | None] = []
        column, over = bounded(table[self.text_column], "pack")
        if over:  # a cell over the limit is not copied either (its row's error says why)
            table = with_column(table, self.text_column, column)
        texts = column.to_pylist()
        over.update(refused or {})
        for i, text in enumerate(texts):
            try:
                if i in over:
                    raise SemError(over[i])
                if text is None:
                    raise SemError("no text (null)")
                if not isinstance(text, str):
                    raise SemError(f"not text: {type(text).__name__}")
                sems.append(pack(text, model_id=o.model_id, generator_id=o.generator_id, seed=o.seed,
                                 width=o.width, height=o.height, check=o.check))
                errors.append(None)
            except Exception as err:  # a bad row is recorded, never fatal
                sems.append(None)
                errors.append(error_message(err))
        table = with_column(table, self.sem_column, pa.array(sems, pa.binary()))
        return with_column(table, self.error_column, pa.array(errors, pa.string()))


class TextUnpacker:
    """Callable class: adds a ``text`` column decoded from each row's ``sem`` bytes.

    The rows of a batch decode in lockstep (:func:`semcodec.codec.unpack_many`: one model
    pass per step serves every row). An existing column named like the output is replaced.
    """

    def __init__(
        self,
        sem_column: str = SEM_COLUMN,
        text_column: str = TEXT_COLUMN,
        error_column: str = ERROR_COLUMN,
        model_id: int = DEFAULT_MODEL_ID,
        max_tokens: int | None = None,
    ) -> None:
        from semcodec.codec import MAX_TOKENS
        from semcodec.models import load_model

        limit = MAX_TOKENS if max_tokens is None else max_tokens
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_TOKENS:
            raise ValueError(f"max_tokens must be an int in [0, {MAX_TOKENS}], not {max_tokens!r}")
        self.sem_column = sem_column
        self.text_column = text_column
        self.error_column = error_column
        self.max_tokens = max_tokens
        load_model(model_id)

    def __call__(self, table: pa.Table, refused: dict[int, str] | None = None) -> pa.Table:
        """``table`` plus the two columns; ``refused`` rows (``{row: message}``) are not decoded."""
        import pyarrow as pa

        from semcodec.codec import unpack_many

        require_column(table, self.sem_column)
        column, over = bounded(table[self.sem_column], "unpack")
        if over:  # a cell over the limit is not copied either (its row's error says why)
            table = with_column(table, self.sem_column, column)
        values: list[Any] = column.to_pylist()
        over.update(refused or {})
        texts: list[str | None] = [None] * len(values)
        errors: list[str | None] = [None] * len(values)
        # A row that packing already failed keeps that reason (the error column is replaced).
        earlier = table[self.error_column].to_pylist() if self.error_column in table.column_names else errors
        todo: list[int] = []
        for i, cell in enumerate(values):
            if i in over:
                errors[i] = over[i]
            elif cell is None:
                errors[i] = f"no .sem data (packing failed: {earlier[i]})" if earlier[i] else "no .sem data (null)"
            elif not isinstance(cell, bytes):
                errors[i] = f".sem data must be binary, not {type(cell).__name__}"
            else:
                todo.append(i)
        try:
            outcomes: list[Any] = unpack_many([values[i] for i in todo], max_tokens=self.max_tokens)
        except Exception as err:  # a failure of the whole batch still becomes row errors
            outcomes = [err] * len(todo)
        for i, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                errors[i] = error_message(outcome)
            else:
                texts[i] = outcome.text
        table = with_column(table, self.text_column, pa.array(texts, pa.string()))
        return with_column(table, self.error_column, pa.array(errors, pa.string()))
