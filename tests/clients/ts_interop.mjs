// The TypeScript side of tests/clients/test_typescript_interop.py: one subcommand per role.
// LOCKGATE_TS_CLIENT is the path of the built client (clients/typescript/dist/index.js).
//   encode     stdin: JSON cases -> stdout: one hex-encoded CloudEvent per case
//   publish    TARGET SUBJECT: publishes every kind of data -> stdout: the ids (JSON)
//   subscribe  TARGET SUBJECT COUNT: stdout: one JSON line per message received
//   reasons    stdout: {reason: error class name} for every reason of the protos
//   tls        TARGET SUBJECT CA [CERT KEY]: publishes {"tls": true} over TLS -> stdout:
//              {"id"} or {"error": class name, "reason"}
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const lg = require(process.env.LOCKGATE_TS_CLIENT);
// The encoder the client's publish uses (dist/wire.js, beside the entry point).
const { EventEncoder } = require(process.env.LOCKGATE_TS_CLIENT.replace(/index\.js$/, "wire.js"));
const [command, ...args] = process.argv.slice(2);

// Typed values travel as [kind, value]: JSON has no bytes, dates or int/float split.
function fromTyped([kind, value]) {
  if (kind === "bytes") return Buffer.from(value, "hex");
  if (kind === "time") return new Date(value);
  return value;
}

function toTyped(value) {
  if (Buffer.isBuffer(value)) return ["bytes", value.toString("hex")];
  if (value instanceof Date) return ["time", value.toISOString()];
  if (typeof value === "number") return ["int", value];
  if (typeof value === "boolean") return ["bool", value];
  return ["str", value];
}

function dataOf(c) {
  if (c.kind === "binary") return Buffer.from(c.value, "hex");
  if (c.kind === "proto") return { typeUrl: c.value.typeUrl, value: Buffer.from(c.value.hex, "hex") };
  return c.value; // text: a string; json: any JSON value
}

function options(c) {
  const attributes = Object.fromEntries(Object.entries(c.attributes ?? {}).map(([k, v]) => [k, fromTyped(v)]));
  return { type: c.type, source: c.source, id: c.id, attributes };
}

function describe(msg) {
  const data = msg.data;
  let kind;
  let value = data;
  if (msg.event.protoData !== undefined) [kind, value] = ["proto", { typeUrl: data.typeUrl, hex: Buffer.from(data.value).toString("hex") }];
  else if (Buffer.isBuffer(data)) [kind, value] = ["binary", data.toString("hex")];
  else if (msg.event.textData !== undefined && msg.attributes.datacontenttype === "text/plain") kind = "text";
  else kind = "json";
  const attributes = Object.fromEntries(Object.entries(msg.attributes).map(([k, v]) => [k, toTyped(v)]));
  return { id: msg.id, subject: msg.subject, type: msg.type, source: msg.source, eventId: msg.eventId, attributes, data: { kind, value } };
}

if (command === "encode") {
  const cases = JSON.parse(readFileSync(0, "utf8"));
  const encoder = new EventEncoder();
  for (const c of cases) console.log(encoder.encode(dataOf(c), options(c)).toString("hex"));
} else if (command === "publish") {
  const [target, subject] = args;
  const cases = JSON.parse(readFileSync(0, "utf8"));
  const c = await lg.Client.connect(target);
  const ids = await Promise.all(cases.map((k) => c.publish(subject, dataOf(k), options(k))));
  console.log(JSON.stringify(ids));
  await c.close();
} else if (command === "subscribe") {
  const [target, subject, count] = args;
  const c = await lg.Client.connect(target);
  const sub = await c.subscribe(subject, { start: "all" });
  let n = 0;
  for await (const msg of sub) {
    console.log(JSON.stringify(describe(msg)));
    if (++n === Number(count)) break;
  }
  await c.close();
} else if (command === "reasons") {
  console.log(JSON.stringify(Object.fromEntries(lg.REASONS.map((r) => [r, lg.errorClassName(r)]))));
} else if (command === "tls") {
  const [target, subject, caFile, certFile, keyFile] = args;
  try {
    const c = await lg.Client.connect(target, { tls: { caFile, certFile, keyFile }, connectTimeout: 20 });
    console.log(JSON.stringify({ id: await c.publish(subject, { tls: true }) }));
    await c.close();
  } catch (err) {
    console.log(JSON.stringify({ error: err.name, reason: err.reason, message: err.message }));
  }
} else {
  console.error(`unknown command ${command}`);
  process.exit(2);
}
