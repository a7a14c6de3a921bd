// The hand-rolled hot paths write and read what the generated code does, byte for byte.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { CloudEvent, encodeCloudEvent, toCloudEvent } from "../dist/index.js";

const require = createRequire(import.meta.url);
const { EventEncoder, encodePublishRequest, decodeSubscribeResponse } = require("../dist/wire.js");
const { PublishRequest, SubscribeResponse } = require("../dist/gen/broker/v1/broker.js");

const options = { source: "agent://a", id: "e-1", type: "com.example.t" };

test("the cached-head encoder writes the generated code's bytes for every plain kind", () => {
  const enc = new EventEncoder();
  const long = "x".repeat(300); // a two-byte length
  for (const data of ["text", long, { k: ["é", 1, null] }, [1, 2], 7, true, null, Buffer.from([0, 1, 255]), new Uint8Array(200)]) {
    for (const opts of [options, { ...options, datacontenttype: "application/cloudevents+json" }]) {
      assert.deepEqual(enc.encode(data, opts), encodeCloudEvent(toCloudEvent(data, opts)), JSON.stringify(data));
      assert.deepEqual(enc.encode(data, opts), enc.encode(data, opts)); // from the cache
    }
  }
  const attrs = { ...options, attributes: { tenant: "acme", n: 3 } };
  assert.deepEqual(CloudEvent.decode(enc.encode("x", attrs)), CloudEvent.decode(encodeCloudEvent(toCloudEvent("x", attrs))));
  const proto = { typeUrl: "type.googleapis.com/x.Y", value: new Uint8Array([8, 1]) };
  assert.deepEqual(enc.encode(proto, options), encodeCloudEvent(toCloudEvent(proto, options)));
});

test("a publish frame is a PublishRequest", () => {
  const events = [encodeCloudEvent(toCloudEvent("a", options)), encodeCloudEvent(toCloudEvent(Buffer.alloc(200, 7), options))];
  for (const fresh of [false, true]) {
    const frame = encodePublishRequest("orders.é", events, 300, fresh);
    const generated = PublishRequest.encode({ subject: "orders.é", events: events.map((e) => CloudEvent.decode(e)), batchId: "300", fresh }).finish();
    assert.deepEqual(new Uint8Array(frame), generated, `fresh=${fresh}`);
  }
});

test("a delivery frame splits into deliveries whose events decode on demand", () => {
  const event = toCloudEvent({ k: 1 }, options);
  const raw = SubscribeResponse.encode({
    subscribed: { name: "d1", lastId: "18446744073709551615" },
    deliveries: [
      { id: "386148354192572416", subject: "a.b", event, attempt: 2, replyTo: "_reply.x" },
      { id: "1", subject: "c", event, attempt: 1, replyTo: "" },
    ],
  }).finish();
  const got = decodeSubscribeResponse(raw);
  assert.deepEqual(got.subscribed, { name: "d1", lastId: "18446744073709551615" });
  assert.deepEqual(got.deliveries.map((d) => [d.id, d.subject, d.attempt, d.replyTo]), [
    ["386148354192572416", "a.b", 2, "_reply.x"],
    ["1", "c", 1, ""],
  ]);
  assert.deepEqual(Buffer.from(got.deliveries[0].event), encodeCloudEvent(event));
});
