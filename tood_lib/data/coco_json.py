"""Reading a COCO instances file (``annotations/instances_<split>2017.json``): its bytes, its JSON and
its three top-level lists, with an error that names the file and the place for each way it can be wrong.

Both the split check (``data/check.py``) and the data set (``data/coco.py``) read annotations through
:func:`read_coco_json`; what is inside the lists is the check's business.
"""
from __future__ import annotations

import json
from pathlib import Path


class DataNotFoundError(FileNotFoundError):
    """A data root, annotation file or image folder is missing."""


class AnnotationFormatError(ValueError):
    """An annotation file is empty, not JSON, or not COCO-shaped."""


def read_coco_json(path: Path) -> dict:
    """Parse a COCO instances file and check its shape; -> the dict.

    Raises DataNotFoundError for a missing file and AnnotationFormatError for an empty file, text
    that is not UTF-8, invalid JSON, or JSON without the "images", "annotations" and "categories" lists.
    """
    if path.is_dir():
        raise AnnotationFormatError(f"annotation file {path} is a folder; expected a COCO instances .json file")
    if not path.is_file():
        raise DataNotFoundError(f"annotation file not found: expected {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")  # JSON is UTF-8 (RFC 8259), whatever the machine's locale says
    except UnicodeDecodeError as err:
        raise AnnotationFormatError(_not_utf8_message(path, raw, err)) from None
    if not text.strip():
        raise AnnotationFormatError(f"annotation file {path} is empty (0 bytes or whitespace); "
                                    "it was probably cut short by an interrupted download or extraction")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationFormatError(f"annotation file {path} is not valid JSON ({err})") from None
    missing = [key for key in ("images", "annotations", "categories")
               if not isinstance(data, dict) or not isinstance(data.get(key), list)]
    if missing:
        raise AnnotationFormatError(f"annotation file {path} is not a COCO instances file: "
                                    f"it has no {', '.join(repr(k) for k in missing)} list")
    if not data["categories"]:
        raise AnnotationFormatError(f"annotation file {path} has no categories")
    return data


def _entry_holding(data, text: str) -> str | None:
    """'annotation id 7' (or image, or category) for the first entry of a COCO dict whose JSON holds ``text``."""
    if not isinstance(data, dict):
        return None
    for key, kind in (("images", "image"), ("annotations", "annotation"), ("categories", "category")):
        entries = data.get(key) if isinstance(data.get(key), list) else []
        for entry in entries:
            if text in json.dumps(entry, ensure_ascii=False):
                return f"{kind} id {entry.get('id') if isinstance(entry, dict) else '?'}"
    return None


def _not_utf8_message(path: Path, raw: bytes, err: UnicodeDecodeError) -> str:
    """Where the first byte that is not UTF-8 is: offset, line, and the entry that holds it (found by
    parsing the file with that byte replaced by a marker and any later ones by U+FFFD, when it then parses)."""
    line = raw.count(b"\n", 0, err.start) + 1
    marker = "\ufffe\ufffe"  # Unicode non-characters: not in any real annotation file
    try:
        text = raw[:err.start].decode("utf-8") + marker + raw[err.end:].decode("utf-8", errors="replace")
        entry = _entry_holding(json.loads(text), marker)
    except json.JSONDecodeError:
        entry = None
    where = f"line {line}, in {entry}" if entry else f"line {line}"
    return (f"annotation file {path} is not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} ({where}) "
            "is not valid UTF-8, and JSON files must be UTF-8. Re-save it as UTF-8 (if it was written as "
            "Latin-1: iconv -f latin1 -t utf-8 OLD > NEW)")
