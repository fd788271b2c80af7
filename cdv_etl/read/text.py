"""Text files: check that every byte decodes under the spec's encoding, before parsing.

A file whose bytes do not decode is rejected whole with the offset and line of the first
bad byte — never read as wrong characters. Windows-1252 (whose € is byte 0x80, which
Latin-1 would silently turn into a control character) and UTF-16 are transcoded to UTF-8
in a temporary file, streamed in chunks so that memory stays flat whatever the file's size.
"""

from __future__ import annotations

import codecs
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cdv_etl.errors import FileRejected

CHUNK = 4 * 1024 * 1024
_BLANK_LINE = re.compile(r"\n(?=\r?\n)")

_NAMES = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8",
    "cp1252": "Windows-1252",
    "utf-16": "UTF-16",
    "latin-1": "Latin-1",
}


@dataclass
class DecodedText:
    """The file as DuckDB should read it (UTF-8, in the work folder), and what the scan learnt."""

    path: Path
    blank_lines: list[int] = field(default_factory=list)
    """1-based numbers of the empty lines (a CSV reader skips them; row numbers must not)."""


def _bad_byte(
    raw_offset: int, data: bytes, start: int, encoding: str, source: Path, lines_before: int, text_so_far: str
) -> FileRejected:
    line = lines_before + text_so_far.count("\n") + 1
    byte = data[start : start + 1].hex().upper() or "??"
    name = _NAMES.get(encoding, encoding)
    return FileRejected(
        "encoding",
        f"{source.name}: byte 0x{byte} at offset {raw_offset} (line {line}) is not valid "
        f"{name}; the file was not loaded",
        f"ask the partner to export in {name}, or fix format.encoding in the partner's spec",
    )


def decode_to_utf8(source: Path, encoding: str, workdir: Path) -> DecodedText:
    """Validate (and if needed transcode) ``source``; return a UTF-8 file for DuckDB."""
    codec = {"utf-8-sig": "utf-8-sig", "latin-1": "latin-1"}.get(encoding, encoding)
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    transcode = encoding not in ("utf-8", "utf-8-sig")
    # DuckDB reads a path as a glob pattern: a partner's file named "a[1].csv" or "x*.csv"
    # would not be found (or would match other files). It reads a fixed name in the private
    # work folder instead: the transcoded text, or a link to the partner's file.
    out_path = workdir / ("export.utf8.csv" if transcode else "export.csv")
    out_path.unlink(missing_ok=True)
    if not transcode:
        try:
            out_path.symlink_to(source.resolve())
        except OSError:  # no symbolic links here: a copy will do
            shutil.copyfile(source, out_path)
    result = DecodedText(out_path)
    out = out_path.open("w", encoding="utf-8", newline="") if transcode else None
    offset = 0
    lines = 0
    tail = ""
    try:
        with source.open("rb") as fh:
            while True:
                data = fh.read(CHUNK)
                final = not data
                try:
                    text = decoder.decode(data, final=final)
                except UnicodeDecodeError as exc:
                    partial = data[: exc.start].decode(codec, errors="replace")
                    raise _bad_byte(offset + exc.start, data, exc.start, encoding, source, lines, partial) from exc
                if "\x00" in text:
                    at = text.index("\x00")
                    raise FileRejected(
                        "binary",
                        f"{source.name}: NUL character on line {lines + text.count(chr(10), 0, at) + 1}:"
                        " this is not a text export; the file was not loaded",
                        "check that the partner sent the right file (a spreadsheet saved as .csv?)",
                    )
                scan = tail + text
                before_scan = lines - tail.count("\n")
                for m in _BLANK_LINE.finditer(scan):
                    p = m.start()
                    lookahead_end = p + (2 if scan[p + 1] == "\n" else 3)
                    if lookahead_end > len(tail):  # not already seen in the previous chunk
                        result.blank_lines.append(before_scan + scan.count("\n", 0, p) + 2)
                lines += text.count("\n")
                tail = (tail + text)[-2:]
                if out is not None:
                    out.write(text)
                offset += len(data)
                if final:
                    break
    finally:
        if out is not None:
            out.close()
    return result
