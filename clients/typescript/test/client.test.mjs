// The client against a real `lockgate serve` (started on an ephemeral port, see broker.mjs).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  Client, FailedPrecondition, InvalidSubject, LockgateError, NoResponders, NotFound, RequestTimeout, Unauthenticated, Unavailable, z,
} from "../dist/index.js";
import { Broker, eventually, missing } from "./broker.mjs";

const skip = missing();
const fresh = (name) => `${name}.${randomBytes(4).toString("hex")}`;

describe("the client against a real broker", { skip }, () => {
  let broker;
  let c;
  before(async () => {
    broker = await new Broker().start();
    c = await Client.connect(broker.target);
  });
  after(async () => {
    await c?.close();
    await broker?.stop();
  });

  test("concurrent publishes share frames and get ids in order", async () => {
    const subject = fresh("coalesce");
    const before = c.framesSent;
    const ids = await Promise.all(Array.from({ length: 200 }, (_, i) => c.publish(subject, { i })));
    assert.equal(new Set(ids).size, 200);
    assert.ok(c.framesSent - before < 10, `${c.framesSent - before} frames for 200 events`);
    const sorted = [...ids].sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));
    assert.deepEqual(ids, sorted);
  });

  test("a durable subscription gets every kind of data, validated, and redelivers a nack", async () => {
    const subject = fresh("kinds");
    await c.publish(subject, { level: "warn", text: "disk 91% full" }, { type: "alert" });
    const results = await c.publishBatch(subject, ["plain", new Uint8Array([0, 255])]);
    assert.deepEqual(results.map((r) => [r.duplicate, r.error]), [[false, undefined], [false, undefined]]);
    const sub = await c.subscribe(subject, { durable: fresh("d").replace(".", "-"), start: "all", ackWaitSeconds: 30 });
    const seen = [];
    for await (const msg of sub) {
      seen.push(msg);
      if (seen.length === 1) {
        assert.equal(msg.type, "alert");
        assert.deepEqual(msg.dataAs(z.object({ level: z.string(), text: z.string() })), { level: "warn", text: "disk 91% full" });
        await msg.nack();
        continue;
      }
      await msg.ack();
      if (seen.length === 4) break;
    }
    const first = seen.find((m) => m.id === seen[0].id && m.attempt === 2);
    assert.ok(first, "the nacked message came again");
    assert.deepEqual(seen.map((m) => m.data).slice(1).map((d) => (Buffer.isBuffer(d) ? [...d] : d)).sort(), [
      "plain", [0, 255], { level: "warn", text: "disk 91% full" },
    ].sort());
    assert.equal(sub.pending(), 0);
  });

  test("a durable resumes where it stopped: acked events do not come again", async () => {
    const subject = fresh("resume");
    const durable = fresh("r").replace(".", "-");
    await c.publishBatch(subject, [1, 2]);
    let sub = await c.subscribe(subject, { durable, start: "all" });
    for await (const msg of sub) {
      await msg.ack();
      if (msg.data === 2) break;
    }
    await c.publish(subject, 3);
    sub = await c.subscribe(subject, { durable });
    const next = await sub.next();
    assert.equal(next.value.data, 3);
    await sub.close();
  });

  test("a schema on the subscription types msg.data and refuses what does not fit", async () => {
    const subject = fresh("typed");
    const sub = await c.subscribe(subject, { schema: z.object({ n: z.number() }) });
    await c.publish(subject, { n: 1 });
    await c.publish(subject, { n: "one" });
    const a = await sub.next();
    assert.equal(a.value.data.n, 1);
    const b = await sub.next();
    assert.throws(() => b.value.data, z.ZodError);
    await sub.close();
  });

  test("request and respond; nobody listening is NoResponders, nobody answering RequestTimeout", async () => {
    const subject = fresh("math");
    const sub = await c.subscribe(subject);
    const serving = (async () => {
      for await (const m of sub) {
        if (m.data[0] === "slow") continue;
        await m.respond(m.data[0] + m.data[1]);
      }
    })();
    const reply = await c.request(subject, [40, 2], { timeout: 5 });
    assert.equal(reply.data, 42);
    assert.equal(reply.type, "lockgate.request.reply");
    await assert.rejects(c.request(fresh("nobody"), 1), (e) => e instanceof NoResponders && e.reason === "NO_RESPONDERS");
    await assert.rejects(c.request(subject, ["slow"], { timeout: 0.3 }), RequestTimeout);
    await sub.close();
    await serving;
  });

  test("history: getEvent and queryEvents, NotFound for an unknown id", async () => {
    const subject = fresh("hist");
    const ids = await c.publishBatch(subject, ["a", "b", "c"]);
    const ev = await c.getEvent(ids[1].id);
    assert.equal(ev.data, "b");
    assert.equal(ev.subject, subject);
    assert.ok(ev.storedTime instanceof Date);
    const all = [];
    for await (const e of c.queryEvents(subject, { pageSize: 2, since: new Date(Date.now() - 60_000) })) all.push(e.data);
    assert.deepEqual(all, ["a", "b", "c"]);
    const limited = [];
    for await (const e of c.queryEvents(subject, { limit: 1 })) limited.push(e.id);
    assert.deepEqual(limited, [ids[0].id]);
    await assert.rejects(c.getEvent("1"), NotFound);
  });

  test("polling: fetch creates the durable, acks settle, a nack comes back, a stale ack is NOT_PENDING", async () => {
    const subject = fresh("poll");
    const durable = fresh("p").replace(".", "-");
    assert.deepEqual(await c.fetch(durable, { pattern: subject, start: "all" }), []);
    await c.publishBatch(subject, ["a", "b"]);
    const got = await c.fetch(durable, { waitSeconds: 5 });
    assert.deepEqual(got.map((m) => [m.data, m.attempt]), [["a", 1], ["b", 1]]);
    await got[0].ack();
    await got[1].nack();
    const again = await eventually(async () => {
      const msgs = await c.fetch(durable, { waitSeconds: 1 });
      return msgs.length > 0 && msgs;
    });
    assert.deepEqual(again.map((m) => [m.data, m.attempt]), [["b", 2]]);
    await c.acknowledge(durable, { ack: [again[0].id] });
    await assert.rejects(c.acknowledge(durable, { ack: [got[0].id] }), (e) => e instanceof FailedPrecondition && e.reason === "NOT_PENDING");
  });

  test("a subscriber that does not iterate stops reading at maxBuffered, then gets every event", async () => {
    const subject = fresh("slow");
    const slow = await c.subscribe(subject, { maxBuffered: 50 });
    const fast = await c.subscribe(subject);
    const ids = [];
    for (let i = 0; i < 6; i++) {
      const results = await c.publishBatch(subject, Array.from({ length: 50 }, (_, j) => ({ i, j })));
      ids.push(...results.map((r) => r.id));
    }
    // The broker sends to both at once: once the iterating one has every event, the other
    // would have them buffered too if it read on.
    const got = [];
    for await (const msg of fast) {
      got.push(msg.id);
      if (got.length === ids.length) break;
    }
    assert.ok(slow.pending() >= 50 && slow.pending() < 100, `buffered ${slow.pending()}`);
    const seen = [];
    for await (const msg of slow) {
      seen.push(msg.id);
      if (seen.length === ids.length) break;
    }
    assert.deepEqual(seen, ids);
  });

  test("a bad subject is refused with its reason and changes nothing", async () => {
    await assert.rejects(c.publish("bad..subject", 1), (e) => e instanceof InvalidSubject && e.reason === "INVALID_SUBJECT" && /empty/.test(e.message));
    await assert.rejects(c.subscribe("also..bad"), InvalidSubject);
  });
});

describe("credentials and connection errors", { skip }, () => {
  let broker;
  before(async () => {
    broker = await new Broker().start();
  });
  after(async () => broker?.stop());

  test("with keys, a client needs one: a valid key works, an unknown one is Unauthenticated", async () => {
    const key = broker.createKey();
    // The broker leaves the dev mode within a second of the key's creation.
    const bad = await Client.connect(broker.target, { apiKey: "lg_not_a_key" });
    try {
      const err = await eventually(async () => {
        try {
          await bad.publish(fresh("auth"), 1);
          return undefined;
        } catch (e) {
          return e;
        }
      });
      assert.ok(err instanceof Unauthenticated, String(err));
      assert.equal(err.reason, "UNAUTHENTICATED");
    } finally {
      await bad.close();
    }
    const good = await Client.connect(broker.target, { apiKey: key });
    assert.match(await good.publish(fresh("auth"), 1), /^\d+$/);
    await good.close();
  });

  test("a bearer token from `lockgate tokens issue` works as the credential", async () => {
    const c = await Client.connect(broker.target, { apiKey: broker.issueToken("default", "tsbot") });
    try {
      const id = await c.publish(fresh("token"), { via: "token" });
      assert.deepEqual((await c.getEvent(id)).data, { via: "token" });
    } finally {
      await c.close();
    }
  });

  test("connecting to nothing is Unavailable within connectTimeout", async () => {
    await assert.rejects(Client.connect("127.0.0.1:1", { connectTimeout: 0.5 }), (e) => e instanceof Unavailable && /lockgate serve/.test(e.hint));
  });

  test("a closed client refuses calls with CLOSED", async () => {
    const c = await Client.connect(broker.target, { apiKey: broker.createKey() });
    await c.close();
    await assert.rejects(c.publish("x", 1), (e) => e instanceof LockgateError && e.reason === "CLOSED");
  });
});

describe("reconnect with backoff and resend", { skip }, () => {
  test("publishes during a broker restart are re-sent and stored once; a durable resumes", async () => {
    const broker = await new Broker().start();
    // A restart under a loaded CI machine may take a while: the publish waits for it.
    const c = await Client.connect(broker.target, { publishTimeout: 120 });
    try {
      const subject = fresh("restart");
      const durable = fresh("rs").replace(".", "-");
      const sub = await c.subscribe(subject, { durable, start: "all" });
      const ephemeral = await c.subscribe(subject, { start: "all" });
      await c.publish(subject, "before");
      assert.equal((await sub.next()).value.data, "before");
      assert.equal((await ephemeral.next()).value.data, "before");
      await broker.kill();
      const during = c.publish(subject, "during"); // queued while the broker is down
      await broker.start(); // same port, same data dir
      const id = await during;
      assert.match(id, /^\d+$/);
      // "before" may come again (at-least-once: its ack may have died with the broker).
      let msg = await sub.next();
      while (msg.value.data === "before") msg = await sub.next();
      assert.equal(msg.value.data, "during");
      await msg.value.ack();
      assert.ok(sub.reconnects >= 1);
      const stored = [];
      for await (const e of c.queryEvents(subject)) stored.push(e.data);
      assert.deepEqual(stored, ["before", "during"]);
      // The ephemeral one re-opened with new events only: markers reach it, "before" never again.
      let n = 0;
      const next = ephemeral.next();
      const got = await eventually(async () => {
        await c.publish(subject, `after-${n++}`);
        return Promise.race([next, new Promise((r) => setTimeout(() => r(undefined), 200))]);
      }, 60);
      assert.notEqual(got.value.data, "before");
    } finally {
      await c.close();
      await broker.stop();
    }
  });
});
