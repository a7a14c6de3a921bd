"""The gRPC server: the services of ``broker.rpc`` with health and reflection, and the drain.

Every service is registered the same way, from its proto descriptor
(``broker.rpc.service_handler``); ``Subscribe`` and ``Fetch`` answer with pre-encoded bytes.
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lockgate.broker.auth import Authenticator
from lockgate.broker.errors import FailedPrecondition, Unavailable
from lockgate.broker.node import Broker
from lockgate.broker.policies import PolicyManager
from lockgate.broker.rpc import service_handler
from lockgate.broker.rpc.admin_service import AdminService
from lockgate.broker.rpc.audit_service import AuditService
from lockgate.broker.rpc.broker_service import RAW_REQUESTS, RAW_RESPONSES, BrokerService
from lockgate.broker.rpc.config_service import ConfigService
from lockgate.broker.rpc.conversation_service import ConversationService
from lockgate.broker.rpc.policy_service import PolicyService
from lockgate.broker.rpc.registry_service import RegistryService
from lockgate.broker.tls import ServerTLS
from lockgate.broker.v1 import (
    admin_pb2,
    audit_pb2,
    broker_pb2,
    config_pb2,
    conversation_pb2,
    policy_pb2,
    registry_pb2,
)

__all__ = ["BrokerServer"]

log = logging.getLogger("lockgate.server")
_SERVICES = (
    broker_pb2.DESCRIPTOR.services_by_name["BrokerService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    policy_pb2.DESCRIPTOR.services_by_name["PolicyService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    conversation_pb2.DESCRIPTOR.services_by_name["ConversationService"],
    registry_pb2.DESCRIPTOR.services_by_name["RegistryService"],
    config_pb2.DESCRIPTOR.services_by_name["ConfigService"],
)
_HEALTH_NAMES = ("", *(s.full_name for s in _SERVICES))


class BrokerServer:
    """Serves one :class:`Broker` over gRPC: BrokerService, AdminService, PolicyService,
    AuditService, RegistryService, ConfigService, health and reflection."""

    def __init__(
        self, broker: Broker, auth: Authenticator, policies: PolicyManager | None = None
    ) -> None:
        self.broker = broker
        self.service = BrokerService(broker, auth)
        self.admin = AdminService(broker, auth)
        self.policy_api = PolicyService(broker, auth, policies)
        self.audit_api = AuditService(broker, auth)
        self.conversations = ConversationService(broker, auth)
        self.registry_api = RegistryService(broker, auth)
        self.config_api = ConfigService(broker, auth)
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    def _handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        (
            broker_service,
            admin_service,
            policy_service,
            audit_service,
            conv_service,
            registry,
            config,
        ) = _SERVICES
        return (
            service_handler(
                self.service, broker_service, raw=RAW_RESPONSES, raw_requests=RAW_REQUESTS
            ),
            service_handler(self.admin, admin_service),
            service_handler(self.policy_api, policy_service),
            service_handler(self.audit_api, audit_service),
            service_handler(self.conversations, conv_service),
            service_handler(self.registry_api, registry),
            service_handler(self.config_api, config),
        )

    async def start(self, listen: str, tls: ServerTLS | None = None) -> int:
        """Listens on ``listen`` (TLS with ``tls``; its files are re-read when they change)."""
        cfg = self.broker.config
        opts = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes + 64 * 1024),
            ("grpc.max_send_message_length", -1),
            ("grpc.keepalive_time_ms", int(cfg.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.so_reuseport", 0),
        ]
        if cfg.max_streams_per_connection:
            # HTTP/2's own bound on a connection's concurrent calls: our stream quota
            # refuses Publish and Subscribe streams beyond max_streams_per_connection with a
            # reason; this caps everything else a raw client could hold open on one
            # connection (a client waits for a free slot, it gets no error).
            opts.append(("grpc.max_concurrent_streams", cfg.max_streams_per_connection + 1000))
        server = grpc.aio.server(options=opts)
        server.add_generic_rpc_handlers(self._handlers())
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (
            *(s.full_name for s in _SERVICES),
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        try:
            if tls is not None:
                self.port = server.add_secure_port(listen, tls.grpc_credentials())
            else:
                self.port = server.add_insecure_port(listen)
        except RuntimeError:  # grpcio's way of saying the bind failed
            self.port = 0
        if not self.port:
            raise FailedPrecondition(
                f"cannot listen on {listen}",
                reason="LISTEN_FAILED",
                hint="is another process using that port? choose one with --listen HOST:PORT",
            )
        await server.start()
        self.server = server
        for name in _HEALTH_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float) -> None:
        """Drains: NOT_SERVING, refuse new publishes, end streams, finish in-flight work."""
        for name in _HEALTH_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.broker.draining = True
        err = Unavailable("the broker is shutting down", reason="SHUTTING_DOWN", hint="reconnect")
        self.broker.close_streams(err)
        for queue in self.service.publish_streams:
            queue.put_nowait((0, err))  # answered after the frames already in flight
        if self.server is not None:
            await self.server.stop(grace)
