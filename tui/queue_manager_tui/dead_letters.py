"""The dead-letter browser's data and controls: which queues are dead-letter queues, the copies they hold,
edited data checked before anything is sent, and the plans of requeue one, requeue all shown, edit and
requeue, and delete. No Textual here.

A copy is what a dead-letter queue keeps of a job that failed for good (its original queue, id, name, data,
why it failed). Requeueing is the server's redrive (`RedriveDeadLetters`): a failed original runs again, one
that retention removed is added anew, one run again meanwhile is left as it is, and the copy leaves the
dead-letter queue in the same step.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from queue_manager import DeadLetter, EncodedPayload, Queue, RedrivenQueue, RedriveResult
from queue_manager.convert import JSON_CONTENT_TYPE
from queue_manager.dead_letters import DEAD_LETTER_QUEUE
from queue_manager_tui.controls import NotApplicable, Plan
from queue_manager_tui.data import DataSource
from queue_manager_tui.format import fmt_count, safe

__all__ = [
    "DeadCopy",
    "dead_letter_queues",
    "delete_copy_plan",
    "edit_plan",
    "editable_text",
    "parse_edited",
    "redrive_all_plan",
    "redrive_outcome",
    "redrive_plan",
]


@dataclass(frozen=True, slots=True)
class DeadCopy:
    """A copy as the browser shows it: the dead-letter queue holding it and what it says.

    Attributes:
        dead_letter_queue: The queue holding the copy.
        letter: The copy, read as its original's queue, id, name, data and failure.
    """

    dead_letter_queue: str
    letter: DeadLetter

    @property
    def key(self) -> str:
        """The table row's key: unique across dead-letter queues (a queue name holds no ':')."""
        return f"{self.dead_letter_queue}:{self.letter.id}"

    @property
    def label(self) -> str:
        """The copy in words, for prompts."""
        letter = self.letter
        return (
            f"the copy of job {safe(letter.original_job_id)} ({safe(letter.original_name)}) of "
            f"{letter.original_queue} in {self.dead_letter_queue}"
        )


def dead_letter_queues(queues: Iterable[Queue]) -> list[str]:
    """The registered queues that some queue sends its failed jobs to, by name."""
    queues = list(queues)
    names = {q.name for q in queues}
    targets = {
        q.config.dead_letter_queue or DEAD_LETTER_QUEUE for q in queues if not q.config.disable_dead_letter
    }
    return sorted(targets & names)


def _is_json(letter: DeadLetter) -> bool:
    return letter.original_content_type.split(";", 1)[0].strip().lower() == JSON_CONTENT_TYPE


def editable_text(copy: DeadCopy) -> str:
    """The copy's original data as JSON to edit (indented).

    Raises:
        NotApplicable: The data is bytes of another content type: it cannot be edited as JSON; or it is
            encoded by a client's codecs and this dashboard has none to decode it (QM_CODEC_KEYS unset).
    """
    letter = copy.letter
    data = letter.original_data
    if isinstance(data, EncodedPayload):
        # Read without the keys: editing the ciphertext would only break it, so the edit is refused with what
        # would make it possible (with the keys the copy comes decoded, is edited so and is sent encoded).
        key = f", key {data.key_id}" if data.key_id else ""
        raise NotApplicable(
            f"Job {safe(letter.original_job_id)}'s data is encoded ({'+'.join(data.codecs)}{safe(key)}) and "
            "this dashboard holds no codecs to decode it: start qm dash with QM_CODEC_KEYS set to edit it "
            "(r requeues it as it is)."
        )
    if not _is_json(letter):
        raise NotApplicable(
            f"Job {safe(letter.original_job_id)}'s data is {safe(letter.original_content_type)}, not JSON: "
            "it cannot be edited here (r requeues it as it is)."
        )
    return json.dumps(letter.original_data, indent=2, ensure_ascii=False)


def parse_edited(text: str) -> Any:
    """The edited data, checked: any JSON value.

    Raises:
        ValueError: Not JSON; the message names the line and column and says nothing was sent.
    """
    if not text.strip():
        raise ValueError("The data is empty: type a JSON value (null for none). Nothing was sent.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"Not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. Nothing was sent."
        ) from None


def _copies(count: int) -> str:
    return f"{fmt_count(count)} {'copy' if count == 1 else 'copies'}"


def redrive_outcome(result: RedriveResult, what: str) -> str:
    """What a redrive did, from the server's counts: "Requeued 3 copies: 2 retried, 1 added anew."."""
    parts = []
    for counted, word in (
        (sum(q.retried for q in result.queues.values()), "run again"),
        (sum(q.added for q in result.queues.values()), "added anew (the original was gone)"),
        (sum(q.unchanged for q in result.queues.values()), "left as they were (run again meanwhile)"),
    ):
        if counted:
            parts.append(f"{fmt_count(counted)} {word}")
    text = f"Requeued {_copies(result.count)} {what}" + (": " + ", ".join(parts) if parts else "") + "."
    for copy_id, reason in result.skipped.items():
        text += f" {safe(copy_id)} stayed: {reason}."
    for queue in result.missing_queues:
        text += f" Queue {queue} is not registered: its copies stay."
    return text


def redrive_plan(copy: DeadCopy) -> Plan:
    """Requeues one copy (its original runs again, or is added anew)."""
    dlq, copy_id = copy.dead_letter_queue, copy.letter.id

    async def run(source: DataSource) -> str:
        return redrive_outcome(await source.redrive(dlq, None, [copy_id]), f"of {dlq}")

    return Plan(
        "Requeue copy",
        f"Requeue {copy.label}?",
        f"A failed original runs again in {copy.letter.original_queue} with its attempts counted afresh; "
        "one that is gone is added anew with this data. The copy leaves the dead-letter queue.",
        run,
    )


def redrive_all_plan(dead_letter_queues: list[str], original_queue: str | None, shown: int) -> Plan:
    """Requeues every waiting copy of the shown dead-letter queues (of one original queue's jobs when the
    view filters by one)."""
    if not dead_letter_queues or shown == 0:
        raise NotApplicable("No dead-letter copy is shown.")
    of = f" of jobs of {original_queue}" if original_queue else ""
    where = ", ".join(dead_letter_queues)

    async def run(source: DataSource) -> str:
        done = [await source.redrive(dlq, original_queue, None) for dlq in dead_letter_queues]
        merged = _merged(done)
        return redrive_outcome(merged, f"{of} from {where}")

    return Plan(
        "Requeue all shown",
        f"Requeue every waiting copy{of} in {where}?",
        f"{_copies(shown)} shown. Each original runs again (or is added anew if gone); the server says how "
        "many it sent back.",
        run,
    )


def _merged(results: list[RedriveResult]) -> RedriveResult:
    """Several dead-letter queues' redrives as one (the same original queue's counts added up)."""
    queues: dict[str, RedrivenQueue] = {}
    for result in results:
        for name, q in result.queues.items():
            had = queues.get(name, RedrivenQueue(name, 0, 0, 0, 0))
            queues[name] = RedrivenQueue(
                name,
                had.count + q.count,
                had.retried + q.retried,
                had.added + q.added,
                had.unchanged + q.unchanged,
            )
    return RedriveResult(
        count=sum(r.count for r in results),
        queues=queues,
        skipped={k: v for r in results for k, v in r.skipped.items()},
        missing_queues=sorted({m for r in results for m in r.missing_queues}),
    )


def edit_plan(copy: DeadCopy, data: Any) -> Plan:
    """Requeues one copy with edited data: a failed original runs again with it, a gone one is added anew
    with it."""
    dlq, copy_id = copy.dead_letter_queue, copy.letter.id
    shown = json.dumps(data, ensure_ascii=False)
    if len(shown) > 200:
        shown = shown[:200] + "…"

    async def run(source: DataSource) -> str:
        result = await source.redrive_with_data(dlq, copy_id, data)
        return redrive_outcome(result, f"of {dlq} with the edited data")

    return Plan(
        "Edit and requeue",
        f"Requeue {copy.label} with the edited data?",
        f"New data: {safe(shown)}. A failed original runs again with it; one that is gone is added anew "
        "with it; one run again meanwhile is left as it is (the edit is then not applied).",
        run,
    )


def delete_copy_plan(copy: DeadCopy) -> Plan:
    """Deletes one copy from its dead-letter queue (the original, if any, stays as it is)."""
    dlq, copy_id = copy.dead_letter_queue, copy.letter.id

    async def run(source: DataSource) -> str:
        await source.remove_job(dlq, copy_id)
        return f"Deleted the copy {safe(copy_id)} from {dlq}."

    return Plan(
        "Delete copy",
        f"Delete {copy.label}?",
        "The copy, with its record of the failure, is deleted for good; the original job stays as it is.",
        run,
        destructive=True,
    )
