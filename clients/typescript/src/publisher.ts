/**
 * Publish coalescing, as the Python client's `clients/_publisher.py`: many concurrent
 * `publish()` calls, few frames, one long-lived `Publish` stream.
 *
 * `publish()` appends its encoded event to the open batch of its subject and schedules one
 * flush (`setImmediate`, so every publish of this turn of the event loop joins the frame). At
 * most `window` frames are unanswered at once; while the window is full, new events gather in
 * the open batches. When the stream breaks with UNAVAILABLE (or INTERNAL), it is re-opened with
 * backoff and every unanswered batch is sent again with the same CloudEvents `(source, id)`:
 * the broker's dedup window turns the resend into `duplicate` results.
 */
import type { ClientDuplexStream, StatusObject } from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { PublishError, PublishResponse } from "./gen/broker/v1/broker";
import { Backoff } from "./backoff";
import { LockgateError, Unavailable, errorForReason, fromServiceError } from "./errors";
import { encodePublishRequest } from "./wire";

export const MAX_EVENTS = 1000;
export const MAX_FRAME_BYTES = 900 * 1024;
export const WINDOW = 16;
const RETRYABLE = new Set([status.UNAVAILABLE, status.INTERNAL]);

export type PublishCall = ClientDuplexStream<Buffer, PublishResponse>;

/** The outcome of one event of an explicit batch: its id, or why it was rejected. */
export interface PublishResult {
  /** The assigned id ("0" when rejected). */
  id: string;
  /** True when the broker had this (source, id) already: `id` is the first one's. */
  duplicate: boolean;
  /** Why the broker rejected the event, or undefined. */
  error: LockgateError | undefined;
}

export class Batch {
  readonly events: Buffer[] = [];
  nbytes = 0;
  settled = false;
  error: LockgateError | undefined;
  ids: string[] = [];
  duplicates = new Set<number>();
  errors = new Map<number, PublishError>();
  readonly done: Promise<void>;
  private settle!: () => void;

  constructor(readonly subject: string, readonly deadline: number) {
    this.done = new Promise((resolve) => (this.settle = resolve));
  }

  add(raw: Buffer): number {
    this.events.push(raw);
    this.nbytes += raw.length;
    return this.events.length - 1;
  }

  resolve(response: PublishResponse): void {
    if (this.settled) return;
    this.ids = response.ids;
    this.duplicates = new Set(response.duplicateIndexes);
    this.errors = new Map(response.errors.map((e) => [e.index, e]));
    this.settled = true;
    this.settle();
  }

  fail(error: LockgateError): void {
    if (this.settled) return;
    this.error = error;
    this.settled = true;
    this.settle();
  }

  /** The assigned id of event `index`, or throw its rejection. */
  result(index: number): string {
    if (this.error !== undefined) throw this.error;
    const err = this.errors.get(index);
    if (err !== undefined) throw errorForReason(err.reason, err.message);
    const id = this.ids[index];
    if (id === undefined) {
      throw new LockgateError(`the broker answered ${this.ids.length} ids for a batch of ${this.events.length} events`, {
        reason: "PROTOCOL_ERROR",
      });
    }
    return id;
  }

  results(): PublishResult[] {
    if (this.error !== undefined) throw this.error;
    return this.events.map((_, i) => {
      const err = this.errors.get(i);
      if (err !== undefined) return { id: "0", duplicate: false, error: errorForReason(err.reason, err.message) };
      return { id: this.ids[i] ?? "0", duplicate: this.duplicates.has(i), error: undefined };
    });
  }
}

/** Owns the `Publish` stream, the open batches and the unanswered ones. */
export class Publisher {
  private readonly open = new Map<string, Batch>();
  private queue: Batch[] = [];
  private readonly inflight = new Map<number, Batch>();
  private nextBatchId = 1;
  private call: PublishCall | undefined;
  private scheduled = false;
  private reconnecting = false;
  private closed = false;
  private readonly backoff = new Backoff();
  private readonly roomWaiters: (() => void)[] = [];
  private expiry: NodeJS.Timeout | undefined;
  /** Frames written on the stream (resends included): a measure of coalescing. */
  framesSent = 0;
  reconnects = 0;

  constructor(
    private readonly openCall: () => PublishCall,
    readonly window: number = WINDOW,
    readonly publishTimeout = 30,
    readonly maxFrameBytes = MAX_FRAME_BYTES,
  ) {
    if (!(window >= 1)) throw new RangeError(`the publish window is at least 1 frame, not ${window}`);
  }

  /** The open batch of `subject` with room for an event of `nbytes`, or a new one. */
  batchFor(subject: string, nbytes: number): Batch {
    if (this.closed) throw new LockgateError("the client is closed", { reason: "CLOSED" });
    let batch = this.open.get(subject);
    if (batch === undefined || batch.events.length >= MAX_EVENTS || batch.nbytes + nbytes > this.maxFrameBytes) {
      batch = this.newBatch(subject);
    }
    this.schedule();
    return batch;
  }

  /** A batch of its own (for `publishBatch`): no `publish()` joins it. */
  newBatch(subject: string, shared = true): Batch {
    if (this.closed) throw new LockgateError("the client is closed", { reason: "CLOSED" });
    const batch = new Batch(subject, Date.now() + this.publishTimeout * 1000);
    if (shared) this.open.set(subject, batch);
    else if (this.open.get(subject) !== undefined) this.open.delete(subject); // keep call order
    this.queue.push(batch);
    this.ensureExpiry();
    this.schedule();
    return batch;
  }

  /** Frames queued or unanswered. */
  backlog(): number {
    return this.queue.length + this.inflight.size;
  }

  /** Resolves once fewer than `window` frames are queued or unanswered. */
  async room(): Promise<void> {
    while (this.backlog() >= this.window && !this.closed) {
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
  }

  /** Resolves once every frame queued so far is answered (or failed). */
  async drain(): Promise<void> {
    await Promise.all([...this.queue, ...this.inflight.values()].map((b) => b.done));
  }

  private schedule(): void {
    if (this.scheduled || this.reconnecting) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  private answered(): void {
    for (const wake of this.roomWaiters.splice(0)) wake();
  }

  /** Send queued batches while the window has room. */
  private pump(): void {
    if (this.closed || this.reconnecting || this.queue.length === 0) return;
    const call = this.call ?? this.start();
    while (this.queue.length > 0 && this.inflight.size < this.window) {
      const batch = this.queue.shift()!;
      if (this.open.get(batch.subject) === batch) this.open.delete(batch.subject);
      const batchId = this.nextBatchId++;
      this.inflight.set(batchId, batch);
      call.write(encodePublishRequest(batch.subject, batch.events, batchId));
      this.framesSent += 1;
    }
  }

  private start(): PublishCall {
    const call = this.openCall();
    this.call = call;
    let ended = false;
    call.on("data", (response: PublishResponse) => {
      const batch = this.inflight.get(Number(response.batchId));
      if (batch !== undefined) {
        this.inflight.delete(Number(response.batchId));
        batch.resolve(response);
      }
      this.backoff.reset();
      this.answered();
      this.schedule();
    });
    // 'status' comes once, last, whatever ended the call ('error' may come before 'end' or
    // not at all), so it alone decides; the 'error' listener keeps the emitter from throwing.
    call.on("error", () => undefined);
    call.on("status", (s: StatusObject) => {
      if (ended) return;
      ended = true;
      if (this.call === call) this.call = undefined;
      this.broken(s.code === status.OK ? undefined : s);
    });
    return call;
  }

  private broken(error: StatusObject | undefined): void {
    // Unanswered batches go back to the front of the queue, in their original order.
    const unanswered = [...this.inflight.entries()].sort((a, b) => a[0] - b[0]).map(([, b]) => b);
    this.inflight.clear();
    this.queue.unshift(...unanswered);
    if (this.closed) return;
    if (error !== undefined && !RETRYABLE.has(error.code)) {
      this.failAll(fromServiceError(error));
      return;
    }
    if (this.queue.length === 0) return; // idle: the next publish opens a new stream
    this.reconnects += 1;
    this.reconnecting = true;
    const delay = this.backoff.nextDelay();
    setTimeout(() => {
      this.reconnecting = false;
      this.expire(error);
      this.schedule();
    }, delay * 1000).unref();
  }

  private ensureExpiry(): void {
    if (this.expiry !== undefined) return;
    this.expiry = setInterval(() => {
      if (this.backlog() === 0) {
        clearInterval(this.expiry);
        this.expiry = undefined;
        return;
      }
      this.expire(undefined);
    }, Math.min(1000, this.publishTimeout * 1000));
    this.expiry.unref();
  }

  /** Fail batches (queued or sent) the broker has not answered within `publishTimeout`. */
  private expire(error: StatusObject | undefined): void {
    const now = Date.now();
    const late = (b: Batch): boolean => b.deadline <= now;
    const failure = (): LockgateError =>
      new Unavailable(
        `the broker did not answer within publishTimeout (${this.publishTimeout}s)` +
          (error ? `: ${error.details}` : ""),
        { hint: "check that the broker runs (start it with `lockgate serve`), or raise publishTimeout" },
      );
    for (const batch of this.queue.filter(late)) {
      batch.fail(failure());
      if (this.open.get(batch.subject) === batch) this.open.delete(batch.subject);
    }
    this.queue = this.queue.filter((b) => !b.settled);
    for (const [id, batch] of [...this.inflight.entries()]) {
      if (late(batch)) {
        this.inflight.delete(id);
        batch.fail(failure());
      }
    }
    this.answered();
  }

  private failAll(error: LockgateError): void {
    for (const batch of [...this.queue, ...this.inflight.values()]) batch.fail(error);
    this.queue = [];
    this.inflight.clear();
    this.open.clear();
    this.answered();
  }

  /** Wait (up to `timeout` seconds) for unanswered batches, then stop. */
  async close(timeout = 5): Promise<void> {
    if (this.closed) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.drain(), new Promise((r) => (timer = setTimeout(r, timeout * 1000)))]);
    clearTimeout(timer);
    this.closed = true;
    this.failAll(new LockgateError("the client was closed", { reason: "CLOSED" }));
    if (this.expiry !== undefined) clearInterval(this.expiry);
    const call = this.call;
    this.call = undefined;
    if (call !== undefined) {
      call.end();
      call.cancel();
    }
  }
}
