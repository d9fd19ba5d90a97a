"""The CSV file format: load_csv, which parses a numeric CSV file as a stream, one bounded line at a time."""

from __future__ import annotations

import array
import csv
import math
from pathlib import Path
from typing import BinaryIO

import numpy as np

from funcnet.data.files import (
    _BEYOND_F32,
    _F32_MAX,
    _MAX_LABEL,
    _SPECIAL_FILE_LIMIT,
    _as_split,
    _open,
    _unreadable,
)
from funcnet.data.types import PathLike, Split, _fail

#: Longest line of a CSV file, in bytes.
_CSV_LINE_LIMIT = 2**26


def _show(text: str, limit: int = 40) -> str:
    """``repr(text)``, cut short if long, for messages."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _number(text: str) -> float | None:
    """``float(text)`` (NaN and infinity included), or None for text that is not a number; Python's digit-group
    underscores ("1_0", which float() reads as 10) are not part of a number in a CSV file."""
    if "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _csv_lines(path: Path, f: BinaryIO, size: int | None):
    """The text lines of a CSV file, read as a stream: each at most _CSV_LINE_LIMIT bytes, all at most the
    file's size (or _SPECIAL_FILE_LIMIT for a pipe or device), decoded as UTF-8 with an optional BOM."""
    limit = size if size is not None else _SPECIAL_FILE_LIMIT
    offset, lines = 0, 0
    while True:
        try:
            raw = f.readline(_CSV_LINE_LIMIT + 1)
        except OSError as err:
            raise _unreadable(path, err) from None
        if not raw:
            return
        if len(raw) > _CSV_LINE_LIMIT:
            raise _fail(path, f"line {lines + 1} is longer than {_CSV_LINE_LIMIT} bytes")
        if offset + len(raw) > limit:
            if size is None:
                raise _fail(path, f"more than {limit} bytes: a file that is not regular is read up to {limit} bytes")
            raise _fail(path, f"grew while being read, past the {size} bytes it had when opened")
        start = 3 if offset == 0 and raw.startswith(b"\xef\xbb\xbf") else 0
        try:
            text = raw[start:].decode("utf-8")
        except UnicodeDecodeError as err:
            raise _fail(path, f"not UTF-8 text: {err.reason} at byte {offset + start + err.start}") from None
        offset += len(raw)
        # line ends are kept: without them, the csv module joins a quoted field that spans lines ("1<newline>2")
        # into "12", a wrong number instead of an error
        for line in text.splitlines(keepends=True):
            lines += 1
            yield line


def load_csv(path: PathLike, label_column: int = -1, *, allow_special_files: bool = False) -> Split:
    """Read a numeric CSV file: one example per row, one column of labels.

    The first row is a header, and skipped, when none of its fields is a
    number. Blank lines are skipped. If every label is written as an integer
    (``3``, not ``3.0``) the labels are class indices (int32 ``(n,)``), and
    must then lie in [0, 2**31); otherwise they are regression targets
    (float32 ``(n, 1)``). Every value must be finite and within float32's
    range. The file is parsed as a stream, one line at a time.

    Args:
      path: the ``.csv`` file, comma-separated.
      label_column: index of the label column; negative counts from the end.
      allow_special_files: also read a path that is not a regular file (a
        named pipe or a device, or a link to one); off by default because a
        device such as ``/dev/zero`` never ends. Even then at most 1 GiB is read.

    Returns:
      ``Split(x, y)`` with the other columns as float32 features.

    Raises:
      DataError: the file is missing, not a regular file, not UTF-8 or has
        no data rows, a row has a different number of fields than the first,
        a line or field is too long, a value is not a finite number or beyond
        float32's range, a class label is negative or too large (these name
        the line number), or ``label_column`` is out of range.
    """
    return _read_csv(path, label_column, allow_special_files)[0]


def _read_csv(path: PathLike, label_column: int, allow_special_files: bool) -> tuple[Split, np.ndarray]:
    """:func:`load_csv`'s split, and the line number of each of its rows (for messages about a row)."""
    path = Path(path)
    f, size = _open(path, allow_special_files)
    with f:
        reader = csv.reader(_csv_lines(path, f, size))
        values = array.array("f")  # float32, row-major, every column (each value checked to fit)
        labels: array.array | None = array.array("i")  # int32, while every label is an integer
        bad_label = None  # (line, text) of the first integer label outside [0, 2**31)
        big_label = None  # (line, text) of the first label beyond float32's range
        width = col = None
        rows = 0
        row_lines = array.array("q")
        try:
            for fields in reader:
                line = reader.line_num
                fields = [s.strip() for s in fields]
                if not any(fields):
                    continue
                if width is None:
                    width = (line, len(fields))
                    if all(_number(s) is None for s in fields):
                        continue  # header of column names
                elif len(fields) != width[1]:
                    raise _fail(
                        path, f"line {line} has {len(fields)} fields, expected {width[1]} as on line {width[0]}"
                    )
                if col is None:
                    col = _label_column(path, label_column, width[1])
                for j, field in enumerate(fields):
                    value = _number(field)
                    if value is None or not math.isfinite(value):
                        raise _fail(path, f"line {line}, column {j + 1}: {_show(field)} is not a finite number")
                    if abs(value) > _F32_MAX:
                        if j != col:
                            raise _fail(path, f"line {line}, column {j + 1}: {_show(field)} {_BEYOND_F32}")
                        big_label = big_label or (line, field)  # an error unless the labels are integers
                        value = 0.0
                    values.append(value)
                rows += 1
                row_lines.append(line)
                if labels is not None:
                    try:
                        label = int(fields[col])
                    except ValueError:
                        labels = None  # not all integers: regression targets
                    else:
                        if not 0 <= label <= _MAX_LABEL:
                            bad_label = bad_label or (line, fields[col])
                            label = 0
                        labels.append(label)
        except csv.Error as err:
            raise _fail(path, f"line {reader.line_num}: {err}") from None
    if not rows:
        raise _fail(path, "no data rows")
    table = np.frombuffer(values, np.float32).reshape(rows, width[1])
    x = np.delete(table, col, axis=1)
    y_name = f"column {col + 1}"
    if labels is not None:
        if bad_label is not None:
            line, text = bad_label
            raise _fail(
                path,
                f"line {line}, column {col + 1}: class label {_show(text)} is outside [0, 2**31): every label in "
                "the column is an integer, so they are class indices (write regression targets as 3.0, not 3)",
            )
        return _as_split(path, x, np.frombuffer(labels, np.int32), "features", y_name), np.frombuffer(row_lines, np.int64)
    if big_label is not None:
        raise _fail(path, f"line {big_label[0]}, column {col + 1}: {_show(big_label[1])} {_BEYOND_F32}")
    return _as_split(path, x, table[:, col], "features", y_name), np.frombuffer(row_lines, np.int64)


def _label_column(path: Path, label_column: object, columns: int) -> int:
    if columns < 2:
        raise _fail(path, f"needs at least 2 columns (features and a label), found {columns}")
    is_int = isinstance(label_column, (int, np.integer)) and not isinstance(label_column, bool)
    if not (is_int and -columns <= label_column < columns):
        raise _fail(path, f"label_column={label_column!r} is out of range for {columns} columns")
    return int(label_column) % columns
