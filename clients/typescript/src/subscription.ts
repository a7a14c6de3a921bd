/**
 * A live subscription: one `Subscribe` stream, re-opened with backoff when it breaks, read as an
 * async iterator, with acks gathered into one frame per turn of the event loop (as the Python
 * client's `clients/_subscription.py`). A durable re-opens where it stopped; an ephemeral one
 * from new events.
 *
 * @example
 * const sub = await client.subscribe("orders.>", { durable: "billing" });
 * for await (const msg of sub) { console.log(msg.subject, msg.data); await msg.ack(); }
 */
import type { ClientDuplexStream, StatusObject } from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { Nack, SubscribeOpen, SubscribeRequest } from "./gen/broker/v1/broker";
import { Backoff } from "./backoff";
import { Schema, toDuration, toStartPosition } from "./codec";
import { LockgateError, Unavailable, fromServiceError } from "./errors";
import { Acker, Message } from "./message";
import type { RawSubscribeResponse } from "./wire";

export type SubscribeCall = ClientDuplexStream<SubscribeRequest, RawSubscribeResponse>;
const RETRYABLE = new Set([status.UNAVAILABLE, status.INTERNAL]);
/** Messages a subscription holds for its iterator before it stops reading the stream. */
export const MAX_BUFFERED = 10_000;

export class Subscription<T = unknown> implements AsyncIterableIterator<Message<T>>, Acker {
  /** The durable name, or the name the broker gave an ephemeral subscription. */
  name: string;
  /** The highest id stored when the subscription (last) opened. */
  lastId = "0";
  readonly durable: boolean;
  reconnects = 0;
  private readonly buffer: Message<T>[] = [];
  private head = 0;
  private waiter: (() => void) | undefined;
  private error: LockgateError | undefined;
  private closed = false;
  private call: SubscribeCall | undefined;
  private ready: Promise<void> | undefined;
  private ackIdsQueued: string[] = [];
  private nacks: Nack[] = [];
  private flushScheduled = false;
  private readonly backoff = new Backoff();

  constructor(
    private readonly openCall: () => SubscribeCall,
    private readonly request: SubscribeOpen,
    private readonly publish: (subject: string, data: unknown, request: Message<unknown>) => Promise<string>,
    private readonly schema?: Schema<T>,
    private readonly maxBuffered: number = MAX_BUFFERED,
  ) {
    this.durable = request.durable !== "";
    this.name = request.durable;
  }

  /** Open the stream and wait for the broker's confirmation (idempotent). */
  start(): Promise<this> {
    if (this.ready === undefined) {
      this.ready = new Promise<void>((resolve, reject) => this.open(resolve, reject));
    }
    return this.ready.then(() => this);
  }

  private open(confirmed?: () => void, refused?: (err: LockgateError) => void): void {
    const call = (this.call = this.openCall());
    let gotDeliveries = false;
    let ended = false;
    call.on("data", (response: RawSubscribeResponse) => {
      if (response.subscribed !== undefined) {
        this.name = response.subscribed.name;
        this.lastId = response.subscribed.lastId;
        confirmed?.();
        if (this.ackIdsQueued.length > 0 || this.nacks.length > 0) this.scheduleFlush();
      }
      if (response.deliveries.length > 0) {
        gotDeliveries = true;
        for (const d of response.deliveries) this.buffer.push(new Message<T>(d, this, this.schema));
        // A subscriber that does not iterate stops reading the stream (HTTP/2 flow control
        // then holds the broker back) instead of buffering without bound.
        if (this.pending() >= this.maxBuffered) call.pause();
        this.wake();
      }
    });
    call.on("error", () => undefined); // 'status' decides (see publisher.ts)
    call.on("status", (s: StatusObject) => {
      if (ended) return;
      ended = true;
      if (this.call === call) this.call = undefined;
      if (this.closed) return;
      const error = s.code === status.OK ? new Unavailable("the broker ended the subscription stream") : fromServiceError(s);
      if (confirmed !== undefined && refused !== undefined && !RETRYABLE.has(s.code) && s.code !== status.OK) {
        refused(error); // the open itself was refused: the caller of subscribe() sees it
        this.fail(error);
        return;
      }
      if (gotDeliveries) this.backoff.reset();
      if (this.durable && error.reason === "NOT_PENDING") {
        // An ack of an id no longer pending (acked twice after a redelivery): acks are
        // idempotent to us, so drop the queued ones and carry on.
        this.ackIdsQueued = [];
        this.nacks = [];
      } else if (!RETRYABLE.has(s.code) && s.code !== status.OK) {
        this.fail(error);
        return;
      }
      this.reconnects += 1;
      if (!this.durable) {
        // An ephemeral subscription cannot resume: it continues with new events (a start of
        // "all" again would deliver everything twice).
        this.request.start = toStartPosition("new");
      }
      const delay = this.backoff.nextDelay();
      setTimeout(() => {
        if (!this.closed) this.open(confirmed, refused);
      }, delay * 1000);
    });
    call.write({ open: this.request });
  }

  private fail(error: LockgateError): void {
    this.error = error;
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  /** Send the acks still queued, then end the stream. Iteration stops. */
  async close(): Promise<void> {
    if (this.closed) return;
    const call = this.call;
    if (call !== undefined) this.flush(call);
    this.closed = true;
    this.call = undefined;
    if (call !== undefined) {
      call.end();
      // The acks just written leave before the cancel (grpc-js sends writes in order); the
      // cancel ends a stream the broker would otherwise keep open.
      setImmediate(() => call.cancel());
    }
    this.wake();
  }

  private resumeReading(): void {
    const call = this.call;
    if (call !== undefined && call.isPaused() && this.pending() * 2 <= this.maxBuffered) call.resume();
  }

  /** Messages received and not yet taken by the iterator. */
  pending(): number {
    return this.buffer.length - this.head;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private async untilBuffered(): Promise<boolean> {
    await this.start();
    while (this.pending() === 0) {
      if (this.error !== undefined) throw this.error;
      if (this.closed) return false;
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    return true;
  }

  async next(): Promise<IteratorResult<Message<T>>> {
    if (!(await this.untilBuffered())) return { done: true, value: undefined };
    const msg = this.buffer[this.head++]!;
    if (this.head > 1024 && this.head * 2 > this.buffer.length) {
      this.buffer.splice(0, this.head);
      this.head = 0;
    }
    this.resumeReading();
    return { done: false, value: msg };
  }

  /** `break` out of `for await` closes the subscription. */
  async return(): Promise<IteratorResult<Message<T>>> {
    await this.close();
    return { done: true, value: undefined };
  }

  /** Every message received and not yet taken, a batch at a time (never empty). */
  async *batches(): AsyncGenerator<Message<T>[]> {
    try {
      while (await this.untilBuffered()) {
        const batch = this.buffer.slice(this.head);
        this.buffer.length = 0;
        this.head = 0;
        this.resumeReading();
        yield batch;
      }
    } finally {
      await this.close();
    }
  }

  /** Acknowledge many messages in one frame. */
  async ack(messages: Message<T>[]): Promise<void> {
    this.ackIds(messages.map((m) => m.id));
  }

  /** Ask for redelivery of many messages in one frame. */
  async nack(messages: Message<T>[], options: { delaySeconds?: number } = {}): Promise<void> {
    this.nackIds(messages.map((m) => m.id), options.delaySeconds);
  }

  // -- Acker -------------------------------------------------------------------------------

  ackIds(ids: string[]): void {
    if (!this.durable || ids.length === 0) return;
    this.ackIdsQueued.push(...ids);
    this.scheduleFlush();
  }

  nackIds(ids: string[], delaySeconds: number | undefined): void {
    if (!this.durable || ids.length === 0) return;
    this.nacks.push({ ids, delay: delaySeconds ? toDuration(delaySeconds) : undefined });
    this.scheduleFlush();
  }

  respond(replyTo: string, data: unknown, request: Message<unknown>): Promise<string> {
    return this.publish(replyTo, data, request);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      if (this.call !== undefined) this.flush(this.call);
    });
  }

  private flush(call: SubscribeCall): void {
    // Kept until written on a live stream: a durable takes acks from any of its streams.
    if (this.ackIdsQueued.length > 0) {
      call.write({ ack: { ids: this.ackIdsQueued } });
      this.ackIdsQueued = [];
    }
    for (const nack of this.nacks.splice(0)) call.write({ nack });
  }
}
