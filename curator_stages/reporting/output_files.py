"""What a report reads from a run's output files: the language mix of the published data,
dropped examples per rule and quarantine reasons (only the published snapshot's files)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable


#: How many characters of a dropped document's text a report shows.
EXAMPLE_CHARS = 240


def _files(directory: Path, patterns: Iterable[str]) -> list[Path]:
    """The files under ``directory`` matching ``patterns`` (``directory`` itself if a file)."""
    found: list[Path] = []
    if directory.is_file():
        return [directory] if any(directory.match(p) for p in patterns) else []
    if directory.is_dir():
        for pattern in patterns:
            found.extend(p for p in directory.rglob(pattern) if p.is_file())
    return sorted(set(found))


def _read_table(path: Path, columns: list[str] | None = None):
    """A pyarrow table from a Parquet or JSONL(.gz/.zst) file, or None when unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            schema = pq.read_schema(path)
            cols = [c for c in (columns or schema.names) if c in schema.names]
            return pq.read_table(path, columns=cols)
        import fsspec

        compression = {".gz": "gzip", ".zst": "zstd"}.get(path.suffix)
        with fsspec.open(str(path), "rt", compression=compression, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if columns:
            rows = [{c: r.get(c) for c in columns if c in r} for r in rows]
        return pa.Table.from_pylist(rows) if rows else None
    except Exception:  # noqa: BLE001 - a report never fails on a file it only samples
        return None


_DATA_PATTERNS = ("*.parquet", "*.jsonl", "*.jsonl.gz", "*.jsonl.zst")


def language_mix(locations: Path | Iterable[Path], column: str = "language") -> dict[str, int]:
    """Documents per language in the run's output files (a directory, or the files themselves);
    empty when there is no such column."""
    counts: Counter[str] = Counter()
    found = [(loc, p) for loc in ([locations] if isinstance(locations, Path) else locations)
             for p in _files(loc, _DATA_PATTERNS)]
    for location, path in found:
        if path != location and (any(part.startswith(("dropped", "quarantine", ".")) for part in
                                     path.relative_to(location).parts[:-1])
                                 or path.name.startswith("quarantine-")):
            continue
        table = _read_table(path, [column])
        if table is None or column not in table.column_names:
            continue
        counts.update(str(v) for v in table[column].to_pylist())
    return dict(counts.most_common())


def dropped_examples(directories: Iterable[Path], per_rule: int = 3,
                     chars: int = EXAMPLE_CHARS) -> dict[str, list[tuple[str, str]]]:
    """A few dropped documents per ``drop_reason``, text truncated, from dropped-output files."""
    examples: dict[str, list[tuple[str, str]]] = {}
    for directory in directories:
        for path in _files(directory, _DATA_PATTERNS):
            table = _read_table(path, ["id", "text", "drop_reason"])
            if table is None or "drop_reason" not in table.column_names:
                continue
            for row in table.to_pylist():
                rule = str(row.get("drop_reason"))
                bucket = examples.setdefault(rule, [])
                if len(bucket) < per_rule:
                    bucket.append((str(row.get("id", "")), _truncate(row.get("text"), chars)))
    return dict(sorted(examples.items()))


def quarantine_reasons(directories: Iterable[Path], examples: int = 3,
                       chars: int = 120) -> tuple[dict[str, int], list[str]]:
    """Quarantined records by reason, and a few of them, from quarantine files."""
    counts: Counter[str] = Counter()
    shown: list[str] = []
    for directory in directories:
        for path in _files(directory, ("quarantine-*.jsonl",)):
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            for line in lines:
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                reason = str(rec.get("reason", "unknown")).split(":")[0]
                counts[reason] += 1
                if len(shown) < examples:
                    shown.append(f"{rec.get('file')}:{rec.get('line')} {reason}: "
                                 f"{_truncate(rec.get('raw'), chars)}")
    return dict(counts.most_common()), shown


def _truncate(text: Any, chars: int) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= chars else s[: chars - 1] + "…"


# ---------------------------------------------------------------------------- assembly


__all__ = ["dropped_examples", "language_mix", "quarantine_reasons"]
