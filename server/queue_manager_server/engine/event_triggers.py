"""Event triggers: stored definitions (encoded EventTrigger messages) that make a push of a matching key
add a job (services/event_triggers.py validates them, push_event.lua adds their jobs).

A push needs the triggers at hand: this store keeps them as last read, with their version (a counter every
change raises), and reads them again only when a push finds the version moved (push_event.lua refuses a
plan made on old triggers), so a push costs one script call while the triggers stay as they are.
"""

from __future__ import annotations

from queue_manager.v1 import external_events_pb2 as pb
from queue_manager_server.engine.engine import Engine, _b, _i, _s
from queue_manager_server.engine.keys import event_triggers, event_triggers_version
from queue_manager_server.errors import EventTriggerNotFound, WrongState

# Triggers on a server: a push reads and matches every one (in memory), and each adds a job per event.
MAX_EVENT_TRIGGERS = 1000


class EventTriggers:
    """The stored event triggers, and this server's copy of them for pushes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._version: str | None = None
        self._triggers: list[pb.EventTrigger] = []

    async def upsert_event_trigger(self, trigger: pb.EventTrigger) -> bool:
        """Stores a trigger (creating it or replacing the one of its id); True when it was created.

        Raises:
            WrongState: There are MAX_EVENT_TRIGGERS triggers already.
        """
        code = _i(
            await self.engine.scripts.run(
                "upsert_event_trigger",
                [event_triggers(self.engine.prefix), event_triggers_version(self.engine.prefix)],
                [trigger.id, trigger.SerializeToString(), MAX_EVENT_TRIGGERS],
            )
        )
        if code < 0:
            raise WrongState(
                f"there are {MAX_EVENT_TRIGGERS} event triggers already, the most a server keeps; delete "
                "some (or make one pattern cover several keys: 'order:*')"
            )
        return code == 1

    async def delete_event_trigger(self, trigger_id: str) -> pb.EventTrigger:
        """Deletes a trigger and returns it as it was.

        Raises:
            EventTriggerNotFound: There is none of that id.
        """
        old = await self.engine.scripts.run(
            "delete_event_trigger",
            [event_triggers(self.engine.prefix), event_triggers_version(self.engine.prefix)],
            [trigger_id],
        )
        if not old:
            raise EventTriggerNotFound(trigger_id)
        return pb.EventTrigger.FromString(old)

    async def find(self, trigger_id: str) -> pb.EventTrigger | None:
        """The trigger of that id, or None."""
        raw = await self.engine.redis.hget(event_triggers(self.engine.prefix), trigger_id)
        return None if raw is None else pb.EventTrigger.FromString(_b(raw))

    async def current(self, fresh: bool = False) -> tuple[str, list[pb.EventTrigger]]:
        """The triggers by id, and their version: as last read unless `fresh` (or never read)."""
        if fresh or self._version is None:
            # The version first, in one round trip but not one transaction (a Cluster's pipelines are none): a
            # change between the two reads leaves the triggers newer than the version, so the push planned on
            # them is refused and plans again, never one planned on triggers older than its version.
            pipe = self.engine.store.pipeline()
            pipe.get(event_triggers_version(self.engine.prefix))
            pipe.hgetall(event_triggers(self.engine.prefix))
            version, rows = await self.engine.store.execute(pipe)
            triggers = [pb.EventTrigger.FromString(v) for v in rows.values()]
            self._triggers = sorted(triggers, key=lambda t: t.id)
            self._version = "0" if version is None else _s(version)
        return self._version, list(self._triggers)
