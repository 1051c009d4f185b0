"""Log records: what the trainer appends to a run's history and to ``metrics.jsonl``.

Each record is a flat dict with ``step``, ``time`` and ``kind``: ``loss`` for the losses (and the
objective's extras) logged every ``log_every`` steps, ``metric`` for a metric pass every
``metric_every`` steps, ``change`` for a change of settings mid-run (``{"step": N, "time": ...,
"kind": "change", "set": {"optim.generator.lr": 2e-4, "k_d": 2, "objective": {"name": ...}}}``,
applied at the boundary after step N; see :func:`explorer.spec.resolve_change`). Readers ask
:func:`record_kind` rather than looking for particular keys; a change record holds no series to plot.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

LOSS = "loss"
METRIC = "metric"
CHANGE = "change"
KINDS = (LOSS, METRIC, CHANGE)
#: keys every record may carry that are not series to plot
META_KEYS = frozenset({"step", "time", "kind", "steps_per_s", "errors", "set"})


def record_kind(record: Mapping[str, Any]) -> str:
    """``loss``, ``metric`` or ``change``: the record's declared ``kind``; records written before kinds
    existed are loss records when they hold ``g_loss`` or ``d_loss`` (every objective logs ``g_loss``)."""
    kind = record.get("kind")
    if kind in KINDS:
        return str(kind)
    return LOSS if ("g_loss" in record or "d_loss" in record) else METRIC


def split_records(records: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(loss records, metric records), each in their original order; change records are in neither
    (:func:`change_records` has them)."""
    losses: list[Mapping[str, Any]] = []
    metrics: list[Mapping[str, Any]] = []
    for rec in records:
        kind = record_kind(rec)
        if kind == LOSS:
            losses.append(rec)
        elif kind == METRIC:
            metrics.append(rec)
    return losses, metrics


def change_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The change records (settings changed mid-run), in their original order: markers for a chart."""
    return [rec for rec in records if record_kind(rec) == CHANGE]
