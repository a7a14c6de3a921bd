# Generated from protos/ by scripts/gen_protos.sh; do not edit.
import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConversationType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONVERSATION_TYPE_UNSPECIFIED: _ClassVar[ConversationType]
    CONVERSATION_TYPE_DIRECT: _ClassVar[ConversationType]
    CONVERSATION_TYPE_GROUP: _ClassVar[ConversationType]
    CONVERSATION_TYPE_BROADCAST: _ClassVar[ConversationType]

class ParticipantRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTICIPANT_ROLE_UNSPECIFIED: _ClassVar[ParticipantRole]
    PARTICIPANT_ROLE_MEMBER: _ClassVar[ParticipantRole]
    PARTICIPANT_ROLE_ADMIN: _ClassVar[ParticipantRole]
    PARTICIPANT_ROLE_OWNER: _ClassVar[ParticipantRole]

class PresenceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRESENCE_STATUS_UNSPECIFIED: _ClassVar[PresenceStatus]
    PRESENCE_STATUS_ONLINE: _ClassVar[PresenceStatus]
    PRESENCE_STATUS_OFFLINE: _ClassVar[PresenceStatus]
CONVERSATION_TYPE_UNSPECIFIED: ConversationType
CONVERSATION_TYPE_DIRECT: ConversationType
CONVERSATION_TYPE_GROUP: ConversationType
CONVERSATION_TYPE_BROADCAST: ConversationType
PARTICIPANT_ROLE_UNSPECIFIED: ParticipantRole
PARTICIPANT_ROLE_MEMBER: ParticipantRole
PARTICIPANT_ROLE_ADMIN: ParticipantRole
PARTICIPANT_ROLE_OWNER: ParticipantRole
PRESENCE_STATUS_UNSPECIFIED: PresenceStatus
PRESENCE_STATUS_ONLINE: PresenceStatus
PRESENCE_STATUS_OFFLINE: PresenceStatus

class Participant(_message.Message):
    __slots__ = ("agent", "role", "joined_time", "invited_by")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    JOINED_TIME_FIELD_NUMBER: _ClassVar[int]
    INVITED_BY_FIELD_NUMBER: _ClassVar[int]
    agent: str
    role: ParticipantRole
    joined_time: _timestamp_pb2.Timestamp
    invited_by: str
    def __init__(self, agent: _Optional[str] = ..., role: _Optional[_Union[ParticipantRole, str]] = ..., joined_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., invited_by: _Optional[str] = ...) -> None: ...

class Conversation(_message.Message):
    __slots__ = ("conversation_id", "org", "type", "owner", "participants", "metadata", "created_time", "closed_time", "key_epoch", "history_for_new_members", "open", "subject_prefix")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_TIME_FIELD_NUMBER: _ClassVar[int]
    CLOSED_TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FOR_NEW_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    org: str
    type: ConversationType
    owner: str
    participants: _containers.RepeatedCompositeFieldContainer[Participant]
    metadata: _containers.ScalarMap[str, str]
    created_time: _timestamp_pb2.Timestamp
    closed_time: _timestamp_pb2.Timestamp
    key_epoch: int
    history_for_new_members: bool
    open: bool
    subject_prefix: str
    def __init__(self, conversation_id: _Optional[str] = ..., org: _Optional[str] = ..., type: _Optional[_Union[ConversationType, str]] = ..., owner: _Optional[str] = ..., participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., closed_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_epoch: _Optional[int] = ..., history_for_new_members: _Optional[bool] = ..., open: _Optional[bool] = ..., subject_prefix: _Optional[str] = ...) -> None: ...

class EncryptionMetadata(_message.Message):
    __slots__ = ("scheme", "key_type", "epoch", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    KEY_TYPE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    scheme: str
    key_type: str
    epoch: int
    params: _containers.ScalarMap[str, str]
    def __init__(self, scheme: _Optional[str] = ..., key_type: _Optional[str] = ..., epoch: _Optional[int] = ..., params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ConversationMessage(_message.Message):
    __slots__ = ("id", "conversation_id", "sender", "sent_time", "data", "content_type", "encryption_metadata", "message_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    SENT_TIME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_METADATA_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    id: int
    conversation_id: str
    sender: str
    sent_time: _timestamp_pb2.Timestamp
    data: bytes
    content_type: str
    encryption_metadata: EncryptionMetadata
    message_key: str
    def __init__(self, id: _Optional[int] = ..., conversation_id: _Optional[str] = ..., sender: _Optional[str] = ..., sent_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data: _Optional[bytes] = ..., content_type: _Optional[str] = ..., encryption_metadata: _Optional[_Union[EncryptionMetadata, _Mapping]] = ..., message_key: _Optional[str] = ...) -> None: ...

class CreateConversationRequest(_message.Message):
    __slots__ = ("type", "participants", "metadata", "history_for_new_members", "open")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FOR_NEW_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    type: ConversationType
    participants: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    history_for_new_members: bool
    open: bool
    def __init__(self, type: _Optional[_Union[ConversationType, str]] = ..., participants: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., history_for_new_members: _Optional[bool] = ..., open: _Optional[bool] = ...) -> None: ...

class CreateConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class GetConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class GetConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class ListConversationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "include_closed")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CLOSED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    include_closed: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_closed: _Optional[bool] = ...) -> None: ...

class ListConversationsResponse(_message.Message):
    __slots__ = ("conversations", "next_page_token")
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[Conversation]
    next_page_token: str
    def __init__(self, conversations: _Optional[_Iterable[_Union[Conversation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class InviteMembersRequest(_message.Message):
    __slots__ = ("conversation_id", "agents", "role")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    agents: _containers.RepeatedScalarFieldContainer[str]
    role: ParticipantRole
    def __init__(self, conversation_id: _Optional[str] = ..., agents: _Optional[_Iterable[str]] = ..., role: _Optional[_Union[ParticipantRole, str]] = ...) -> None: ...

class InviteMembersResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class HistoryOnJoin(_message.Message):
    __slots__ = ("last_n", "since_time")
    LAST_N_FIELD_NUMBER: _ClassVar[int]
    SINCE_TIME_FIELD_NUMBER: _ClassVar[int]
    last_n: int
    since_time: _timestamp_pb2.Timestamp
    def __init__(self, last_n: _Optional[int] = ..., since_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JoinConversationRequest(_message.Message):
    __slots__ = ("conversation_id", "history")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    history: HistoryOnJoin
    def __init__(self, conversation_id: _Optional[str] = ..., history: _Optional[_Union[HistoryOnJoin, _Mapping]] = ...) -> None: ...

class JoinConversationResponse(_message.Message):
    __slots__ = ("conversation", "messages")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    messages: _containers.RepeatedCompositeFieldContainer[ConversationMessage]
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[ConversationMessage, _Mapping]]] = ...) -> None: ...

class LeaveConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class LeaveConversationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RemoveMemberRequest(_message.Message):
    __slots__ = ("conversation_id", "agent")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    agent: str
    def __init__(self, conversation_id: _Optional[str] = ..., agent: _Optional[str] = ...) -> None: ...

class RemoveMemberResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class CloseConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class CloseConversationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SendMessageRequest(_message.Message):
    __slots__ = ("conversation_id", "data", "content_type", "encryption_metadata", "message_key")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_METADATA_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    data: bytes
    content_type: str
    encryption_metadata: EncryptionMetadata
    message_key: str
    def __init__(self, conversation_id: _Optional[str] = ..., data: _Optional[bytes] = ..., content_type: _Optional[str] = ..., encryption_metadata: _Optional[_Union[EncryptionMetadata, _Mapping]] = ..., message_key: _Optional[str] = ...) -> None: ...

class SendMessageResponse(_message.Message):
    __slots__ = ("id", "duplicate")
    ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    id: int
    duplicate: bool
    def __init__(self, id: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("conversation_id", "page_size", "page_token", "after_id", "since_time", "last_n")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_N_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    page_size: int
    page_token: str
    after_id: int
    since_time: _timestamp_pb2.Timestamp
    last_n: int
    def __init__(self, conversation_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., after_id: _Optional[int] = ..., since_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_n: _Optional[int] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("messages", "next_page_token")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ConversationMessage]
    next_page_token: str
    def __init__(self, messages: _Optional[_Iterable[_Union[ConversationMessage, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AgentKey(_message.Message):
    __slots__ = ("agent", "public_key", "identity_key", "signature", "published_time")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_TIME_FIELD_NUMBER: _ClassVar[int]
    agent: str
    public_key: bytes
    identity_key: bytes
    signature: bytes
    published_time: _timestamp_pb2.Timestamp
    def __init__(self, agent: _Optional[str] = ..., public_key: _Optional[bytes] = ..., identity_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., published_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PublishKeyRequest(_message.Message):
    __slots__ = ("public_key", "identity_key", "signature")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    identity_key: bytes
    signature: bytes
    def __init__(self, public_key: _Optional[bytes] = ..., identity_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PublishKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: AgentKey
    def __init__(self, key: _Optional[_Union[AgentKey, _Mapping]] = ...) -> None: ...

class GetKeysRequest(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agents: _Optional[_Iterable[str]] = ...) -> None: ...

class GetKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[AgentKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[AgentKey, _Mapping]]] = ...) -> None: ...

class GroupKeyEnvelope(_message.Message):
    __slots__ = ("agent", "sealed_key", "epoch", "sealed_by", "signature", "created_time")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SEALED_KEY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEALED_BY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CREATED_TIME_FIELD_NUMBER: _ClassVar[int]
    agent: str
    sealed_key: bytes
    epoch: int
    sealed_by: str
    signature: bytes
    created_time: _timestamp_pb2.Timestamp
    def __init__(self, agent: _Optional[str] = ..., sealed_key: _Optional[bytes] = ..., epoch: _Optional[int] = ..., sealed_by: _Optional[str] = ..., signature: _Optional[bytes] = ..., created_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PutGroupKeysRequest(_message.Message):
    __slots__ = ("conversation_id", "epoch", "envelopes")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    epoch: int
    envelopes: _containers.RepeatedCompositeFieldContainer[GroupKeyEnvelope]
    def __init__(self, conversation_id: _Optional[str] = ..., epoch: _Optional[int] = ..., envelopes: _Optional[_Iterable[_Union[GroupKeyEnvelope, _Mapping]]] = ...) -> None: ...

class PutGroupKeysResponse(_message.Message):
    __slots__ = ("key_epoch",)
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    key_epoch: int
    def __init__(self, key_epoch: _Optional[int] = ...) -> None: ...

class GetGroupKeysRequest(_message.Message):
    __slots__ = ("conversation_id", "min_epoch")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    min_epoch: int
    def __init__(self, conversation_id: _Optional[str] = ..., min_epoch: _Optional[int] = ...) -> None: ...

class GetGroupKeysResponse(_message.Message):
    __slots__ = ("envelopes", "key_epoch")
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedCompositeFieldContainer[GroupKeyEnvelope]
    key_epoch: int
    def __init__(self, envelopes: _Optional[_Iterable[_Union[GroupKeyEnvelope, _Mapping]]] = ..., key_epoch: _Optional[int] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("agent", "delivered_id", "read_id", "updated_time")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_ID_FIELD_NUMBER: _ClassVar[int]
    READ_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATED_TIME_FIELD_NUMBER: _ClassVar[int]
    agent: str
    delivered_id: int
    read_id: int
    updated_time: _timestamp_pb2.Timestamp
    def __init__(self, agent: _Optional[str] = ..., delivered_id: _Optional[int] = ..., read_id: _Optional[int] = ..., updated_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MarkReceiptsRequest(_message.Message):
    __slots__ = ("conversation_id", "delivered_id", "read_id")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_ID_FIELD_NUMBER: _ClassVar[int]
    READ_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    delivered_id: int
    read_id: int
    def __init__(self, conversation_id: _Optional[str] = ..., delivered_id: _Optional[int] = ..., read_id: _Optional[int] = ...) -> None: ...

class MarkReceiptsResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: Receipt
    def __init__(self, receipt: _Optional[_Union[Receipt, _Mapping]] = ...) -> None: ...

class GetReceiptsRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class GetReceiptsResponse(_message.Message):
    __slots__ = ("receipts",)
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    receipts: _containers.RepeatedCompositeFieldContainer[Receipt]
    def __init__(self, receipts: _Optional[_Iterable[_Union[Receipt, _Mapping]]] = ...) -> None: ...

class SetTypingRequest(_message.Message):
    __slots__ = ("conversation_id", "typing")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TYPING_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    typing: bool
    def __init__(self, conversation_id: _Optional[str] = ..., typing: _Optional[bool] = ...) -> None: ...

class SetTypingResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Presence(_message.Message):
    __slots__ = ("agent", "status", "since_time")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SINCE_TIME_FIELD_NUMBER: _ClassVar[int]
    agent: str
    status: PresenceStatus
    since_time: _timestamp_pb2.Timestamp
    def __init__(self, agent: _Optional[str] = ..., status: _Optional[_Union[PresenceStatus, str]] = ..., since_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetPresenceRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class GetPresenceResponse(_message.Message):
    __slots__ = ("presence",)
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    presence: _containers.RepeatedCompositeFieldContainer[Presence]
    def __init__(self, presence: _Optional[_Iterable[_Union[Presence, _Mapping]]] = ...) -> None: ...
