// PublishRequest.fresh as the client writes it: on the first write of a frame whose every id
// the client generated, never on a resend, never on a frame with a caller's id. A tiny
// grpc-js server stands in for the broker so the test reads the very frames the client
// writes and can break the stream between a first send and its resend; the real broker's
// answers to flagged frames are covered by client.test.mjs (every publish there is fresh).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import * as grpc from "@grpc/grpc-js";
import { Client } from "../dist/index.js";

const require = createRequire(import.meta.url);
const { BrokerServiceService, PublishRequest } = require("../dist/gen/broker/v1/broker.js");

/** Records every frame written to it (with the number of the stream it came on); the first
 * stream breaks with UNAVAILABLE after its first frame, later ones answer every frame. */
class FrameRecorder {
  frames = [];
  streams = 0;
  server = new grpc.Server();

  async start() {
    this.server.addService({ publish: BrokerServiceService.publish }, { publish: (call) => this.publish(call) });
    const port = await new Promise((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.target = `127.0.0.1:${port}`;
    return this;
  }

  publish(call) {
    const stream = ++this.streams;
    call.on("data", (req) => {
      this.frames.push({ stream, subject: req.subject, fresh: req.fresh, ids: req.events.map((e) => e.id) });
      if (stream === 1) {
        call.emit("error", { code: grpc.status.UNAVAILABLE, details: "broken on purpose" });
        return;
      }
      const ids = req.events.map((_, i) => String(1000 * this.frames.length + i));
      call.write({ batchId: req.batchId, ids, duplicateIndexes: [], errors: [] });
    });
    call.on("end", () => call.end());
  }

  of(subject) {
    return this.frames.filter((f) => f.subject === subject).map((f) => [f.stream, f.fresh, f.ids.length]);
  }
}

let server;
let client;
before(async () => {
  server = await new FrameRecorder().start();
  client = await Client.connect(server.target, { connectTimeout: 10, publishTimeout: 30 });
});
after(async () => {
  await client?.close();
  server?.server.forceShutdown();
});

test("a fresh frame carries the flag on its first write, its resend after reconnect does not", async () => {
  const id = await client.publish("fresh.first", { n: 1 });
  assert.match(id, /^\d+$/);
  // Written on the stream the server broke, then again on the next one with the same id.
  assert.deepEqual(server.of("fresh.first"), [
    [1, true, 1],
    [2, false, 1],
  ]);
  const [first, resend] = server.frames.filter((f) => f.subject === "fresh.first");
  assert.deepEqual(resend.ids, first.ids);
});

test("frames with a caller's id are not fresh; publishBatch and id-less publishes are", async () => {
  await client.publish("fresh.user", "x", { id: "my-own-id" });
  // One event loop turn, one frame: a single caller id makes the whole frame not fresh.
  await Promise.all([client.publish("fresh.mixed", 1), client.publish("fresh.mixed", 2, { id: "mine" }), client.publish("fresh.mixed", 3)]);
  await Promise.all([client.publish("fresh.many", 1), client.publish("fresh.many", 2)]);
  const results = await client.publishBatch("fresh.batch", ["a", "b", "c"]);
  assert.equal(results.filter((r) => r.error === undefined).length, 3);
  assert.deepEqual(server.of("fresh.user"), [[2, false, 1]]);
  assert.deepEqual(server.of("fresh.mixed"), [[2, false, 3]]);
  assert.deepEqual(server.of("fresh.many"), [[2, true, 2]]);
  assert.deepEqual(server.of("fresh.batch"), [[2, true, 3]]);
});
