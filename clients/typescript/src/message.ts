/** Received events: {@link Event} (a reply), {@link Message} (a delivery, with acks) and
 * {@link StoredEvent} (history), as in the Python client's `clients/_message.py`. */
import { CloudEvent } from "./gen/broker/v1/cloudevent";
import type { StoredEvent as StoredEventProto } from "./gen/broker/v1/broker";
import type { RawDelivery } from "./wire";
import { AttributeValue, Schema, decodeAttributes, decodeData } from "./codec";
import { LockgateError } from "./errors";

const UNSET = Symbol("unset");

/** A CloudEvent as received; the event is decoded when first read, and `data` (validated by
 * the schema) too: a consumer that only counts or forwards pays for neither. */
export class Event<T = unknown> {
  private decoded: T | typeof UNSET = UNSET;
  private cloudEvent: CloudEvent | Uint8Array;

  constructor(event: CloudEvent | Uint8Array, private readonly schema?: Schema<T>) {
    this.cloudEvent = event;
  }

  /** The CloudEvent (the generated message type). */
  get event(): CloudEvent {
    if (this.cloudEvent instanceof Uint8Array) this.cloudEvent = CloudEvent.decode(this.cloudEvent);
    return this.cloudEvent;
  }

  /** The payload: JSON as values, text as a string, binary as a Buffer, or the schema's type. */
  get data(): T {
    if (this.decoded === UNSET) {
      this.decoded = (this.schema ? decodeData(this.event, this.schema) : decodeData(this.event)) as T;
    }
    return this.decoded;
  }

  /** The payload validated by `schema` (a zod schema, or anything with `parse`). */
  dataAs<U>(schema: Schema<U>): U {
    return decodeData(this.event, schema);
  }

  /** The CloudEvents `type`. */
  get type(): string {
    return this.event.type;
  }

  /** The CloudEvents `source`. */
  get source(): string {
    return this.event.source;
  }

  /** The CloudEvents `id` (the producer's, not the broker's assigned id). */
  get eventId(): string {
    return this.event.id;
  }

  /** Optional and extension attributes (`datacontenttype`, `traceparent`, ...). */
  get attributes(): Record<string, AttributeValue> {
    return decodeAttributes(this.event);
  }
}

/** What a message needs from its subscription. */
export interface Acker {
  ackIds(ids: string[]): void;
  nackIds(ids: string[], delaySeconds: number | undefined): void;
  respond(replyTo: string, data: unknown, request: Message<unknown>): Promise<string>;
}

/** One delivery of a subscription. */
export class Message<T = unknown> extends Event<T> {
  constructor(private readonly delivery: RawDelivery, private readonly acker: Acker, schema?: Schema<T>) {
    super(delivery.event, schema);
  }

  /** The broker-assigned id (a decimal string: ids are 64-bit). */
  get id(): string {
    return this.delivery.id;
  }

  /** The subject it was published on. */
  get subject(): string {
    return this.delivery.subject;
  }

  /** 1 for the first delivery, more for redeliveries. */
  get attempt(): number {
    return this.delivery.attempt;
  }

  /** The subject a reply goes to, for a request; `""` otherwise. */
  get replyTo(): string {
    return this.delivery.replyTo;
  }

  /** Acknowledge (durable subscriptions; a no-op on ephemeral ones). Acks of one turn of the
   * event loop travel in one frame. */
  async ack(): Promise<void> {
    this.acker.ackIds([this.id]);
  }

  /** Ask for redelivery, after `delaySeconds` (durable subscriptions). */
  async nack(options: { delaySeconds?: number } = {}): Promise<void> {
    this.acker.nackIds([this.id], options.delaySeconds);
  }

  /** Publish `data` as the reply to this request; resolves to the reply's assigned id. */
  async respond(data: unknown): Promise<string> {
    if (!this.replyTo) {
      throw new LockgateError("this message is not a request: it has no reply_to subject", { reason: "NO_REPLY_TO" });
    }
    return this.acker.respond(this.replyTo, data, this as Message<unknown>);
  }
}

/** An event as the broker's log keeps it (from history queries). */
export class StoredEvent<T = unknown> extends Event<T> {
  /** The assigned id. */
  readonly id: string;
  readonly subject: string;
  readonly storedTime: Date | undefined;
  readonly policyVersion: string;

  constructor(stored: StoredEventProto, schema?: Schema<T>) {
    super(stored.event!, schema);
    this.id = stored.id;
    this.subject = stored.subject;
    this.storedTime = stored.storedTime;
    this.policyVersion = stored.policyVersion;
  }
}
