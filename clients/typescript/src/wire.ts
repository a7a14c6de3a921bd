/**
 * Hand-rolled protobuf for the hot paths, as the Python client's `clients/_wire.py`: an event's
 * shared attributes (`source`, `spec_version`, `type`, `datacontenttype`) are encoded once and
 * cached, a publish frame is laid out in one allocation, and a delivery frame is split into its
 * deliveries without decoding their CloudEvents (a message decodes its event when asked). The
 * output is ordinary protobuf, byte for byte what the generated code writes (the tests check).
 *
 * Field numbers (see `protos/broker/v1`):
 *   CloudEvent:        id=1 source=2 spec_version=3 type=4 attributes=5 binary_data=6 text_data=7
 *   PublishRequest:    subject=1 events=2 batch_id=3
 *   SubscribeResponse: subscribed=1 deliveries=2;  Subscribed: name=1 last_id=2
 *   Delivery:          id=1 subject=2 event=3 attempt=4 reply_to=5
 */
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { EventOptions, SPEC_VERSION, encodeCloudEvent, encodePayload, isProtoData, toCloudEvent } from "./codec";

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size += 1;
  }
  return size;
}

function writeVarint(buf: Buffer, pos: number, n: number): number {
  while (n >= 0x80) {
    buf[pos++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[pos++] = n;
  return pos;
}

/** A length-delimited field: its key byte, the length, the bytes. */
function field(key: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(1 + varintSize(body.length) + body.length);
  const pos = writeVarint(out, (out[0] = key, 1), body.length);
  body.copy(out, pos);
  return out;
}

/** Encodes events to CloudEvent bytes, caching the attributes every event of a client shares. */
export class EventEncoder {
  private readonly heads = new Map<string, Buffer>();

  private head(source: string, type: string, contentType: string): Buffer {
    const key = `${source}\n${type}\n${contentType}`;
    let head = this.heads.get(key);
    if (head === undefined) {
      const value = field(0x1a, Buffer.from(contentType)); // CloudEventAttributeValue.ce_string
      const entry = Buffer.concat([field(0x0a, Buffer.from("datacontenttype")), field(0x12, value)]);
      head = Buffer.concat([
        field(0x12, Buffer.from(source)),
        field(0x1a, Buffer.from(SPEC_VERSION)),
        field(0x22, Buffer.from(type)),
        field(0x2a, entry),
      ]);
      if (this.heads.size > 1024) this.heads.clear(); // callers that vary type per event
      this.heads.set(key, head);
    }
    return head;
  }

  /** The wire bytes of the CloudEvent carrying `data` (see codec.ts for the kinds). */
  encode(data: unknown, options: EventOptions & { source: string; id: string }): Buffer {
    const attrs = options.attributes;
    if (isProtoData(data) || (attrs !== undefined && Object.keys(attrs).length > 0)) {
      return encodeCloudEvent(toCloudEvent(data, options));
    }
    const { payload, contentType } = encodePayload(data);
    const body = typeof payload === "string" ? Buffer.from(payload) : payload;
    const head = this.head(options.source, options.type ?? "lockgate.event", options.datacontenttype || contentType);
    const idLen = Buffer.byteLength(options.id);
    const size = 1 + varintSize(idLen) + idLen + head.length + 1 + varintSize(body.length) + body.length;
    const out = Buffer.allocUnsafe(size);
    out[0] = 0x0a;
    let pos = writeVarint(out, 1, idLen);
    pos += out.write(options.id, pos);
    pos += head.copy(out, pos);
    out[pos++] = typeof payload === "string" ? 0x3a : 0x32; // text_data : binary_data
    pos = writeVarint(out, pos, body.length);
    body.copy(out, pos);
    return out;
  }
}

/** The wire bytes of a `PublishRequest` from its subject and encoded events. */
export function encodePublishRequest(subject: string, events: Buffer[], batchId: number): Buffer {
  const subjectLen = Buffer.byteLength(subject);
  let size = 1 + varintSize(subjectLen) + subjectLen + 1 + varintSize(batchId);
  for (const raw of events) size += 1 + varintSize(raw.length) + raw.length;
  const out = Buffer.allocUnsafe(size);
  out[0] = 0x0a;
  let pos = writeVarint(out, 1, subjectLen);
  pos += out.write(subject, pos);
  for (const raw of events) {
    out[pos++] = 0x12;
    pos = writeVarint(out, pos, raw.length);
    pos += raw.copy(out, pos);
  }
  out[pos++] = 0x18;
  writeVarint(out, pos, batchId);
  return out;
}

/** One delivery, its CloudEvent still encoded. */
export interface RawDelivery {
  id: string;
  subject: string;
  event: Uint8Array;
  attempt: number;
  replyTo: string;
}

/** A `SubscribeResponse`: the confirmation (first message only) and the deliveries. */
export interface RawSubscribeResponse {
  subscribed: { name: string; lastId: string } | undefined;
  deliveries: RawDelivery[];
}

/** Split a `SubscribeResponse` into its deliveries without decoding their CloudEvents. */
export function decodeSubscribeResponse(buf: Uint8Array): RawSubscribeResponse {
  const r = new BinaryReader(buf);
  const out: RawSubscribeResponse = { subscribed: undefined, deliveries: [] };
  while (r.pos < r.len) {
    const [no, wire] = r.tag();
    if (no === 2 && wire === 2) {
      const end = r.uint32() + r.pos;
      const d: RawDelivery = { id: "0", subject: "", event: new Uint8Array(0), attempt: 0, replyTo: "" };
      while (r.pos < end) {
        const [f, w] = r.tag();
        if (f === 1 && w === 0) d.id = r.uint64().toString();
        else if (f === 2 && w === 2) d.subject = r.string();
        else if (f === 3 && w === 2) d.event = r.bytes();
        else if (f === 4 && w === 0) d.attempt = r.uint32();
        else if (f === 5 && w === 2) d.replyTo = r.string();
        else r.skip(w);
      }
      out.deliveries.push(d);
    } else if (no === 1 && wire === 2) {
      const s = new BinaryReader(r.bytes());
      const sub = { name: "", lastId: "0" };
      while (s.pos < s.len) {
        const [f, w] = s.tag();
        if (f === 1 && w === 2) sub.name = s.string();
        else if (f === 2 && w === 0) sub.lastId = s.uint64().toString();
        else s.skip(w);
      }
      out.subscribed = sub;
    } else {
      r.skip(wire);
    }
  }
  return out;
}
