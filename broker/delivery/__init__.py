"""Delivery to subscribers: one module per job.

- :mod:`broker.delivery.outbox`: the frames waiting for one subscriber stream.
- :mod:`broker.delivery.ephemeral`: at-most-once subscriptions (the router offers them
  frames on the publish path).
- :mod:`broker.delivery.durable`: at-least-once durable consumers and the sessions bound to
  them; a consumer depends on :class:`~broker.delivery.host.DurableHost`, not on the broker.
- :mod:`broker.delivery.pending`: a consumer's pending ids and their states (in flight,
  waiting, due), backoff and redelivery bookkeeping.
- :mod:`broker.delivery.recent`: the node's most recent commits in memory, read by a
  consumer a little behind the head instead of the store.
"""

from lockgate.broker.delivery.durable import BoundSession, DurableConsumer, DurableSession
from lockgate.broker.delivery.ephemeral import EphemeralSubscription
from lockgate.broker.delivery.host import DurableHost, DurableStore
from lockgate.broker.delivery.outbox import Outbox

__all__ = [
    "BoundSession",
    "DurableConsumer",
    "DurableHost",
    "DurableSession",
    "DurableStore",
    "EphemeralSubscription",
    "Outbox",
]
