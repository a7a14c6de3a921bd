/**
 * `@lockgate/client`: the Lockgate broker's TypeScript client for Node agents. The public names
 * are pinned here (and by test/api.test.mjs).
 */
export { Client } from "./client";
export type { ClientOptions, QueryOptions, SubscribeOptions } from "./client";
export type { TLSOptions } from "./tls";
export { Event, Message, StoredEvent } from "./message";
export { Subscription } from "./subscription";
export type { PublishResult } from "./publisher";
export {
  decodeAttributes,
  decodeData,
  encodeCloudEvent,
  encodePayload,
  toCloudEvent,
} from "./codec";
export type { AttributeValue, EventOptions, ProtoData, Schema, Start } from "./codec";
export {
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
  REASONS,
  RequestTimeout,
  SlowConsumer,
  TLSError,
  Unauthenticated,
  Unavailable,
  UnsafeKeystore,
  errorClassName,
  errorForReason,
  fromServiceError,
} from "./errors";
export { CloudEvent } from "./gen/broker/v1/cloudevent";
export { z } from "zod";
