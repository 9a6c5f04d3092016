"""Parquet files that verify themselves: a sha256 of their content in the file's key-value metadata.

:func:`write_checked` stores ``sr_pipeline.content_sha256`` (a hash of every value, column by column)
and page checksums; :func:`read_checked` recomputes the hash and raises :class:`DamagedFile` when the
file cannot be parsed or its values differ from what was written. A flipped bit therefore either
changes nothing that is read (a statistics byte, padding) or is caught. Files written before the hash
existed read as ``verified=False``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HASH_KEY = b"sr_pipeline.content_sha256"


class DamagedFile(ValueError):
    """A Parquet file that cannot be read or whose content does not match its checksum."""

    def __init__(self, path: Path, why: str):
        self.path, self.why = Path(path), why
        super().__init__(f"{path} is damaged ({why})")


def _column_bytes(column: pa.ChunkedArray) -> list[bytes]:
    """A canonical byte form of one column: null mask, then values (strings: lengths, then bytes)."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    mask = np.packbits(arr.is_null().to_numpy(zero_copy_only=False)).tobytes()
    if pa.types.is_string(arr.type) or pa.types.is_binary(arr.type):
        filled = pc.fill_null(arr, "" if pa.types.is_string(arr.type) else b"")
        offsets = np.frombuffer(filled.buffers()[1], dtype=np.int32)[filled.offset : filled.offset + len(filled) + 1]
        data = filled.buffers()[2]
        payload = b"" if data is None else data.to_pybytes()[offsets[0] : offsets[-1]]
        return [mask, np.diff(offsets).astype("<i4").tobytes(), payload]
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_timestamp(arr.type):
        values = pc.fill_null(arr, pa.scalar(0, arr.type)).to_numpy(zero_copy_only=False)
        return [mask, values.astype(values.dtype.newbyteorder("<")).tobytes()]
    return [mask, json.dumps(arr.to_pylist(), default=str).encode()]


def _type_name(t: pa.DataType) -> str:
    """A column type's name without the list item's field name (written as ``item``, read back from
    Parquet as ``element``), so a hash written with one schema checks out when read with the other."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_type_name(t.value_type)}>"
    return str(t)


def content_hash(table: pa.Table) -> str:
    """sha256 of the table's values (schema order, column names and types included), independent
    of chunking and buffer layout."""
    digest = hashlib.sha256()
    for name, column in zip(table.schema.names, table.columns):
        digest.update(json.dumps([name, _type_name(column.type), len(column)]).encode())
        for part in _column_bytes(column):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    return digest.hexdigest()


def write_checked(table: pa.Table, fh: IO[bytes]) -> None:
    """Write ``table`` with its content hash and page checksums."""
    meta = dict(table.schema.metadata or {})
    meta[HASH_KEY] = content_hash(table.replace_schema_metadata(None)).encode()
    pq.write_table(table.replace_schema_metadata(meta), fh, write_page_checksum=True)


def read_checked(path: Path, schema: pa.Schema | None) -> tuple[pa.Table, bool]:
    """``(table, verified)``: the file read as ``schema`` (None: its own), and whether it carried a hash
    (that matched)."""
    try:
        stored = (pq.read_schema(path).metadata or {}).get(HASH_KEY)
        table = pq.read_table(path, schema=schema, page_checksum_verification=True).replace_schema_metadata(None)
    except FileNotFoundError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ValueError... for a broken file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DamagedFile(path, f"unreadable: {first[:160]}") from None
    if stored is None:
        return table, False
    if stored.decode("ascii", "replace") != content_hash(table):
        raise DamagedFile(path, "its content does not match the checksum written with it")
    return table, True
