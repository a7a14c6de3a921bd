// Starts a real `lockgate serve` on an ephemeral port for the tests, as broker/testing.py does
// for the Python ones: the repo's .venv (or LOCKGATE_PYTHON) runs it, the test waits for its
// "lockgate ready on HOST:PORT" line. Without that Python the tests skip, and FAIL under CI=true.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const REPO = resolve(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "../../..");
export const PYTHON = process.env.LOCKGATE_PYTHON || join(REPO, ".venv/bin/python");

/** Why the broker cannot run here, or undefined; throws under CI=true (a missing install). */
export function missing() {
  if (existsSync(PYTHON)) return undefined;
  const reason = `no Python with lockgate at ${PYTHON} (set LOCKGATE_PYTHON)`;
  if (process.env.CI === "true") throw new Error(`${reason}; CI=true: .ci/run installs it`);
  return reason;
}

/** Wait for `check()` to be truthy, at most `seconds`: never a fixed sleep. */
export async function eventually(check, seconds = 10) {
  const until = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error(`not true within ${seconds}s: ${check}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export class Broker {
  constructor(args = []) {
    this.args = args;
    this.dataDir = mkdtempSync(join(tmpdir(), "lockgate-ts-"));
    this.port = 0;
    this.output = [];
  }

  get target() {
    return `127.0.0.1:${this.port}`;
  }

  /** Start (or restart on the same port and data dir) and wait until it serves. */
  async start() {
    const cmd = ["-m", "lockgate.broker.cli", "serve", "--listen", `127.0.0.1:${this.port}`, "--data-dir", this.dataDir, ...this.args];
    const proc = (this.proc = spawn(PYTHON, cmd, { env: { ...process.env, PYTHONUNBUFFERED: "1" }, stdio: ["ignore", "pipe", "pipe"] }));
    await new Promise((resolve, reject) => {
      let text = "";
      const timer = setTimeout(() => reject(new Error(`broker did not start: ${text}`)), 30_000);
      const onData = (chunk) => {
        text += chunk;
        const m = /lockgate ready on (\S+):(\d+)/.exec(text);
        if (m) {
          clearTimeout(timer);
          this.port = Number(m[2]);
          resolve();
        }
      };
      proc.stdout.on("data", onData);
      proc.stderr.on("data", onData);
      proc.once("exit", (code) => reject(new Error(`broker exited with ${code}: ${text}`)));
    });
    return this;
  }

  /** An API key made with `lockgate keys create` (the broker leaves the dev mode). */
  createKey(org = "default", agent = "ts-agent", role = "admin") {
    const out = spawnSync(PYTHON, ["-m", "lockgate.broker.cli", "keys", "create", "--org", org, "--agent", agent, "--role", role, "--data-dir", this.dataDir], { encoding: "utf8" });
    const key = /lg_\S+/.exec(out.stdout + out.stderr);
    if (!key) throw new Error(`no key in: ${out.stdout}${out.stderr}`);
    return key[0];
  }

  /** A bearer token made with `lockgate tokens issue` (signed by the broker's local key). */
  issueToken(org = "default", agent = "ts-agent", role = "admin") {
    const out = spawnSync(PYTHON, ["-m", "lockgate.broker.cli", "tokens", "issue", "--org", org, "--agent", agent, "--role", role, "--data-dir", this.dataDir], { encoding: "utf8" });
    const token = /^eyJ\S+/m.exec(out.stdout);
    if (!token) throw new Error(`no token in: ${out.stdout}${out.stderr}`);
    return token[0];
  }

  async kill(signal = "SIGKILL") {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill(signal);
    await exited;
  }

  async stop() {
    await this.kill("SIGTERM");
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** A started broker for one test file (`before`/`after`). */
export async function startBroker(args = []) {
  return new Broker(args).start();
}
