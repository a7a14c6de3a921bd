/**
 * Acks for fetched (polled) deliveries, coalesced into one `Acknowledge` call per durable and
 * turn of the event loop, as the Python client's `clients/_pull.py`. Errors are reported to
 * `onError`, not thrown: an event whose ack is lost is redelivered after the ack wait (use
 * `Client.acknowledge` to see the broker's answer).
 */
import type { LockgateError } from "./errors";
import type { Acker, Message } from "./message";

export type AcknowledgeFn = (durable: string, options: { ack?: string[]; nack?: string[]; nackDelaySeconds?: number }) => Promise<void>;

export class PullAcker implements Acker {
  private acks: string[] = [];
  private nacks = new Map<number | undefined, string[]>();
  private scheduled = false;

  constructor(
    readonly durable: string,
    private readonly acknowledge: AcknowledgeFn,
    readonly respond: (replyTo: string, data: unknown, request: Message<unknown>) => Promise<string>,
    private readonly onError: (err: LockgateError) => void,
  ) {}

  ackIds(ids: string[]): void {
    this.acks.push(...ids);
    this.schedule();
  }

  nackIds(ids: string[], delaySeconds: number | undefined): void {
    const list = this.nacks.get(delaySeconds) ?? [];
    list.push(...ids);
    this.nacks.set(delaySeconds, list);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => void this.flush());
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    const acks = this.acks;
    const nacks = this.nacks;
    this.acks = [];
    this.nacks = new Map();
    try {
      if (acks.length > 0) await this.acknowledge(this.durable, { ack: acks });
      for (const [delay, ids] of nacks) await this.acknowledge(this.durable, { nack: ids, nackDelaySeconds: delay });
    } catch (err) {
      this.onError(err as LockgateError);
    }
  }
}
