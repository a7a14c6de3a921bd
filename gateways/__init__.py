"""Lockgate's gateways: HTTP, WebSocket, webhooks, Redis and NATS, each a thin adapter on the
broker's public API (``broker.api.BrokerAPI``).

Importing this package imports nothing heavy; each gateway lives in its own module
(``gateways.http``, ``gateways.websocket``, ``gateways.webhook``, ``gateways.redis``,
``gateways.nats``) and ``gateways.embedded.start_gateways`` runs them inside ``lockgate serve``.
"""

__all__: list[str] = []
