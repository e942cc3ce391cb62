"""Chunks of export rows as JSONL, CSV or Parquet bytes, each chunk encoded on its own."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, Protocol

from service.export.schemas import ExportFormat
from service.export.service import Chunk

MEDIA_TYPES: dict[str, str] = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}

COLUMNS = (
    "id",
    "idx",
    "pass_rate",
    "uncertainty",
    "p_informative",
    "prior",
    "observations",
    "rollouts",
    "successes",
    "observed_pass_rate",
    "last_step",
    "model_version",
)


def rows(chunk: Chunk) -> Iterator[dict[str, Any]]:
    """One dict per prompt; counts are the undiscounted ones, `last_step` None before a group."""
    for j in range(len(chunk)):
        rollouts = int(chunk.rollouts[j])
        step = int(chunk.last_step[j])
        row: dict[str, Any] = {
            "id": chunk.ids[j],
            "idx": int(chunk.idx[j]),
            "pass_rate": float(chunk.pass_rate[j]),
            "uncertainty": float(chunk.uncertainty[j]),
            "p_informative": float(chunk.p_informative[j]),
            "prior": float(chunk.prior[j]),
            "observations": int(chunk.observations[j]),
            "rollouts": rollouts,
            "successes": int(chunk.successes[j]),
            "observed_pass_rate": int(chunk.successes[j]) / rollouts if rollouts else None,
            "last_step": step if step >= 0 else None,
            "model_version": chunk.model_version,
        }
        if chunk.metadata is not None:
            row["metadata"] = chunk.metadata[j]
        if chunk.text is not None:
            row["text"] = chunk.text[j]
        yield row


class Encoder(Protocol):
    def header(self) -> bytes: ...

    def encode(self, chunk: Chunk) -> bytes: ...

    def footer(self) -> bytes: ...


class JSONLines:
    def header(self) -> bytes:
        return b""

    def encode(self, chunk: Chunk) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows(chunk)).encode()

    def footer(self) -> bytes:
        return b""


class CSV:
    """Metadata as a JSON string in one column; an empty cell is null."""

    def __init__(self, metadata: bool, text: bool) -> None:
        self.columns = [*COLUMNS, *(["metadata"] if metadata else []), *(["text"] if text else [])]

    def header(self) -> bytes:
        return (",".join(self.columns) + "\r\n").encode()

    def encode(self, chunk: Chunk) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf)
        for r in rows(chunk):
            if "metadata" in r:
                r["metadata"] = None if r["metadata"] is None else json.dumps(r["metadata"])
            w.writerow("" if r[c] is None else r[c] for c in self.columns)
        return buf.getvalue().encode()

    def footer(self) -> bytes:
        return b""


class _Sink(io.RawIOBase):
    """A write-only file that hands over what was written since the last `take`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._parts.append(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts = []
        return out


class Parquet:
    """One row group per chunk; the footer (the file's index) comes after the last."""

    def __init__(self, metadata: bool, text: bool) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        fields = [
            pa.field("id", pa.string()),
            pa.field("idx", pa.int64()),
            pa.field("pass_rate", pa.float64()),
            pa.field("uncertainty", pa.float64()),
            pa.field("p_informative", pa.float64()),
            pa.field("prior", pa.float64()),
            pa.field("observations", pa.int64()),
            pa.field("rollouts", pa.int64()),
            pa.field("successes", pa.int64()),
            pa.field("observed_pass_rate", pa.float64()),
            pa.field("last_step", pa.int64()),
            pa.field("model_version", pa.int64()),
        ]
        if metadata:
            fields.append(pa.field("metadata", pa.string()))  # JSON: keys differ by prompt
        if text:
            fields.append(pa.field("text", pa.string()))
        self.schema = pa.schema(fields)
        self.sink = _Sink()
        self.writer = pq.ParquetWriter(self.sink, self.schema, compression="zstd")

    def header(self) -> bytes:
        return self.sink.take()

    def encode(self, chunk: Chunk) -> bytes:
        pa = self.pa
        seen = chunk.rollouts > 0
        observed = [
            int(s) / int(n) if ok else None
            for s, n, ok in zip(chunk.successes, chunk.rollouts, seen, strict=True)
        ]
        cols: dict[str, Any] = {
            "id": chunk.ids,
            "idx": chunk.idx,
            "pass_rate": chunk.pass_rate,
            "uncertainty": chunk.uncertainty,
            "p_informative": chunk.p_informative,
            "prior": chunk.prior,
            "observations": chunk.observations,
            "rollouts": chunk.rollouts,
            "successes": chunk.successes,
            "observed_pass_rate": observed,
            "last_step": pa.array(chunk.last_step, mask=chunk.last_step < 0),
            "model_version": [chunk.model_version] * len(chunk),
        }
        if chunk.metadata is not None:
            cols["metadata"] = [None if m is None else json.dumps(m) for m in chunk.metadata]
        if chunk.text is not None:
            cols["text"] = chunk.text
        table = pa.table({k: cols[k] for k in self.schema.names}, schema=self.schema)
        self.writer.write_table(table)
        return self.sink.take()

    def footer(self) -> bytes:
        self.writer.close()
        return self.sink.take()


def encoder(fmt: ExportFormat, *, metadata: bool, text: bool) -> Encoder:
    if fmt == "csv":
        return CSV(metadata, text)
    if fmt == "parquet":
        return Parquet(metadata, text)
    return JSONLines()
