// One side of bench/ts_bench/run.py, in its own process: publish -> subscribe of EVENTS events
// of 128 bytes through one client, published in waves of WAVE concurrent publishes (the simple
// call, which each client batches its own way), received by a subscriber of the same client.
//   node bench.mjs lockgate TARGET EVENTS WAVE     the TypeScript client (clients/typescript)
//   node bench.mjs nats URL EVENTS WAVE            the NATS JavaScript client (`nats` on npm)
// Prints one JSON line: {events, seconds, cpu_seconds} (this process's CPU, user + system).
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const pkg = fileURLToPath(new URL("../../clients/typescript/package.json", import.meta.url));
const require = createRequire(pkg);
const [side, target, eventsArg, waveArg] = process.argv.slice(2);
const EVENTS = Number(eventsArg);
const WAVE = Number(waveArg);
const DATA = Buffer.alloc(128, "x");
const SUBJECT = "tsbench.x";

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function lockgate() {
  const { Client } = require(".");
  const c = await Client.connect(target);
  const sub = await c.subscribe(SUBJECT, { maxInFlight: 100_000 });
  const run = async () => {
    for (let sent = 0; sent < EVENTS; sent += WAVE) {
      const n = Math.min(WAVE, EVENTS - sent);
      await Promise.all(Array.from({ length: n }, () => c.publish(SUBJECT, DATA)));
    }
  };
  const received = (async () => {
    let got = 0;
    for await (const batch of sub.batches()) {
      got += batch.length;
      if (got >= EVENTS) return;
    }
  })();
  const result = await measure(run, received);
  await c.close();
  return result;
}

async function nats() {
  const { connect } = require("nats");
  const nc = await connect({ servers: target });
  let got = 0;
  let done;
  const received = new Promise((r) => (done = r));
  nc.subscribe(SUBJECT, { callback: () => ++got >= EVENTS && done() });
  await nc.flush();
  const run = async () => {
    for (let sent = 0; sent < EVENTS; sent += WAVE) {
      const n = Math.min(WAVE, EVENTS - sent);
      for (let i = 0; i < n; i++) nc.publish(SUBJECT, DATA);
      await nc.flush();
    }
  };
  const result = await measure(run, received);
  await nc.close();
  return result;
}

async function measure(run, received) {
  const cpu0 = cpuSeconds();
  const t0 = process.hrtime.bigint();
  await Promise.all([run(), received]);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { events: EVENTS, seconds, cpu_seconds: cpuSeconds() - cpu0 };
}

const result = side === "lockgate" ? await lockgate() : await nats();
console.log(JSON.stringify(result));
