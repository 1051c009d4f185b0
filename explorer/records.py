"""Log records: what the trainer appends to a run's history and to ``metrics.jsonl``.

Each record is a flat dict with ``step``, ``time`` and ``kind``: ``loss`` for the losses (and the
objective's extras) logged every ``log_every`` steps, ``metric`` for a metric pass every
``metric_every`` steps. Readers ask :func:`record_kind` rather than looking for particular keys.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

LOSS = "loss"
METRIC = "metric"
KINDS = (LOSS, METRIC)
#: keys every record may carry that are not series to plot
META_KEYS = frozenset({"step", "time", "kind", "steps_per_s", "errors"})


def record_kind(record: Mapping[str, Any]) -> str:
    """``loss`` or ``metric``: the record's declared ``kind``; records written before kinds existed are
    loss records when they hold ``g_loss`` or ``d_loss`` (every objective logs ``g_loss``)."""
    kind = record.get("kind")
    if kind in KINDS:
        return str(kind)
    return LOSS if ("g_loss" in record or "d_loss" in record) else METRIC


def split_records(records: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(loss records, metric records), each in their original order."""
    losses: list[Mapping[str, Any]] = []
    metrics: list[Mapping[str, Any]] = []
    for rec in records:
        (losses if record_kind(rec) == LOSS else metrics).append(rec)
    return losses, metrics
