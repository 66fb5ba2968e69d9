"""The Dead letters view against a real server and Valkey: browsing every dead-letter copy with its error and
stack, the filter by original queue, requeue one, requeue all shown, edit and requeue (bad JSON refused with
nothing sent), and delete; each through its confirmation."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from textual.widgets import Static, TextArea

from queue_manager import AesGcmCodec, JobContext, JobState, NotFoundError, QueueManager
from queue_manager.dead_letters import DEAD_LETTER_QUEUE
from queue_manager_tui.data import EditNotSent, connect
from queue_manager_tui.screens.confirm import ConfirmScreen
from queue_manager_tui.screens.edit_data import EditDataScreen
from tests.conftest import RunningServer
from tests.rawworker import eventually
from tests.tui.helpers import rows, screen_lines, wait_for, wait_live
from tests.tui.test_tui_live import SIZE, WAIT, confirm, dashboard, until


@dataclass
class Dead:
    """The jobs that failed for good, by queue."""

    qm: QueueManager
    orders: list[str]
    billing: list[str]


def key(queue: str, job_id: str) -> str:
    """A copy's row key: its dead-letter queue and its id there (``<queue>:<job id>``)."""
    return f"{DEAD_LETTER_QUEUE}:{queue}:{job_id}"


@pytest.fixture
async def dead(server: RunningServer) -> AsyncIterator[Dead]:
    """Three orders and two billing jobs that failed for good (one attempt each), their copies in the
    default dead-letter queue; no worker left running, so a requeued job stays waiting."""
    qm = QueueManager(server.address)
    await qm.register_queue("orders")
    await qm.register_queue("billing")
    orders = [(await qm.add_job("orders", "charge", {"n": i}, {"attempts": 1})).id for i in range(3)]
    billing = [(await qm.add_job("billing", "invoice", {"b": i}, {"attempts": 1})).id for i in range(2)]
    failing = QueueManager(server.address, shutdown_grace=2.0)

    async def fail(job: JobContext) -> None:
        raise ValueError(f"card declined for {job.data}")

    failing.register_processor("orders", fail)
    failing.register_processor("billing", fail)
    await failing.start_workers()
    for queue, ids in (("orders", orders), ("billing", billing)):
        for job_id in ids:
            assert (await qm.wait_for_job(queue, job_id, timeout=WAIT)).state is JobState.FAILED
    await failing.shutdown()
    yield Dead(qm, orders, billing)
    await qm.shutdown()


async def copies(qm: QueueManager) -> set[str]:
    page, _ = await qm.list_dead_letters(page_size=100)
    return {c.id for c in page}


def messages(app: object) -> list[str]:
    return [n.message for n in app._notifications]  # type: ignore[attr-defined]


async def test_browse_filter_requeue_edit_and_delete_copies(server: RunningServer, dead: Dead) -> None:
    qm = dead.qm
    everyone = {f"orders:{i}" for i in dead.orders} | {f"billing:{i}" for i in dead.billing}
    app = dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 3)
        await until(pilot, lambda: _has(qm, everyone), "the five copies in the dead-letter queue")

        # 6: every copy, with its original queue, name and failed reason; the detail has data, error, stack.
        await pilot.press("6")
        view = app.dead_letters_view
        await wait_for(pilot, lambda: len(rows(app, "dlq-table")) == 5, "the five copies", WAIT)
        copy = view.selected()
        assert copy is not None and copy.letter.failure_reason.startswith("card declined")
        body = app.query_one("#dlq-detail-body", Static)
        await wait_for(
            pilot, lambda: "ValueError" in str(body.content), f"the stack trace: {body.content}", WAIT
        )
        assert "original data" in str(body.content) and "original job (failed)" in str(body.content)
        assert any("card declined" in line for line in screen_lines(app))

        # f: only the copies of billing's jobs; R requeues every one shown, saying the server's count.
        await pilot.press("f", *"billing", "enter")
        assert sorted(rows(app, "dlq-table")) == sorted(key("billing", i) for i in dead.billing)
        await confirm(pilot, "R", f"Requeue every waiting copy of jobs of billing in {DEAD_LETTER_QUEUE}?")
        await wait_for(pilot, lambda: any("Requeued 2 copies" in m for m in messages(app)), "the count", WAIT)
        for job_id in dead.billing:
            assert (await qm.get_job("billing", job_id)).state is JobState.WAITING
        await wait_for(pilot, lambda: rows(app, "dlq-table") == [], "no billing copy left", WAIT)

        # Back to every queue's copies: the three orders.
        await pilot.press("f", "ctrl+u", "enter")
        await wait_for(pilot, lambda: len(rows(app, "dlq-table")) == 3, "the orders copies", WAIT)
        assert view.original is None

        # r: requeue one copy; its original runs again (waiting: no worker now) and the copy leaves.
        first = rows(app, "dlq-table")[0]
        first_id = first.rsplit(":", 1)[1]
        await confirm(
            pilot, "r", f"Requeue the copy of job {first_id} (charge) of orders in {DEAD_LETTER_QUEUE}?"
        )
        await until(
            pilot, lambda: _state_is(qm, "orders", first_id, JobState.WAITING), "the requeued original"
        )
        await wait_for(pilot, lambda: first not in rows(app, "dlq-table"), "the copy to leave", WAIT)

        # e: the copy's original data in an editor. Bad JSON is refused where it is wrong, nothing sent.
        await wait_for(pilot, lambda: len(rows(app, "dlq-table")) == 2, "two copies left", WAIT)
        edited_key = rows(app, "dlq-table")[0]
        edited_id = edited_key.rsplit(":", 1)[1]
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EditDataScreen), "the editor", WAIT)
        editor = app.screen
        assert isinstance(editor, EditDataScreen)
        area = editor.query_one("#edit-data", TextArea)
        assert '"n":' in area.text
        area.load_text('{"n": 99,')
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, EditDataScreen)
        assert (
            "Not valid JSON" in editor.error
            and "line 1" in editor.error
            and "Nothing was sent" in editor.error
        )
        assert (await qm.get_job("orders", edited_id)).state is JobState.FAILED
        assert f"orders:{edited_id}" in await copies(qm)
        # Valid JSON: the confirmation says what will happen; yes requeues the original with the new data.
        area.load_text('{"n": 99, "card": "new"}')
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation", WAIT)
        confirm_screen = app.screen
        assert isinstance(confirm_screen, ConfirmScreen)
        assert confirm_screen.plan.prompt.endswith("with the edited data?")
        assert '"card": "new"' in confirm_screen.plan.detail
        await pilot.press("y")
        await until(
            pilot, lambda: _state_is(qm, "orders", edited_id, JobState.WAITING), "the edited original"
        )
        assert (await qm.get_job("orders", edited_id)).data == {"n": 99, "card": "new"}
        await wait_for(
            pilot, lambda: edited_key not in rows(app, "dlq-table"), "the edited copy to leave", WAIT
        )

        # d: delete the last copy; its original stays failed.
        last_key = rows(app, "dlq-table")[0]
        last_id = last_key.rsplit(":", 1)[1]
        await confirm(
            pilot, "d", f"Delete the copy of job {last_id} (charge) of orders in {DEAD_LETTER_QUEUE}?"
        )
        await wait_for(pilot, lambda: rows(app, "dlq-table") == [], "no copy left", WAIT)
        assert await copies(qm) == set()
        assert (await qm.get_job("orders", last_id)).state is JobState.FAILED


async def test_a_copy_of_bytes_is_not_edited_and_a_gone_copy_says_so(
    server: RunningServer, dead: Dead
) -> None:
    qm = dead.qm
    app = dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 3)
        await until(pilot, lambda: _has(qm, {f"orders:{dead.orders[0]}"}), "a copy")
        await pilot.press("6")
        await wait_for(pilot, lambda: len(rows(app, "dlq-table")) == 5, "the five copies", WAIT)
        # The copy goes away behind the view's back (another operator): the edit sends nothing and says so.
        target = rows(app, "dlq-table")[0]
        copy_id = target.split(":", 1)[1]
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EditDataScreen), "the editor", WAIT)
        await qm.remove_job(DEAD_LETTER_QUEUE, copy_id)
        app.screen.query_one("#edit-data", TextArea).load_text('{"n": 7}')
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation", WAIT)
        await pilot.press("y")
        await wait_for(
            pilot, lambda: any("is no longer in" in m for m in messages(app)), "the edit's refusal", WAIT
        )
        queue, job_id = copy_id.split(":", 1)
        job = await qm.get_job(queue, job_id)
        assert job.state is JobState.FAILED and job.data != {"n": 7}


async def _has(qm: QueueManager, wanted: set[str]) -> bool:
    return wanted <= await copies(qm)


async def _state_is(qm: QueueManager, queue: str, job_id: str, state: JobState) -> bool:
    try:
        return (await qm.get_job(queue, job_id)).state is state
    except NotFoundError:
        return False


async def test_an_edit_that_is_not_carried_out_leaves_the_copy_as_it_was(
    server: RunningServer, dead: Dead
) -> None:
    """Edit and requeue is one call: a copy whose original queue is gone is put back with the data it had,
    and a copy a worker holds is skipped, unchanged (it was edited first, then redriven, before)."""
    qm = dead.qm
    everyone = {f"billing:{i}" for i in dead.billing} | {f"orders:{i}" for i in dead.orders}
    await eventually(lambda: _has(qm, everyone), WAIT)
    source = connect(server.address)
    try:
        gone_copy = f"billing:{dead.billing[0]}"
        before = (await qm.get_job(DEAD_LETTER_QUEUE, gone_copy)).data
        await qm.obliterate_queue("billing", force=True)
        result = await source.redrive_with_data(DEAD_LETTER_QUEUE, gone_copy, {"b": 100})
        assert (result.count, result.missing_queues) == (0, ["billing"])
        assert (await qm.get_job(DEAD_LETTER_QUEUE, gone_copy)).data == before
        # A worker of the dead-letter queue holds a copy: refused, the copy as it was.
        holding = QueueManager(server.address, concurrency=1, shutdown_grace=2.0)
        held: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        release = asyncio.Event()

        async def hold(job: JobContext) -> None:
            if not held.done():
                held.set_result(job.id)
            await release.wait()

        holding.register_processor(DEAD_LETTER_QUEUE, hold)
        await holding.start_workers()
        try:
            held_copy = await asyncio.wait_for(held, WAIT)
            held_before = (await qm.get_job(DEAD_LETTER_QUEUE, held_copy)).data
            with pytest.raises(EditNotSent, match="a worker of the dead-letter queue holds it"):
                await source.redrive_with_data(DEAD_LETTER_QUEUE, held_copy, {"n": 100})
            assert (await qm.get_job(DEAD_LETTER_QUEUE, held_copy)).data == held_before
        finally:
            release.set()
            await holding.shutdown()
    finally:
        await source.close()


async def test_an_encoded_copy_is_edited_decoded_with_the_keys_and_refused_without(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of a job a client encrypted: without keys the edit is refused (nothing to edit but ciphertext);
    with QM_CODEC_KEYS the editor holds the decoded data and the requeued job's data goes encoded."""
    key = bytes(range(32))
    monkeypatch.delenv("QM_CODEC_KEYS", raising=False)
    monkeypatch.delenv("QM_CODEC_GZIP_MIN_SIZE", raising=False)
    sealed = QueueManager(server.address, codecs=[AesGcmCodec({"k1": key})], shutdown_grace=2.0)
    await sealed.register_queue("vault")
    job = await sealed.add_job("vault", "charge", {"card": "4111"}, {"attempts": 1})

    async def fail(job: JobContext) -> None:
        raise ValueError("declined")

    sealed.register_processor("vault", fail)
    await sealed.start_workers()
    try:
        assert (await sealed.wait_for_job("vault", job.id, timeout=WAIT)).state is JobState.FAILED
        await until_copy(sealed, f"vault:{job.id}")
    finally:
        await sealed.shutdown()

    app = dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)
        await pilot.press("6")
        await wait_for(pilot, lambda: len(rows(app, "dlq-table")) == 1, "the copy", WAIT)
        # The detail says what the data is rather than showing (or choking on) its ciphertext.
        body = app.query_one("#dlq-detail-body", Static)
        await wait_for(pilot, lambda: "encoded aes-256-gcm, key k1>" in str(body.content), "the detail", WAIT)
        await pilot.press("e")
        await wait_for(pilot, lambda: any("is encoded" in m for m in messages(app)), "the refusal", WAIT)
        assert not isinstance(app.screen, EditDataScreen)
        [refusal] = [m for m in messages(app) if "is encoded" in m]
        assert refusal == (
            f"Job {job.id}'s data is encoded (aes-256-gcm, key k1) and this dashboard holds no codecs to "
            "decode it: start qm dash with QM_CODEC_KEYS set to edit it (r requeues it as it is)."
        )

    monkeypatch.setenv("QM_CODEC_KEYS", f"k1:{base64.b64encode(key).decode()}")
    app = dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)
        await pilot.press("6")
        await wait_for(pilot, lambda: len(rows(app, "dlq-table")) == 1, "the copy", WAIT)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EditDataScreen), "the editor", WAIT)
        area = app.screen.query_one("#edit-data", TextArea)
        assert json.loads(area.text) == {"card": "4111"}
        area.load_text('{"card": "5500"}')
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation", WAIT)
        await pilot.press("y")
        await wait_for(pilot, lambda: rows(app, "dlq-table") == [], "the copy to leave", WAIT)
    engine = server.app.engine
    stored = await engine.redis.hget(engine.keys("vault").job(job.id), "data")
    assert b"5500" not in stored and b"card" not in stored
    async with QueueManager(server.address, codecs=[AesGcmCodec({"k1": key})]) as reader:
        assert (await reader.get_job("vault", job.id)).data == {"card": "5500"}


async def until_copy(qm: QueueManager, copy_id: str) -> None:
    """Until the hand-off just after a failure has written the copy `copy_id`."""
    await eventually(lambda: _has(qm, {copy_id}), WAIT)
