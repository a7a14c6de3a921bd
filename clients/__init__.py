"""Lockgate's Python client: publish, subscribe, request/reply and history over gRPC, and
``client.admin`` for durables, dead letters, policies and the audit log.

Example::

    from lockgate.clients import Client

    async with Client("127.0.0.1:50051") as c:
        await c.publish("greetings.en", {"text": "hello"})

Importing this package never imports the broker's server modules.
"""

from lockgate.clients._admin import (
    Admin,
    AuditRecord,
    ClusterNode,
    DeadLetter,
    DurableInfo,
    DurableState,
    DurableStatus,
    NodeStatus,
    PendingDelivery,
    PolicyProblem,
    PolicySet,
    PolicyUpdate,
    PolicyVersion,
    WebhookSecrets,
)
from lockgate.clients._backoff import Backoff
from lockgate.clients._client import Client
from lockgate.clients._cluster import (
    Backbone,
    ClusterAdmin,
    ConfigChange,
    ConfigSetting,
    ConfigVersion,
)
from lockgate.clients._codec import AttributeValue, StartSpec, decode_data, to_cloudevent
from lockgate.clients._conversations import (
    AgentKey,
    Conversation,
    ConversationMessage,
    Conversations,
    Participant,
    Presence,
    Receipt,
    SendResult,
)
from lockgate.clients._deploy import BackboneDeployer, Deployment, HelmError
from lockgate.clients._errors import (
    AlreadyExists,
    DecryptionError,
    FailedPrecondition,
    InvalidArgument,
    InvalidEvent,
    InvalidSubject,
    KeyMismatch,
    LockgateError,
    NoResponders,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    SlowConsumer,
    TLSError,
    Unauthenticated,
    Unavailable,
    UnsafeKeystore,
    from_rpc_error,
)
from lockgate.clients._keystore import Keystore
from lockgate.clients._message import Event, Message, MessageBatch, PublishResult, StoredEvent
from lockgate.clients._subscription import Subscription
from lockgate.clients._tls import TLS
from lockgate.clients._webhook import WebhookSignatureError, verify_webhook

__all__ = [
    "TLS",
    "Admin",
    "AgentKey",
    "AlreadyExists",
    "AttributeValue",
    "AuditRecord",
    "Backbone",
    "BackboneDeployer",
    "Backoff",
    "Client",
    "ClusterAdmin",
    "ClusterNode",
    "ConfigChange",
    "ConfigSetting",
    "ConfigVersion",
    "Conversation",
    "ConversationMessage",
    "Conversations",
    "DeadLetter",
    "DecryptionError",
    "Deployment",
    "DurableInfo",
    "DurableState",
    "DurableStatus",
    "Event",
    "FailedPrecondition",
    "HelmError",
    "InvalidArgument",
    "InvalidEvent",
    "InvalidSubject",
    "KeyMismatch",
    "Keystore",
    "LockgateError",
    "Message",
    "MessageBatch",
    "NoResponders",
    "NodeStatus",
    "NotFound",
    "Participant",
    "PendingDelivery",
    "PermissionDenied",
    "PolicyProblem",
    "PolicySet",
    "PolicyUpdate",
    "PolicyVersion",
    "Presence",
    "PublishResult",
    "QuotaExceeded",
    "RateLimited",
    "Receipt",
    "RequestTimeout",
    "SendResult",
    "SlowConsumer",
    "StartSpec",
    "StoredEvent",
    "Subscription",
    "TLSError",
    "Unauthenticated",
    "Unavailable",
    "UnsafeKeystore",
    "WebhookSecrets",
    "WebhookSignatureError",
    "decode_data",
    "from_rpc_error",
    "to_cloudevent",
    "verify_webhook",
]
