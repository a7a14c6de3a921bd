import { Client, z } from "@lockgate/client";

const Alert = z.object({ level: z.string(), text: z.string() });
const c = await Client.connect(process.env.LOCKGATE_SERVER ?? "127.0.0.1:50051", { apiKey: process.env.LOCKGATE_API_KEY });
const id = await c.publish("alerts.disk", { level: "warn", text: "disk 91% full" });
const sub = await c.subscribe("alerts.>", { durable: "pager", start: "all", schema: Alert });
for await (const msg of sub) {
  console.log(msg.id === id, msg.data.level, msg.data.text); // a validated Alert
  await msg.ack();
  break;
}
await c.close();
