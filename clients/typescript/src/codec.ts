/**
 * Pure conversions between JavaScript values and CloudEvents, the same as the Python client's
 * `clients/_codec.py`, so both write the same bytes for the same event:
 *
 * | value                          | payload field  | datacontenttype            |
 * |--------------------------------|----------------|----------------------------|
 * | `Uint8Array` / `Buffer`        | `binary_data`  | `application/octet-stream` |
 * | `string`                       | `text_data`    | `text/plain`               |
 * | any other JSON value or object | `text_data`    | `application/json`         |
 * | `{ typeUrl, value }` ({@link ProtoData}) | `proto_data` | none              |
 *
 * Decoding reverses it: JSON content types give parsed values, other text a string, binary a
 * `Buffer`, `proto_data` a {@link ProtoData}; with a schema (zod or anything with `parse`) the
 * value is validated.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { CloudEvent, CloudEvent_CloudEventAttributeValue as AttrValue } from "./gen/broker/v1/cloudevent";
import { StartPolicy, StartPosition } from "./gen/broker/v1/broker";
import { Duration } from "./gen/google/protobuf/duration";
import { InvalidArgument } from "./errors";

export const SPEC_VERSION = "1.0";
export const OCTET_STREAM = "application/octet-stream";
export const TEXT_PLAIN = "text/plain";
export const APPLICATION_JSON = "application/json";
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/** The types of CloudEvents extension attribute values (integers are 32-bit). */
export type AttributeValue = string | number | boolean | Uint8Array | Date;

/** A protobuf message payload: its type URL and its encoded bytes (`google.protobuf.Any`). */
export interface ProtoData {
  typeUrl: string;
  value: Uint8Array;
}

/** Anything that validates a decoded value: a zod schema, or any object with `parse`. */
export interface Schema<T> {
  parse(value: unknown): T;
}

/** What one event carries besides its data. */
export interface EventOptions {
  /** The CloudEvents `type`; default `lockgate.event`. */
  type?: string;
  /** The CloudEvents `source`; default the client's (`lockgate://client/<host>/<pid>`). */
  source?: string;
  /** The CloudEvents `id`; default a fresh one. Re-sent events keep theirs. */
  id?: string;
  /** Extension attributes (`traceparent`, `tenant`...). */
  attributes?: Record<string, AttributeValue>;
  /** Overrides the content type the data's kind implies. */
  datacontenttype?: string;
}

/** Where a subscription starts: new events, all retained, since a time, or after an id. */
export type Start = "new" | "all" | Date | { after: string | bigint } | { agoSeconds: number };

/** The default `source` attribute: `lockgate://client/<hostname>/<pid>`, as in Python. */
export function defaultSource(): string {
  return `lockgate://client/${hostname()}/${process.pid}`;
}

/** A fresh random event id (32 hex digits). */
export function newEventId(): string {
  return randomBytes(16).toString("hex");
}

export function isProtoData(data: unknown): data is ProtoData {
  return (
    typeof data === "object" &&
    data !== null &&
    typeof (data as ProtoData).typeUrl === "string" &&
    (data as ProtoData).value instanceof Uint8Array
  );
}

/** The payload and its content type: a string goes to `text_data`, bytes to `binary_data`. */
export function encodePayload(data: unknown): { payload: string | Buffer; contentType: string } {
  if (typeof data === "string") return { payload: data, contentType: TEXT_PLAIN };
  if (data instanceof Uint8Array) {
    const payload = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    return { payload, contentType: OCTET_STREAM };
  }
  const text = JSON.stringify(data, jsonReplacer);
  if (text === undefined) {
    throw new InvalidArgument(`cannot encode ${typeof data} as event data`, {
      reason: "INVALID_EVENT",
      hint: "publish a string, bytes, or a JSON value",
    });
  }
  return { payload: text, contentType: APPLICATION_JSON };
}

// Bytes inside JSON are base64, as the Python client writes them; bigints are numbers.
function jsonReplacer(this: unknown, _key: string, value: unknown): unknown {
  if (typeof value === "bigint") return JSON.rawJSON ? JSON.rawJSON(value.toString()) : Number(value);
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  if (value instanceof Map) return Object.fromEntries(value);
  if (value instanceof Set) return [...value];
  return value;
}

declare global {
  interface JSON {
    rawJSON?: (text: string) => unknown;
  }
}

/** The wire form of one attribute value (`ce_boolean`, `ce_integer`, ...). */
export function toAttributeValue(key: string, value: AttributeValue): AttrValue {
  if (typeof value === "boolean") return { ceBoolean: value };
  if (typeof value === "number") {
    if (!Number.isInteger(value) || value < INT32_MIN || value > INT32_MAX) {
      throw new InvalidArgument(`attribute ${key}: ${value} is not an integer that fits in 32 bits`, {
        reason: "INVALID_EVENT",
      });
    }
    return { ceInteger: value };
  }
  if (typeof value === "string") return { ceString: value };
  if (value instanceof Uint8Array) return { ceBytes: Buffer.from(value) };
  if (value instanceof Date) return { ceTimestamp: value };
  throw new InvalidArgument(
    `attribute ${key}: values are string, number, boolean, bytes or Date, not ${typeof value}`,
    { reason: "INVALID_EVENT" },
  );
}

/** Build the CloudEvent carrying `data`, as the Python client's `to_cloudevent` does. */
export function toCloudEvent(data: unknown, options: EventOptions & { source: string; id: string }): CloudEvent {
  const event: CloudEvent = {
    id: options.id,
    source: options.source,
    specVersion: SPEC_VERSION,
    type: options.type ?? "lockgate.event",
    attributes: {},
    binaryData: undefined,
    textData: undefined,
    protoData: undefined,
  };
  if (isProtoData(data)) {
    event.protoData = { typeUrl: data.typeUrl, value: Buffer.from(data.value) };
    if (options.datacontenttype) event.attributes["datacontenttype"] = { ceString: options.datacontenttype };
  } else {
    const { payload, contentType } = encodePayload(data);
    if (typeof payload === "string") event.textData = payload;
    else event.binaryData = payload;
    // datacontenttype first, then the caller's attributes in their order: the Python client's
    // layout, so the two write the same bytes.
    event.attributes["datacontenttype"] = { ceString: options.datacontenttype || contentType };
  }
  for (const [key, value] of Object.entries(options.attributes ?? {})) {
    event.attributes[key] = toAttributeValue(key, value);
  }
  return event;
}

/** The encoded CloudEvent (protobuf bytes). */
export function encodeCloudEvent(event: CloudEvent): Buffer {
  const bytes = CloudEvent.encode(event).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The event's `datacontenttype`, or `""`. */
export function contentType(event: CloudEvent): string {
  return event.attributes["datacontenttype"]?.ceString ?? "";
}

const jsonTypes = new Map<string, boolean>();

function isJson(ctype: string): boolean {
  let known = jsonTypes.get(ctype);
  if (known === undefined) {
    const base = ctype.split(";", 1)[0]!.trim().toLowerCase();
    known = base === APPLICATION_JSON || base.endsWith("+json") || base === "text/json";
    if (jsonTypes.size < 1024) jsonTypes.set(ctype, known);
  }
  return known;
}

/** Decode the payload: JSON to values, other text to a string, binary to a Buffer. */
export function decodeData(event: CloudEvent): unknown;
export function decodeData<T>(event: CloudEvent, schema: Schema<T>): T;
export function decodeData<T>(event: CloudEvent, schema?: Schema<T>): unknown {
  let value: unknown;
  if (event.textData !== undefined || event.binaryData !== undefined) {
    const raw = event.textData ?? event.binaryData!;
    value = isJson(contentType(event)) || schema !== undefined ? parseJson(raw) : raw;
  } else if (event.protoData !== undefined) {
    value = { typeUrl: event.protoData.typeUrl, value: event.protoData.value } satisfies ProtoData;
  } else {
    value = null;
  }
  return schema === undefined ? value : schema.parse(value);
}

function parseJson(raw: string | Buffer): unknown {
  const text = typeof raw === "string" ? raw : raw.toString("utf8");
  return text === "" ? null : JSON.parse(text);
}

/** The event's optional and extension attributes as JavaScript values. */
export function decodeAttributes(event: CloudEvent): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const [key, v] of Object.entries(event.attributes)) {
    const value = v.ceBoolean ?? v.ceInteger ?? v.ceString ?? v.ceBytes ?? v.ceUri ?? v.ceUriRef ?? v.ceTimestamp;
    if (value !== undefined) out[key] = value;
  }
  return out;
}

/** A protobuf Duration from seconds. */
export function toDuration(seconds: number): Duration {
  const whole = Math.floor(seconds);
  return { seconds: String(whole), nanos: Math.round((seconds - whole) * 1e9) };
}

/** The wire form of a subscription's start. */
export function toStartPosition(start: Start | undefined): StartPosition | undefined {
  if (start === undefined) return undefined;
  const base = { policy: StartPolicy.START_POLICY_UNSPECIFIED, sinceTime: undefined, afterId: "0" };
  if (start === "new") return { ...base, policy: StartPolicy.START_POLICY_NEW };
  if (start === "all") return { ...base, policy: StartPolicy.START_POLICY_ALL };
  if (start instanceof Date) return { ...base, policy: StartPolicy.START_POLICY_SINCE_TIME, sinceTime: start };
  if (typeof start === "object" && "agoSeconds" in start) {
    const since = new Date(Date.now() - start.agoSeconds * 1000);
    return { ...base, policy: StartPolicy.START_POLICY_SINCE_TIME, sinceTime: since };
  }
  if (typeof start === "object" && "after" in start && /^\d+$/.test(String(start.after))) {
    return { ...base, policy: StartPolicy.START_POLICY_AFTER_ID, afterId: String(start.after) };
  }
  throw new InvalidArgument(`start must be "new", "all", a Date, {agoSeconds} or {after: id}, not ${String(start)}`, {
    reason: "INVALID_START",
  });
}
