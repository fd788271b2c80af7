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
from typing import AnyStr, Generic

from cdv_etl.errors import FileRejected

CHUNK = 4 * 1024 * 1024
# A blank line: a line feed followed by another (CRLF or LF), in text or in bytes.
_BLANK_LINE = re.compile(r"\n(?=\r?\n)")
_BLANK_LINE_BYTES = re.compile(rb"\n(?=\r?\n)")
# Encodings in which the bytes 0x0A and 0x00 are always a line feed and a NUL, never part of
# another character: their files are scanned as bytes (no copy of the decoded text).
_ASCII_COMPATIBLE = frozenset({"utf-8", "utf-8-sig", "cp1252", "latin-1"})

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


@dataclass
class _Scan(Generic[AnyStr]):
    """What the chunks seen so far told: line feeds, blank lines; the last two units kept for
    a blank line whose look-ahead runs into the next chunk."""

    lf: AnyStr
    nul: AnyStr
    blank: re.Pattern[AnyStr]
    tail: AnyStr
    lines: int = 0
    blank_lines: list[int] = field(default_factory=list)

    def chunk(self, chunk: AnyStr) -> int | None:
        """Scan the next chunk; the line of its first NUL, if it has one (then nothing is counted)."""
        nul = chunk.find(self.nul)
        if nul >= 0:
            return self.lines + chunk.count(self.lf, 0, nul) + 1
        tail = self.tail
        edge = tail + chunk[:2]
        for m in self.blank.finditer(edge):
            p = m.start()
            if p < len(tail) and p + (2 if edge[p + 1 : p + 2] == self.lf else 3) > len(tail):
                self.blank_lines.append(self.lines - tail[p:].count(self.lf) + 2)
        seen, at = self.lines, 0
        for m in self.blank.finditer(chunk):
            seen += chunk.count(self.lf, at, m.start())
            at = m.start()
            self.blank_lines.append(seen + 2)
        self.lines += chunk.count(self.lf)
        self.tail = chunk[-2:] if len(chunk) >= 2 else (tail + chunk)[-2:]
        return None


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
    as_bytes = encoding in _ASCII_COMPATIBLE
    byte_scan = _Scan(b"\n", b"\x00", _BLANK_LINE_BYTES, b"")
    text_scan = _Scan("\n", "\x00", _BLANK_LINE, "")
    lines = 0
    out = out_path.open("wb") if transcode else None
    offset = 0
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
                nul_line = byte_scan.chunk(data) if as_bytes else text_scan.chunk(text)
                if nul_line is not None:
                    raise FileRejected(
                        "binary",
                        f"{source.name}: NUL character on line {nul_line}: this is not a text export; "
                        "the file was not loaded",
                        "check that the partner sent the right file (a spreadsheet saved as .csv?)",
                    )
                lines = byte_scan.lines if as_bytes else text_scan.lines
                if out is not None:
                    out.write(text.encode("utf-8"))
                offset += len(data)
                if final:
                    break
    finally:
        if out is not None:
            out.close()
    return DecodedText(out_path, byte_scan.blank_lines if as_bytes else text_scan.blank_lines)
