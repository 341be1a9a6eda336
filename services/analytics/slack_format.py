"""What an alert looks like in Slack (pure): its Block Kit message (header, text, fields, context line)
and the runbook it names, as a repository path or a link (``SLACK_RUNBOOK_BASE_URL``)."""

from __future__ import annotations

from typing import Any

from shared.schemas import Alert

SEVERITY_ICON = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def runbook_target(value: str) -> str:
    """The document and anchor an alert's ``runbook`` names, as a repository path (``""``: none).

    Accepts a plain anchor (``reconciliation-mismatch``, ``#reconciliation-mismatch``: a section
    of docs/runbook.md), a document with an anchor (``docs/executor.md#modes``, ``executor.md#modes``:
    under docs/), or a full URL (kept as is).
    """
    v = value.strip()
    if not v:
        return ""
    if v.startswith(("http://", "https://")):
        return v
    doc, sep, anchor = v.rpartition("#") if "#" in v else ("", "", v)
    anchor = "-".join(anchor.strip().lower().split())
    doc = doc.strip().lstrip("./")
    if not doc:
        doc = "docs/runbook.md"
    elif not doc.startswith("docs/"):
        doc = f"docs/{doc}"
    return f"{doc}#{anchor}" if anchor else doc


def runbook_link(value: str, base_url: str = "") -> str:
    """mrkdwn for the runbook: a link when ``base_url`` is set (or the value is a URL), else the path."""
    target = runbook_target(value)
    if not target:
        return ""
    if target.startswith(("http://", "https://")):
        return f"<{target}|runbook>"
    if base_url:
        return f"<{base_url.rstrip('/')}/{target}|runbook: {target}>"
    return f"runbook: {target}"


def blocks_for(a: Alert, runbook_base: str = "", chart_note: str = "") -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, Block Kit blocks) of an alert."""
    icon = SEVERITY_ICON.get(a.severity, ":grey_question:")
    text = f"[{a.severity}] {a.title}"
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": f"{a.title}"[:150]}}]
    if a.text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {a.text}"[:3000]}})
    fields = {k: v for k, v in a.fields.items() if k != "chart"}
    if chart_note:
        fields["chart"] = chart_note
    if fields:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]}
                                                     for k, v in sorted(fields.items())][:10]})
    ctx = f"{a.source} · {a.kind}" + (f" · {a.trade_date}" if a.trade_date else "") + f" · {a.alert_id}"
    link = runbook_link(a.runbook, runbook_base)
    if link:
        ctx += f" · {link}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": ctx}]})
    return text, blocks
