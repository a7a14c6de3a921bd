"""Delivery to subscribers: one module per job.

- :mod:`broker.delivery.outbox`: the frames waiting for one subscriber stream.
- :mod:`broker.delivery.ephemeral`: at-most-once subscriptions (the router offers them
  frames on the publish path).
- :mod:`broker.delivery.durable`: at-least-once durable consumers and the sessions bound to
  them; a consumer depends on :class:`~broker.delivery.host.DurableHost`, not on the broker.
- :mod:`broker.delivery.pending`: a consumer's pending ids and their states (in flight,
  waiting, due), backoff and redelivery bookkeeping.
"""

from broker.delivery.durable import DurableConsumer, DurableSession
from broker.delivery.ephemeral import EphemeralSubscription
from broker.delivery.host import DurableHost, DurableStore
from broker.delivery.outbox import Outbox

__all__ = [
    "DurableConsumer",
    "DurableHost",
    "DurableSession",
    "DurableStore",
    "EphemeralSubscription",
    "Outbox",
]
