// The pure parts: payload kinds, attributes, start positions and errors, with no server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Metadata, status } from "@grpc/grpc-js";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import {
  CloudEvent, InvalidArgument, InvalidSubject, LockgateError, NoResponders, QuotaExceeded, RateLimited,
  REASONS, Unauthenticated, Unavailable, decodeAttributes, decodeData, encodeCloudEvent, encodePayload,
  errorClassName, errorForReason, fromServiceError, toCloudEvent, z,
} from "../dist/index.js";

const base = { type: "t", source: "agent://a", id: "1" };

test("each kind of data picks its payload field and content type", () => {
  assert.deepEqual(encodePayload("hi"), { payload: "hi", contentType: "text/plain" });
  assert.deepEqual(encodePayload({ a: [1, "x"] }), { payload: '{"a":[1,"x"]}', contentType: "application/json" });
  const bin = encodePayload(new Uint8Array([1, 2]));
  assert.equal(bin.contentType, "application/octet-stream");
  assert.deepEqual([...bin.payload], [1, 2]);
  assert.equal(encodePayload(7).payload, "7");
});

test("data that is no JSON value is refused with a sentence", () => {
  assert.throws(() => encodePayload(undefined), (e) => e instanceof InvalidArgument && e.reason === "INVALID_EVENT");
});

test("an event round-trips through its bytes, with every attribute type", () => {
  const when = new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 123));
  const attributes = { s: "x", n: -7, b: false, raw: new Uint8Array([9]), when };
  const ev = CloudEvent.decode(encodeCloudEvent(toCloudEvent({ k: 1 }, { ...base, attributes })));
  assert.equal(ev.specVersion, "1.0");
  assert.deepEqual(decodeData(ev), { k: 1 });
  const attrs = decodeAttributes(ev);
  assert.equal(attrs.datacontenttype, "application/json");
  assert.equal(attrs.s, "x");
  assert.equal(attrs.n, -7);
  assert.equal(attrs.b, false);
  assert.deepEqual([...attrs.raw], [9]);
  assert.equal(attrs.when.getTime(), when.getTime());
});

test("an integer attribute beyond 32 bits is refused", () => {
  assert.throws(() => toCloudEvent(1, { ...base, attributes: { big: 2 ** 31 } }), InvalidArgument);
  assert.throws(() => toCloudEvent(1, { ...base, attributes: { half: 1.5 } }), InvalidArgument);
});

test("protobuf data travels as proto_data without a content type", () => {
  const ev = CloudEvent.decode(encodeCloudEvent(toCloudEvent({ typeUrl: "type.googleapis.com/x.Y", value: new Uint8Array([8, 1]) }, base)));
  assert.equal(ev.protoData.typeUrl, "type.googleapis.com/x.Y");
  assert.equal(ev.attributes.datacontenttype, undefined);
  assert.deepEqual([...decodeData(ev).value], [8, 1]);
});

test("a schema validates the data, and refuses data that does not fit", () => {
  const ev = toCloudEvent({ level: "warn" }, base);
  assert.deepEqual(decodeData(ev, z.object({ level: z.string() })), { level: "warn" });
  assert.throws(() => decodeData(ev, z.object({ level: z.number() })));
});

test("every reason of the protos maps to a class, unknown ones to LockgateError", () => {
  assert.ok(REASONS.includes("POLICY_DENIED") && !REASONS.includes("UNSPECIFIED"));
  assert.ok(errorForReason("NO_RESPONDERS", "nobody") instanceof NoResponders);
  assert.equal(errorClassName("INVALID_SUBJECT"), "InvalidSubject");
  const unknown = errorForReason("FROM_THE_FUTURE", "new");
  assert.equal(unknown.constructor, LockgateError);
  assert.equal(unknown.reason, "FROM_THE_FUTURE");
});

function statusDetails(reason, metadata = {}) {
  const info = new BinaryWriter().uint32(10).string(reason).uint32(18).string("lockgate.dev");
  for (const [k, v] of Object.entries(metadata)) info.uint32(26).fork().uint32(10).string(k).uint32(18).string(v).join();
  const any = new BinaryWriter().uint32(10).string("type.googleapis.com/google.rpc.ErrorInfo").uint32(18).bytes(info.finish());
  return Buffer.from(new BinaryWriter().uint32(8).int32(3).uint32(26).bytes(any.finish()).finish());
}

test("a gRPC status with ErrorInfo gives the reason's class, its metadata and the code", () => {
  const md = new Metadata();
  md.set("grpc-status-details-bin", statusDetails("RATE_LIMITED", { retry_after: "1.5s" }));
  const err = fromServiceError({ code: status.RESOURCE_EXHAUSTED, details: "slow down", metadata: md });
  assert.ok(err instanceof RateLimited);
  assert.equal(err.retryAfter, 1.5);
  assert.equal(err.code, status.RESOURCE_EXHAUSTED);
  assert.equal(err.message, "slow down");
  const q = new Metadata();
  q.set("grpc-status-details-bin", statusDetails("QUOTA_EXCEEDED", { quota: "max_durables", limit: "3" }));
  const quota = fromServiceError({ code: status.RESOURCE_EXHAUSTED, details: "too many", metadata: q });
  assert.ok(quota instanceof QuotaExceeded);
  assert.deepEqual([quota.quota, quota.limit], ["max_durables", 3]);
});

test("without ErrorInfo the status code picks the class, with a hint", () => {
  const err = fromServiceError({ code: status.UNAVAILABLE, details: "", metadata: new Metadata() });
  assert.ok(err instanceof Unavailable);
  assert.equal(err.reason, "UNAVAILABLE");
  assert.match(err.hint, /lockgate serve/);
  assert.match(String(err), /^Unavailable: the broker answered UNAVAILABLE \(hint: /);
  const bad = fromServiceError({ code: status.UNAUTHENTICATED, details: "who?", metadata: new Metadata() });
  assert.ok(bad instanceof Unauthenticated);
  const md = new Metadata();
  md.set("grpc-status-details-bin", Buffer.from([0xff, 0xff]));
  assert.ok(fromServiceError({ code: status.INVALID_ARGUMENT, details: "x", metadata: md }) instanceof InvalidArgument);
  assert.ok(!(fromServiceError({ code: status.INVALID_ARGUMENT, details: "x", metadata: md }) instanceof InvalidSubject));
});
