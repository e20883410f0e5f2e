"""The run report as markdown: what a person reads to judge a run and its thresholds."""

from __future__ import annotations

from curator_stages.reporting.data import RunReportData, stage_table


def _fmt_int(value: int | float | None) -> str:
    return "-" if value is None else f"{int(value):,}"


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _per(part: float, whole: float) -> str:
    return f"{part / whole:,.1f}" if whole else "-"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _table(headers: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out + [""]


def _flag_of(flags: dict[str, str], reason: str,
             default: str = "not configurable (fix the input)") -> str:
    """The flag that changes ``reason``: its own entry, else the entry of a ``prefix*`` key
    it starts with (``missing text field*`` covers ``missing text field 'text'``)."""
    if reason in flags:
        return flags[reason]
    for key, flag in flags.items():
        if key.endswith("*") and reason.startswith(key[:-1]):
            return flag
    head = reason.split(":", 1)[0]
    return flags.get(head, default)


def render_report_markdown(data: RunReportData, funnel_image: str | None = "funnel.png") -> str:
    """The whole report: totals and accounting, tokens, PII redacted, the stage table and
    funnel, drops, quarantine, languages, duplicates and examples of dropped documents."""
    lines: list[str] = [f"# Run report: {data.title}", ""]
    if data.run_info:
        lines += [f"- {k}: {v}" for k, v in data.run_info.items()] + [""]

    lines += ["## Totals", ""]
    read = data.documents_read
    lines += _table(["documents", "count", "share of read"], [
        ["read", _fmt_int(read), _pct(read, read)],
        ["written", _fmt_int(data.documents_written), _pct(data.documents_written, read)],
        ["dropped", _fmt_int(data.documents_dropped), _pct(data.documents_dropped, read)],
        ["quarantined", _fmt_int(data.documents_quarantined),
         _pct(data.documents_quarantined, read)],
        *([["skipped (not documents)", _fmt_int(data.documents_skipped),
            _pct(data.documents_skipped, read)]] if data.documents_skipped else []),
    ])
    balance = (data.documents_written + data.documents_dropped + data.documents_quarantined
               + data.documents_skipped)
    verdict = "holds" if balance == read else f"does NOT hold (difference {read - balance:+,})"
    skipped = f" + {data.documents_skipped:,}" if data.documents_skipped else ""
    lines += [f"Accounting: read = written + dropped + quarantined"
              f"{' + skipped' if data.documents_skipped else ''} "
              f"({read:,} = {data.documents_written:,} + {data.documents_dropped:,} + "
              f"{data.documents_quarantined:,}{skipped}) {verdict}.", ""]
    if data.skipped_by_kind:
        lines += ["Skipped records by kind (read, not documents, not errors):", ""]
        lines += _table(["kind", "records"], [[k, _fmt_int(n)] for k, n in
                                             sorted(data.skipped_by_kind.items())])

    lines += ["## Tokens", ""]
    if data.tokens_read is not None or data.tokens_written is not None:
        rows = []
        if data.tokens_read is not None:
            stage, docs, tokens = data.tokens_read
            rows.append([f"counted at {stage} (the first token counter)", _fmt_int(docs),
                         _fmt_int(tokens), _per(tokens, docs)])
        if data.tokens_written is not None:
            rows.append(["written", _fmt_int(data.documents_written),
                         _fmt_int(data.tokens_written),
                         _per(data.tokens_written, data.documents_written)])
        lines += _table(["", "documents", "tokens", "tokens per document"], rows)
    else:
        lines += ["No token counter in this run.", ""]

    lines += ["## PII redacted", ""]
    if data.pii_redacted:
        lines += _table(["kind", "replacements"],
                        [[kind, _fmt_int(n)] for kind, n in sorted(data.pii_redacted.items())])
    else:
        lines += ["Nothing was redacted (no PII stage in this run, or no match).", ""]

    lines += ["## Stages", ""]
    if funnel_image:
        lines += [f"![funnel]({funnel_image})", ""]
    lines += ["Every count is in documents (docs); files a stage lists, reads or writes are in "
              "the files column. Busy time is the stage's own processing time summed over all "
              "workers; docs/s/worker is per worker (multiply by the pool size for the stage's "
              "rate).", ""]
    headers, rows = stage_table(data.stages)
    lines += _table(list(headers), rows)
    if data.wall_time_s is not None:
        lines += [f"Run wall time: {data.wall_time_s:.2f} s, from the flow's start to its "
                  "summary (starting Ray and Prefect before the flow is not included)"
                  + (f"; {data.documents_read / data.wall_time_s:,.0f} documents read per second"
                     if data.wall_time_s > 0 and data.documents_read else "") + ".", ""]

    lines += ["## Drops by rule", ""]
    flags = data.rule_flags
    if data.drops_by_rule:
        lines += _table(["stage", "rule", "documents", "share of read",
                         *(["changed by"] if flags else [])],
                        [[stage, rule, _fmt_int(n), _pct(n, read),
                          *([_flag_of(flags, rule, "not configurable")] if flags else [])]
                         for (stage, rule), n in data.drops_by_rule.items()])
    else:
        lines += ["No document was dropped.", ""]

    lines += ["## Quarantined records by reason", ""]
    if data.quarantine_by_reason:
        lines += _table(["reason", "records", *(["changed by"] if flags else [])],
                        [[reason, _fmt_int(n),
                          *([_flag_of(flags, reason)] if flags else [])]
                         for reason, n in data.quarantine_by_reason.items()])
        if data.quarantine_examples:
            lines += ["Examples:", ""]
            lines += [f"- `{_cell(e)}`" for e in data.quarantine_examples] + [""]
    else:
        lines += ["No record was quarantined.", ""]

    lines += ["## Language mix", ""]
    if data.language_mix:
        total = sum(data.language_mix.values())
        lines += _table(["language", "documents", "share"],
                        [[lang, _fmt_int(n), _pct(n, total)]
                         for lang, n in data.language_mix.items()])
    else:
        lines += ["No language column in the output (no language-id stage in this run).", ""]

    lines += ["## Duplicates", ""]
    if data.duplicates:
        lines += _table(["stage", "reason", "documents removed", "share of read"],
                        [[stage, reason, _fmt_int(n), _pct(n, read)]
                         for (stage, reason), n in data.duplicates.items()])
    else:
        lines += ["No duplicate was removed in this run.", ""]

    lines += ["## Examples of dropped documents", ""]
    if data.dropped_examples:
        for rule, examples in data.dropped_examples.items():
            lines += [f"### {rule}", ""]
            lines += [f"- `{_cell(doc_id)}`: {_cell(text)}" for doc_id, text in examples] + [""]
    else:
        lines += [f"No dropped documents were kept for this run ({data.dropped_hint}).", ""]
    return "\n".join(lines).rstrip() + "\n"
