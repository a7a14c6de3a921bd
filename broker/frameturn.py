"""The order of a Publish stream's frames when they are prepared concurrently.

With a claiming dedup window (a cluster's, in Redis) each frame of a Publish stream is
prepared in a task of its own, so that its round trip to the window overlaps the previous
frames' (one at a time, the stream's rate was one lookup per frame). Its :class:`FrameTurn`
keeps the stream's order where it matters:

- a frame queues its lookup only once the previous frame queued its own
  (:func:`look_up_in_turn`): the window claims in that order, so no frame waits for a key a
  later frame claimed, which would wait for its turn behind it;
- it stages (ids, the store write) only once the previous frame has finished
  (:func:`wait_for_turn`), so ids and store order are the stream's; when that one failed,
  this one lets go of its claims and fails too.

See :meth:`broker.pipeline.Pipeline.prepare`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lockgate.broker.dedup import DedupKey, DedupWindow
from lockgate.broker.errors import Unavailable

if TYPE_CHECKING:
    from lockgate.broker.pipeline import Prepared

__all__ = ["FrameTurn", "look_up_in_turn", "retrieve", "wait_for_turn"]


def _set(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def retrieve(done: asyncio.Future[None]) -> None:
    """Marks a deferred dedup write's error as seen: the commit that awaits it reports it;
    a prepare never committed (its stream went away) has nobody to report it to."""
    if not done.cancelled():
        done.exception()


@dataclass(eq=False, slots=True)
class FrameTurn:
    """A frame's place in its Publish stream (see the module)."""

    previous: FrameTurn | None
    """The stream's previous frame (None: the first, or it finished)."""
    sent: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    """Done once this frame's lookup is queued, or it will not look up."""
    prepared: asyncio.Future[Prepared] | None = None
    """This frame's prepare (the caller's task)."""

    def pass_on(self) -> None:
        """Lets the next frame look up once the previous one did (this one will not)."""
        if self.sent.done():
            return
        before = self.previous.sent if self.previous is not None else None
        if before is None or before.done():
            _set(self.sent)
        else:
            before.add_done_callback(lambda _: _set(self.sent))


async def look_up_in_turn(dedup: DedupWindow, turn: FrameTurn, keys: list[DedupKey]) -> list[int]:
    """The frame's lookup, queued after the previous frame's."""
    before = turn.previous.sent if turn.previous is not None else None
    if before is not None and not before.done():
        await asyncio.wait([before])
    if not keys:
        return []
    lookup = dedup.lookup(keys)
    # The next frame runs only once this one suspends, which the lookup does after queueing
    # its claim.
    _set(turn.sent)
    return await lookup


async def wait_for_turn(
    dedup: DedupWindow, after: asyncio.Future[Prepared], claimed: list[DedupKey]
) -> None:
    """Waits until the stream's previous frame is prepared; when it failed (or this frame
    is cancelled meanwhile) the keys this frame claimed are forgotten and it fails too."""
    try:
        if not after.done():  # asyncio.wait on a done future still takes two loop turns
            await asyncio.wait([after])
    except asyncio.CancelledError:
        _let_go(dedup, claimed)
        raise
    if after.cancelled() or after.exception() is not None:
        _let_go(dedup, claimed)
        raise Unavailable(
            "an earlier frame of this publish stream failed", hint="retry the publish"
        )


def _let_go(dedup: DedupWindow, claimed: list[DedupKey]) -> None:
    if claimed:
        asyncio.ensure_future(dedup.forget(claimed)).add_done_callback(retrieve)
