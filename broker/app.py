"""Runs a broker process: config -> store -> broker -> gRPC server, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from lockgate.broker import heap
from lockgate.broker.api import LocalAPI
from lockgate.broker.auth import Authenticator
from lockgate.broker.config import Config, ListenerLimits, redacted
from lockgate.broker.errors import BrokerError, FailedPrecondition
from lockgate.broker.factory import build_backends, cluster_mode
from lockgate.broker.fdbudget import raise_open_file_limit
from lockgate.broker.logjson import setup_logging
from lockgate.broker.node import Broker
from lockgate.broker.policies import PolicyManager
from lockgate.broker.policyhook import PolicyGate, SpamControls
from lockgate.broker.telemetry_export import TelemetrySettings, setup_telemetry
from lockgate.broker.tls import ServerTLS, refusal_of_plaintext

__all__ = ["GatewayStarter", "run", "serve"]

if TYPE_CHECKING:
    from lockgate.broker.tokens import TokenVerifier

log = logging.getLogger("lockgate")


def _gateway_listens(gateways: Mapping[str, object]) -> list[tuple[str, bool]]:
    """The ``listen`` of every enabled ``[gateways.*]`` table that names a host (an empty
    host binds 127.0.0.1 there), and whether the table sets its own TLS certificate."""
    out = []
    for table in gateways.values():
        if isinstance(table, Mapping) and table.get("enabled", True) is not False:
            listen = table.get("listen")
            if isinstance(listen, str) and listen.rpartition(":")[0].strip("[]"):
                out.append((listen, bool(table.get("tls_server_cert"))))
    return out


def _http_gateway(gateways: Mapping[str, object]) -> bool:
    table = gateways.get("http")
    return isinstance(table, Mapping) and table.get("enabled", True) is not False


def _plaintext_network_listens(config: Config, tls: ServerTLS | None) -> list[str]:
    """The non-loopback listeners that would serve plain text (gateways inherit the broker's
    TLS unless their table names its own certificate)."""
    listens = [(config.listen, False), *_gateway_listens(config.gateways)]
    return [
        listen
        for listen, own_tls in listens
        if not _is_loopback(listen) and tls is None and not own_tls
    ]


def _is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_verifier(config: Config) -> TokenVerifier | None:
    """The verifier of the trusted token issuers: the configured ones and, unless turned
    off, the local one (``lockgate tokens issue``); None when there are none."""
    from lockgate.broker.token_issuers import local_issuer, parse_issuers
    from lockgate.broker.tokens import TokenVerifier

    issuers = parse_issuers(config.auth_issuers, clock_skew=config.auth_clock_skew)
    if config.auth_local_issuer:
        issuers.append(local_issuer(config.data_dir, config.auth_clock_skew))
    return TokenVerifier(issuers) if issuers else None


class GatewayStarter(Protocol):
    """Starts the ``[gateways.*]`` tables in this process on the broker's public in-process
    API, the HTTP/WebSocket listeners within the ``http_*`` limits and with the broker's TLS
    (``tls``, None for plain text); returns their stop function. The composition root
    (``lockgate serve``) passes ``gateways.embedded.start_gateways``: the broker never imports
    the gateways itself."""

    def __call__(
        self,
        api: LocalAPI,
        config: Mapping[str, object],
        limits: ListenerLimits | None = None,
        /,
        *,
        tls: ServerTLS | None = None,
    ) -> Awaitable[Callable[[], Awaitable[None]]]: ...


async def serve(
    config: Config,
    *,
    ready: asyncio.Event | None = None,
    start_gateways: GatewayStarter | None = None,
) -> None:
    export = setup_telemetry(
        TelemetrySettings(
            config.telemetry,
            config.telemetry_interval,
            config.metrics_listen,
            config.otlp_endpoint,
            config.otlp_protocol,
            config.trace_sample_ratio,
            # The in-process HTTP gateway serves /metrics (admin role) from the same reader.
            prometheus=_http_gateway(config.gateways),
        )
    )
    try:
        await _serve(config, ready, start_gateways, export.metrics_address)
    finally:
        export.close()


async def _serve(
    config: Config,
    ready: asyncio.Event | None,
    start_gateways: GatewayStarter | None,
    metrics_address: tuple[str, int] | None,
) -> None:
    from lockgate.broker.server import BrokerServer  # grpc servers load only when serving

    tls = ServerTLS.from_config(config)  # unreadable files fail here, before anything opens
    plaintext = _plaintext_network_listens(config, tls)
    tokens = _token_verifier(config)  # checks [[auth.issuers]] before anything starts
    backends = build_backends(config)
    store = backends.store
    gate = PolicyGate(
        limiter=backends.limiter,
        spam=SpamControls(config.spam_max_per_minute, config.spam_duplicate_window),
        default_deny=config.policy_default_deny,
    )
    broker = Broker(
        config,
        store,
        gate,
        dedup=backends.dedup,
        backbone=backends.backbone,
        leases=backends.leases,
    )
    await backends.open()
    try:
        await broker.start()
    except BaseException:
        await backends.close()
        raise
    await broker.audit.config_loaded(redacted(config.as_dict()))  # type: ignore[arg-type]
    policies = PolicyManager(gate, store, config.policy_dir)
    try:
        await policies.start(config.policy_reload_interval)
    except BrokerError:
        await broker.stop()
        raise
    if cluster_mode(config):
        # Another node's PutPolicies or rollback: its notice, or the poll, brings it here.
        policies.follow_store(config.policy_reload_interval)
        broker.notice_listeners.append(
            lambda notice: policies.nudge() if notice.kind == "policy_swapped" else None
        )
    keys = [k for k in await store.list_keys() if not k.revoked]
    # Dev mode (keyless callers are admin) only while nothing could authenticate anyone.
    dev_mode = not keys and (tokens is None or not tokens.has_signing_key())
    exposed = [config.listen, *(listen for listen, _ in _gateway_listens(config.gateways))]
    insecure = [listen for listen in exposed if not _is_loopback(listen)]
    refusal = None
    if dev_mode and insecure:  # dev mode (keyless callers are admin) is loopback-only
        refusal = FailedPrecondition(
            f"refusing to listen on {insecure[0]} without API keys",
            reason="INSECURE_LISTEN",
            hint="create a key with `lockgate keys create --org ORG --agent NAME`, "
            "or listen on 127.0.0.1",
        )
    elif plaintext and not config.insecure_plaintext:
        refusal = FailedPrecondition(
            refusal_of_plaintext(plaintext),
            reason="INSECURE_LISTEN",
            hint="set tls_server_cert and tls_server_key (--tls-server-cert, --tls-server-key), "
            "or pass --insecure-plaintext if a trusted network or proxy protects this port",
        )
    if refusal is not None:
        await policies.stop()
        await broker.stop()
        await backends.close()
        raise refusal
    if plaintext:
        log.warning(
            "serve.insecure_plaintext: %s serve plain text on the network "
            "(--insecure-plaintext): keys and events cross it in clear",
            ", ".join(plaintext),
        )
    if tokens is not None:
        await tokens.start()
    auth = Authenticator(
        store,
        dev_mode=dev_mode,
        identities=tls.identities if tls is not None else None,
        tokens=tokens,
    )
    server = BrokerServer(broker, auth, policies)
    try:
        port = await server.start(config.listen, tls)
    except BrokerError:
        if tokens is not None:
            await tokens.close()
        await policies.stop()
        await broker.stop()
        raise
    stop_gateways = None
    if config.gateways:
        if start_gateways is None:
            await server.stop(0)
            await broker.stop()
            raise FailedPrecondition(
                "[gateways.*] tables are configured but this process runs no gateways",
                hint="start it with `lockgate serve`, which runs them",
            )
        try:
            stop_gateways = await start_gateways(
                LocalAPI(broker, auth), config.gateways, config.listener_limits(), tls=tls
            )
        except BrokerError:
            await server.stop(0)
            await broker.stop()
            raise
    host = config.listen.rsplit(":", 1)[0]
    if dev_mode:
        log.warning(
            "serve.dev_mode: no API keys exist, so every caller on loopback is "
            "default/anonymous with the admin role; create keys with `lockgate keys create`"
        )
    log.info(
        "serve.listening: lockgate listening on %s:%d data_dir=%s fsync=%s tls=%s",
        host,
        port,
        config.data_dir,
        config.fsync,
        "off" if tls is None else "mutual" if tls.mutual else "on",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if metrics_address is not None:
        log.info("serve.metrics: metrics on http://%s:%d/metrics", *metrics_address)
    heap.settle()  # startup's objects out of the collector's walks (see broker/heap.py)
    # The line tests and tools wait for (like nats-server's "Server is ready").
    print(f"lockgate ready on {host}:{port}", flush=True)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("serve.draining: grace %.1fs", config.drain_timeout)
    if stop_gateways is not None:
        await stop_gateways()
    await server.stop(config.drain_timeout)
    if tokens is not None:
        await tokens.close()
    await policies.stop()
    await broker.stop()
    await backends.close()
    log.info("serve.stopped")


def run(config: Config, *, start_gateways: GatewayStarter | None = None) -> int:
    setup_logging(config.log_level, config.log_format)
    # Connections hold descriptors: take the whole allowance (the gateways get a share of it).
    raise_open_file_limit()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional (Windows)
        pass
    asyncio.run(
        serve(config, start_gateways=start_gateways)
    )  # failures raise; `lockgate` prints them (broker/cli_errors.py)
    return 0
