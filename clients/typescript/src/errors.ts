/**
 * The client's errors: one tree, one factory from gRPC errors, the same classes and reasons as
 * the Python client's `clients/_errors.py`.
 *
 * ```
 * LockgateError                 reason, message, hint, metadata, code
 * ├── InvalidArgument           INVALID_ARGUMENT, INVALID_START, INVALID_DURABLE, ...
 * │   ├── InvalidSubject        INVALID_SUBJECT
 * │   └── InvalidEvent          INVALID_EVENT, MISSING_ATTRIBUTE, EVENT_TOO_LARGE, EMPTY_EVENT
 * ├── PermissionDenied          PERMISSION_DENIED, POLICY_DENIED, NOT_PARTICIPANT
 * ├── Unauthenticated           UNAUTHENTICATED, CREDENTIAL_EXPIRED, CREDENTIAL_REVOKED, TOKEN_INVALID
 * ├── AlreadyExists             ALREADY_EXISTS, DUPLICATE_CONTENT, DUPLICATE_KEY
 * ├── RateLimited               RATE_LIMITED, RESOURCE_EXHAUSTED (retryAfter seconds)
 * ├── NotFound                  NOT_FOUND, UNKNOWN_DURABLE, UNKNOWN_VERSION, UNKNOWN_CONVERSATION
 * │   └── NoResponders          NO_RESPONDERS
 * ├── RequestTimeout            REQUEST_TIMEOUT, DEADLINE_EXCEEDED
 * ├── SlowConsumer              SLOW_CONSUMER
 * ├── QuotaExceeded             QUOTA_EXCEEDED (quota, limit), GROUP_FULL
 * ├── Unavailable               UNAVAILABLE, STORE_UNAVAILABLE, SHUTTING_DOWN, LIMITER_UNAVAILABLE
 * │   └── TLSError              TLS_HANDSHAKE_FAILED
 * ├── FailedPrecondition        POLICY_REQUIREMENT, NOT_PENDING, DURABLE_MISMATCH, ...
 * ├── DecryptionError           DECRYPTION_FAILED (client side)
 * ├── KeyMismatch               KEY_MISMATCH (client side)
 * └── UnsafeKeystore            UNSAFE_KEYSTORE (client side)
 * ```
 *
 * Reasons are the names of `broker.v1.ErrorReason` without their prefix; the type
 * {@link ReasonName} is derived from the generated enum, so a reason the protos do not list
 * does not compile. A reason this client does not know maps to {@link LockgateError} with the
 * reason kept, so newer brokers never crash older clients.
 *
 * @example
 * try { await client.publish("billing.invoices", { total: 10 }); }
 * catch (err) { if (err instanceof RateLimited) await sleep((err.retryAfter ?? 1) * 1000); }
 */
import { Metadata, ServiceError, status } from "@grpc/grpc-js";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { ErrorReason } from "./gen/broker/v1/errors";

type Stripped<T> = T extends `ERROR_REASON_${infer N}` ? N : never;
/** A reason's name as it travels (`POLICY_DENIED`), checked against the generated enum. */
export type ReasonName = Stripped<keyof typeof ErrorReason>;

export const ERROR_DOMAIN = "lockgate.dev";

export interface ErrorOptions {
  reason?: string;
  hint?: string;
  metadata?: Record<string, string>;
}

/** Base of every error the client throws. */
export class LockgateError extends Error {
  static readonly defaultReason: ReasonName = "UNKNOWN";
  /** The machine-readable cause, as in `ErrorInfo.reason`. */
  readonly reason: string;
  /** What to do about it (may be empty). */
  readonly hint: string;
  /** Further details the broker sent (`retry_after`, `quota`, `limit`...). */
  readonly metadata: Record<string, string>;
  /** The gRPC status code that carried the error, when one did. */
  code: number | undefined = undefined;

  constructor(message: string, options: ErrorOptions = {}) {
    super(message);
    this.name = new.target.name;
    this.reason = options.reason || (new.target as typeof LockgateError).defaultReason;
    this.hint = options.hint ?? "";
    this.metadata = { ...(options.metadata ?? {}) };
  }

  /** `Name: message (hint: ...)`, as the Python client's `str(err)` plus the class. */
  override toString(): string {
    return this.hint ? `${this.name}: ${this.message} (hint: ${this.hint})` : `${this.name}: ${this.message}`;
  }
}

/** The request is malformed: a start position, a durable's settings, a page token, ... */
export class InvalidArgument extends LockgateError {
  static override readonly defaultReason: ReasonName = "INVALID_ARGUMENT";
}
/** The subject or pattern is not valid syntax (`a.b.c`, wildcards `*` and `>`). */
export class InvalidSubject extends InvalidArgument {
  static override readonly defaultReason: ReasonName = "INVALID_SUBJECT";
}
/** The event is malformed, lacks an attribute, is empty or too large. */
export class InvalidEvent extends InvalidArgument {
  static override readonly defaultReason: ReasonName = "INVALID_EVENT";
}
/** The caller may not do this: a role, a policy rule, or another org's subject. */
export class PermissionDenied extends LockgateError {
  static override readonly defaultReason: ReasonName = "PERMISSION_DENIED";
}
/** The API key or token is missing, unknown, expired or revoked. */
export class Unauthenticated extends LockgateError {
  static override readonly defaultReason: ReasonName = "UNAUTHENTICATED";
}
/** The thing exists already, or a policy's dedup window saw this event before. */
export class AlreadyExists extends LockgateError {
  static override readonly defaultReason: ReasonName = "ALREADY_EXISTS";
}
/** Too many events; `retryAfter` says how many seconds to wait, when the broker knows. */
export class RateLimited extends LockgateError {
  static override readonly defaultReason: ReasonName = "RATE_LIMITED";
  get retryAfter(): number | undefined {
    const text = this.metadata["retry_after"];
    const value = text === undefined ? NaN : Number.parseFloat(text.replace(/s$/, ""));
    return Number.isFinite(value) ? value : undefined;
  }
}
/** The event, durable or other named thing does not exist. */
export class NotFound extends LockgateError {
  static override readonly defaultReason: ReasonName = "NOT_FOUND";
}
/** A request found nobody subscribed to its subject. */
export class NoResponders extends NotFound {
  static override readonly defaultReason: ReasonName = "NO_RESPONDERS";
}
/** A request got no reply in time. */
export class RequestTimeout extends LockgateError {
  static override readonly defaultReason: ReasonName = "DEADLINE_EXCEEDED";
}
/** The subscriber fell too far behind and the broker closed its stream. */
export class SlowConsumer extends LockgateError {
  static override readonly defaultReason: ReasonName = "SLOW_CONSUMER";
}
/** An org or a connection holds as many of something as the broker allows. */
export class QuotaExceeded extends LockgateError {
  static override readonly defaultReason: ReasonName = "QUOTA_EXCEEDED";
  get quota(): string {
    return this.metadata["quota"] ?? "";
  }
  get limit(): number {
    const text = this.metadata["limit"] ?? "";
    return /^\d+$/.test(text) ? Number(text) : 0;
  }
}
/** The broker cannot be reached, or a backend behind it failed closed. */
export class Unavailable extends LockgateError {
  static override readonly defaultReason: ReasonName = "UNAVAILABLE";
}
/** The TLS handshake with the broker failed (plain text against TLS or the reverse, an
 * untrusted certificate, a refused client certificate). */
export class TLSError extends Unavailable {
  static override readonly defaultReason: ReasonName = "TLS_HANDSHAKE_FAILED";
}
/** The operation does not fit the current state (a policy requirement, an id not pending). */
export class FailedPrecondition extends LockgateError {
  static override readonly defaultReason: ReasonName = "FAILED_PRECONDITION";
}
/** Client side, end-to-end encryption: a message does not decrypt (Python client only today). */
export class DecryptionError extends LockgateError {
  static override readonly defaultReason: ReasonName = "DECRYPTION_FAILED";
}
/** Client side, key directory: an entry is not what it should be (Python client only today). */
export class KeyMismatch extends LockgateError {
  static override readonly defaultReason: ReasonName = "KEY_MISMATCH";
}
/** Client side: the local keystore file is readable by others (Python client only today). */
export class UnsafeKeystore extends LockgateError {
  static override readonly defaultReason: ReasonName = "UNSAFE_KEYSTORE";
}

type ErrorClass = new (message: string, options?: ErrorOptions) => LockgateError;

// The same table as clients/_errors.py's _BY_CLASS; tests/clients/test_typescript_interop.py
// checks that both clients pick the same class name for every reason of the protos.
const BY_CLASS: [ErrorClass, ReasonName[]][] = [
  [
    InvalidArgument,
    [
      "INVALID_ARGUMENT", "INVALID_START", "INVALID_DURABLE", "INVALID_SETTING", "INVALID_ACK",
      "INVALID_PAGE_TOKEN", "NOT_OPEN", "ALREADY_OPEN", "POLICY_INVALID", "INVALID_ENDPOINT",
      "PRIVATE_ENDPOINT", "INVALID_CONFIG", "MALFORMED_MESSAGE", "BODY_TOO_LARGE",
      "UNSUPPORTED_MEDIA_TYPE", "MALFORMED_JSON", "INVALID_PARAMETER", "METHOD_NOT_ALLOWED",
      "TOO_MANY_SUBSCRIPTIONS",
    ],
  ],
  [InvalidSubject, ["INVALID_SUBJECT"]],
  [InvalidEvent, ["INVALID_EVENT", "MISSING_ATTRIBUTE", "EVENT_TOO_LARGE", "EMPTY_EVENT"]],
  [PermissionDenied, ["PERMISSION_DENIED", "POLICY_DENIED", "NOT_PARTICIPANT"]],
  [
    Unauthenticated,
    ["UNAUTHENTICATED", "CREDENTIAL_EXPIRED", "CREDENTIAL_REVOKED", "TOKEN_INVALID"],
  ],
  [AlreadyExists, ["ALREADY_EXISTS", "DUPLICATE_CONTENT", "DUPLICATE_KEY"]],
  [RateLimited, ["RATE_LIMITED", "RESOURCE_EXHAUSTED"]],
  [NotFound, ["NOT_FOUND", "UNKNOWN_DURABLE", "UNKNOWN_VERSION", "UNKNOWN_CONVERSATION"]],
  [NoResponders, ["NO_RESPONDERS"]],
  [RequestTimeout, ["DEADLINE_EXCEEDED", "REQUEST_TIMEOUT"]],
  [SlowConsumer, ["SLOW_CONSUMER"]],
  [QuotaExceeded, ["QUOTA_EXCEEDED", "GROUP_FULL"]],
  [TLSError, ["TLS_HANDSHAKE_FAILED"]],
  [Unavailable, ["UNAVAILABLE", "STORE_UNAVAILABLE", "SHUTTING_DOWN", "LIMITER_UNAVAILABLE"]],
  [
    FailedPrecondition,
    [
      "FAILED_PRECONDITION", "POLICY_REQUIREMENT", "NOT_PENDING", "DURABLE_MISMATCH",
      "ALREADY_SUBSCRIBED", "INSECURE_LISTEN", "MISSING_EXTRA", "LISTEN_FAILED",
      "DATA_DIR_IN_USE", "DATA_DIR_UNUSABLE", "NO_POLICIES", "CONVERSATION_CLOSED",
      "IMMUTABLE_CONVERSATION", "STALE_EPOCH",
    ],
  ],
  [DecryptionError, ["DECRYPTION_FAILED"]],
  [KeyMismatch, ["KEY_MISMATCH"]],
  [UnsafeKeystore, ["UNSAFE_KEYSTORE"]],
];
const BY_REASON = new Map<string, ErrorClass>(
  BY_CLASS.flatMap(([cls, reasons]) => reasons.map((r): [string, ErrorClass] => [r, cls])),
);

const BY_CODE = new Map<number, ErrorClass>([
  [status.INVALID_ARGUMENT, InvalidArgument],
  [status.ALREADY_EXISTS, AlreadyExists],
  [status.PERMISSION_DENIED, PermissionDenied],
  [status.UNAUTHENTICATED, Unauthenticated],
  [status.RESOURCE_EXHAUSTED, RateLimited],
  [status.NOT_FOUND, NotFound],
  [status.DEADLINE_EXCEEDED, RequestTimeout],
  [status.UNAVAILABLE, Unavailable],
  [status.FAILED_PRECONDITION, FailedPrecondition],
]);

const HINTS = new Map<ErrorClass, string>([
  [Unauthenticated, "pass apiKey (or LOCKGATE_API_KEY) with a valid key or token"],
  [Unavailable, "check that the broker runs (start it with `lockgate serve`)"],
]);

/** Every reason name of the protos (for tests and tools). */
export const REASONS: readonly string[] = Object.keys(ErrorReason)
  .filter((k) => k.startsWith("ERROR_REASON_") && k !== "ERROR_REASON_UNSPECIFIED")
  .map((k) => k.slice("ERROR_REASON_".length));

/**
 * The error for a machine-readable `reason` (from a `PublishError` or a `RequestError`).
 *
 * @example errorForReason("NO_RESPONDERS", "nobody listens") instanceof NoResponders // true
 */
export function errorForReason(
  reason: string,
  message: string,
  options: { hint?: string; metadata?: Record<string, string> } = {},
): LockgateError {
  const cls = BY_REASON.get(reason) ?? LockgateError;
  const metadata = options.metadata ?? {};
  const hint = options.hint || metadata["hint"] || HINTS.get(cls) || "";
  return new cls(message || reason.toLowerCase().replace(/_/g, " "), { reason, hint, metadata });
}

/** The name of the class {@link errorForReason} picks for `reason`. */
export function errorClassName(reason: string): string {
  return (BY_REASON.get(reason) ?? LockgateError).name;
}

/** Translate a gRPC error into the client's tree, reading its `ErrorInfo` when present. */
export function fromServiceError(err: Partial<ServiceError>): LockgateError {
  if (err instanceof LockgateError) return err;
  const code = typeof err.code === "number" ? err.code : undefined;
  const details = err.details ?? err.message ?? "";
  const info = err.metadata ? errorInfo(err.metadata) : undefined;
  let out: LockgateError;
  if (info !== undefined) {
    out = errorForReason(info.reason, details, { metadata: info.metadata });
  } else if (code === status.RESOURCE_EXHAUSTED && details.includes("larger than max")) {
    // grpc's own refusal of an oversized message: no retry cures it (as in the Python client).
    out = new InvalidEvent("the request is larger than the broker's max_message_bytes allows", {
      reason: "EVENT_TOO_LARGE",
      hint: "send less in one call: smaller events or batches",
    });
  } else {
    const cls = (code !== undefined && BY_CODE.get(code)) || LockgateError;
    const name = code !== undefined ? status[code] : undefined;
    const known = name !== undefined && REASONS.includes(name) ? name : "UNKNOWN";
    out = new cls(details || `the broker answered ${name ?? "UNKNOWN"}`, {
      reason: known,
      hint: HINTS.get(cls) ?? "",
    });
  }
  out.code = code;
  return out;
}

/** The reason and metadata of the first `google.rpc.ErrorInfo` in `grpc-status-details-bin`. */
function errorInfo(metadata: Metadata): { reason: string; metadata: Record<string, string> } | undefined {
  const raw = metadata.get("grpc-status-details-bin")[0];
  if (!(raw instanceof Buffer)) return undefined;
  try {
    // google.rpc.Status: details = 3 (repeated Any: type_url = 1, value = 2)
    const status = new BinaryReader(raw);
    while (status.pos < status.len) {
      const [field, wire] = status.tag();
      if (field !== 3) {
        status.skip(wire);
        continue;
      }
      const any = new BinaryReader(status.bytes());
      let typeUrl = "";
      let value: Uint8Array | undefined;
      while (any.pos < any.len) {
        const [f, w] = any.tag();
        if (f === 1) typeUrl = any.string();
        else if (f === 2) value = any.bytes();
        else any.skip(w);
      }
      if (typeUrl.endsWith("/google.rpc.ErrorInfo") && value !== undefined) {
        return decodeErrorInfo(value);
      }
    }
  } catch {
    return undefined; // malformed details: fall back to the status code
  }
  return undefined;
}

function decodeErrorInfo(raw: Uint8Array): { reason: string; metadata: Record<string, string> } {
  // google.rpc.ErrorInfo: reason = 1, domain = 2, metadata = 3 (map<string, string>)
  const r = new BinaryReader(raw);
  let reason = "";
  const metadata: Record<string, string> = {};
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field === 1) reason = r.string();
    else if (field === 3) {
      const entry = new BinaryReader(r.bytes());
      let key = "";
      let value = "";
      while (entry.pos < entry.len) {
        const [f, w] = entry.tag();
        if (f === 1) key = entry.string();
        else if (f === 2) value = entry.string();
        else entry.skip(w);
      }
      metadata[key] = value;
    } else r.skip(wire);
  }
  return { reason, metadata };
}
