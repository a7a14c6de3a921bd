/**
 * The Lockgate client for Node: publish, subscribe, request/reply and history over gRPC, with
 * the shape of the Python client (`clients/_client.py`).
 *
 * @example
 * const c = await Client.connect("127.0.0.1:50051", { apiKey: process.env.LOCKGATE_API_KEY });
 * const id = await c.publish("alerts.disk", { level: "warn", text: "disk 91% full" });
 * const sub = await c.subscribe("alerts.>", { durable: "pager", start: "all" });
 * for await (const msg of sub) { console.log(msg.id, msg.data); await msg.ack(); break; }
 * await c.close();
 */
import { randomBytes } from "node:crypto";
import { connect as tcpConnect } from "node:net";
import * as grpc from "@grpc/grpc-js";
import {
  AcknowledgeRequest,
  BrokerServiceService as Broker,
  FetchRequest,
  GetEventResponse,
  QueryEventsRequest,
  QueryEventsResponse,
  RequestResponse,
  SubscribeOpen,
} from "./gen/broker/v1/broker";
import { Backoff, sleep } from "./backoff";
import {
  EventOptions,
  Schema,
  Start,
  defaultSource,
  toCloudEvent,
  toDuration,
  toStartPosition,
} from "./codec";
import { InvalidArgument, InvalidEvent, LockgateError, TLSError, Unavailable, fromServiceError } from "./errors";
import { Event, Message, StoredEvent } from "./message";
import { Batch, MAX_EVENTS, PublishCall, PublishResult, Publisher, WINDOW } from "./publisher";
import { Subscription, SubscribeCall } from "./subscription";
import { EventEncoder, RawSubscribeResponse, decodeSubscribeResponse } from "./wire";
import { TLSOptions, readPem, splitTarget, tlsHandshakeError } from "./tls";
import { PullAcker } from "./pull";

export interface ClientOptions {
  /** An API key (`lg_…`) or a bearer token; sent as `authorization: Bearer …`. */
  apiKey?: string;
  /** TLS options, or `true` for TLS with the system's CAs; `grpcs://` targets imply TLS. */
  tls?: TLSOptions | boolean;
  /** Seconds to wait for the broker when connecting (and to retry unary calls); default 10. */
  connectTimeout?: number;
  /** Seconds a publish may wait for the broker's answer, reconnects included; default 30. */
  publishTimeout?: number;
  /** Publish frames unanswered at once; default 16. */
  publishWindow?: number;
  /** Largest message in either direction; default 1 MiB, as the broker's. */
  maxMessageBytes?: number;
  /** The CloudEvents `source` of this client's events; default `lockgate://client/<host>/<pid>`. */
  source?: string;
}

export interface SubscribeOptions<T> {
  /** Members of one queue group share the events: each goes to one member. */
  queue?: string;
  /** Names a durable (at-least-once) subscription; acks and nacks apply to it. */
  durable?: string;
  /** Where a new subscription starts ("new" by default; a durable continues where it stopped). */
  start?: Start;
  /** Validates `msg.data` (a zod schema, or anything with `parse`). */
  schema?: Schema<T>;
  maxInFlight?: number;
  /** Messages held for the iterator before the stream stops being read (default 10,000). */
  maxBuffered?: number;
  ackWaitSeconds?: number;
  maxDeliveries?: number;
}

export interface QueryOptions<T> {
  since?: Date;
  until?: Date;
  afterId?: string;
  pageSize?: number;
  limit?: number;
  cloudeventId?: string;
  schema?: Schema<T>;
}

type Unary<Req, Res> = {
  path: string;
  requestSerialize: (value: Req) => Buffer;
  responseDeserialize: (value: Buffer) => Res;
};

const identity = (b: Buffer): Buffer => b;

export class Client {
  /** The CloudEvents `source` of this client's events. */
  readonly source: string;
  private readonly grpc: grpc.Client;
  private readonly metadata: grpc.Metadata;
  private readonly publisher: Publisher;
  private readonly subscriptions = new Set<Subscription<unknown>>();
  private readonly pullAckers = new Map<string, PullAcker>();
  private readonly connectTimeout: number;
  private readonly maxEventBytes: number;
  private readonly idPrefix = randomBytes(8).toString("hex");
  private idCounter = 0;
  private readonly encoder = new EventEncoder();
  private closed = false;

  private constructor(readonly target: string, private readonly options: ClientOptions) {
    const { address, tls } = splitTarget(target);
    const tlsOptions: TLSOptions | undefined =
      options.tls === true || (tls && !options.tls) ? {} : options.tls || undefined;
    if (tlsOptions !== undefined && Boolean(tlsOptions.certFile) !== Boolean(tlsOptions.keyFile)) {
      throw new InvalidArgument("a client certificate needs its key, and a key its certificate", {
        reason: "INVALID_CONFIG",
        hint: "pass both certFile and keyFile",
      });
    }
    const credentials =
      tlsOptions === undefined
        ? grpc.credentials.createInsecure()
        : grpc.credentials.createSsl(
            readPem(tlsOptions.caFile, "CA file"),
            readPem(tlsOptions.keyFile, "key file"),
            readPem(tlsOptions.certFile, "certificate file"),
          );
    const maxBytes = options.maxMessageBytes ?? 1 << 20;
    const channelOptions: grpc.ChannelOptions = {
      "grpc.max_receive_message_length": maxBytes,
      "grpc.max_send_message_length": maxBytes,
      "grpc.keepalive_time_ms": 30_000,
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2_000,
    };
    if (tlsOptions?.serverName) channelOptions["grpc.ssl_target_name_override"] = tlsOptions.serverName;
    this.tls = tlsOptions !== undefined;
    this.tlsOptions = tlsOptions;
    this.address = address;
    this.grpc = new grpc.Client(address, credentials, channelOptions);
    this.metadata = new grpc.Metadata();
    if (options.apiKey) this.metadata.set("authorization", `Bearer ${options.apiKey}`);
    this.source = options.source ?? defaultSource();
    this.connectTimeout = options.connectTimeout ?? 10;
    this.maxEventBytes = maxBytes - 1024;
    const openPublish = (): PublishCall =>
      this.grpc.makeBidiStreamRequest(Broker.publish.path, identity, Broker.publish.responseDeserialize, this.metadata.clone());
    this.publisher = new Publisher(openPublish, options.publishWindow ?? WINDOW, options.publishTimeout ?? 30);
  }

  private readonly tls: boolean;
  private readonly tlsOptions: TLSOptions | undefined;
  private readonly address: string;

  /**
   * Connect to a broker (`HOST:PORT`, or `grpcs://HOST:PORT` for TLS) and wait until it
   * answers, at most `connectTimeout` seconds: `Unavailable` (or `TLSError`) otherwise.
   */
  static async connect(target = "127.0.0.1:50051", options: ClientOptions = {}): Promise<Client> {
    const client = new Client(target, options);
    try {
      await client.waitReady();
    } catch (err) {
      client.grpc.close();
      throw err;
    }
    return client;
  }

  private waitReady(): Promise<void> {
    const deadline = Date.now() + this.connectTimeout * 1000;
    const channel = this.grpc.getChannel();
    // Polled rather than watched: a grpc-js state watcher holds a timer until its deadline,
    // which kept a process that failed to connect alive for connectTimeout.
    return new Promise((resolve, reject) => {
      let probing = false;
      const timer = setInterval(() => {
        const state = channel.getConnectivityState(true);
        if (state === grpc.connectivityState.READY) {
          clearInterval(timer);
          resolve();
        } else if (Date.now() >= deadline) {
          clearInterval(timer);
          void this.diagnose().then(reject);
        } else if (state === grpc.connectivityState.TRANSIENT_FAILURE && this.tlsOptions !== undefined && !probing) {
          // A failed TLS handshake does not cure itself: name it now, not at the deadline.
          probing = true;
          void tlsHandshakeError(this.address, this.tlsOptions).then((err) => {
            probing = false;
            if (err !== undefined) {
              clearInterval(timer);
              reject(err);
            }
          });
        }
      }, 20);
    });
  }

  /** Why the channel never became ready: a TLS handshake that failed on an open port, or an
   * unreachable broker. */
  private async diagnose(): Promise<LockgateError> {
    const [host, port] = [this.address.slice(0, this.address.lastIndexOf(":")), this.address.slice(this.address.lastIndexOf(":") + 1)];
    const open = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect({ host: host.replace(/^\[|\]$/g, ""), port: Number(port), timeout: 2000 });
      socket.once("connect", () => (socket.destroy(), resolve(true)));
      socket.once("error", () => resolve(false));
      socket.once("timeout", () => (socket.destroy(), resolve(false)));
    });
    if (open && this.tls) {
      return new TLSError(`the TLS handshake with ${this.target} failed`, {
        hint: "check that the broker serves TLS, that caFile signed its certificate, and the client certificate",
      });
    }
    const state = grpc.connectivityState[this.grpc.getChannel().getConnectivityState(false)];
    return new Unavailable(`cannot reach the broker at ${this.target} within ${this.connectTimeout}s (${state})`, {
      hint: open
        ? "the port is open but does not answer gRPC: is it a TLS port (use grpcs://)?"
        : "check that the broker runs (start it with `lockgate serve`)",
    });
  }

  private require(): void {
    if (this.closed) throw new LockgateError("the client is closed", { reason: "CLOSED" });
  }

  /** Publish frames written (resends included): a measure of coalescing. */
  get framesSent(): number {
    return this.publisher.framesSent;
  }

  private newId(): string {
    this.idCounter += 1;
    return this.idPrefix + this.idCounter.toString(16).padStart(16, "0");
  }

  private encode(data: unknown, options: EventOptions): Buffer {
    const raw = this.encoder.encode(data, { ...options, source: options.source ?? this.source, id: options.id ?? this.newId() });
    if (raw.length > this.maxEventBytes) {
      throw new InvalidEvent(`event of ${raw.length} bytes exceeds maxMessageBytes of ${this.maxEventBytes + 1024} bytes`, {
        reason: "EVENT_TOO_LARGE",
        hint: "send a reference to the data instead, or raise maxMessageBytes",
      });
    }
    return raw;
  }

  /**
   * Publish one event; resolves to its broker-assigned id once it is stored. Concurrent calls
   * share frames. Rejects with the error class of the broker's reason.
   *
   * @example await c.publish("orders.created", { order: 7 }, { type: "com.shop.order.created" })
   */
  async publish(subject: string, data: unknown, options: EventOptions = {}): Promise<string> {
    this.require();
    const raw = this.encode(data, options);
    const batch = this.publisher.batchFor(subject, raw.length);
    const index = batch.add(raw, options.id === undefined);
    await batch.done;
    return batch.result(index);
  }

  /**
   * Publish many events as frames of their own, in order; rejections are returned, not thrown.
   *
   * @example (await c.publishBatch("logs.app", ["a", "b"])).filter((r) => !r.error).map((r) => r.id)
   */
  async publishBatch(
    subject: string,
    items: readonly unknown[],
    options: Pick<EventOptions, "type" | "source"> = {},
  ): Promise<PublishResult[]> {
    this.require();
    const events = items.map((item) => this.encode(item, options));
    await this.publisher.room();
    const chunks: Batch[] = [];
    let batch: Batch | undefined;
    for (const raw of events) {
      if (batch === undefined || batch.events.length >= MAX_EVENTS || batch.nbytes + raw.length > this.publisher.maxFrameBytes) {
        batch = this.publisher.newBatch(subject, false);
        chunks.push(batch);
      }
      batch.add(raw, true); // publishBatch takes no ids: the client made every one
    }
    const results: PublishResult[] = [];
    for (const chunk of chunks) {
      await chunk.done;
      results.push(...chunk.results());
    }
    return results;
  }

  /** Resolves once every publish queued so far is answered by the broker (or failed). */
  flush(): Promise<void> {
    return this.publisher.drain();
  }

  /**
   * Open a subscription and wait for the broker's confirmation; iterate it with `for await`
   * (a `break` closes it).
   */
  async subscribe<T = unknown>(pattern: string, options: SubscribeOptions<T> = {}): Promise<Subscription<T>> {
    this.require();
    const open: SubscribeOpen = {
      pattern,
      queueGroup: options.queue ?? "",
      durable: options.durable ?? "",
      start: toStartPosition(options.start),
      maxInFlight: options.maxInFlight ?? 0,
      ackWait: options.ackWaitSeconds !== undefined ? toDuration(options.ackWaitSeconds) : undefined,
      maxDeliveries: options.maxDeliveries ?? 0,
    };
    const openCall = (): SubscribeCall =>
      this.grpc.makeBidiStreamRequest(
        Broker.subscribe.path,
        Broker.subscribe.requestSerialize,
        decodeSubscribeResponse,
        this.metadata.clone(),
      );
    const reply = (replyTo: string, data: unknown, request: Message<unknown>): Promise<string> =>
      this.publish(replyTo, data, { type: `${request.type}.reply` });
    const sub = new Subscription<T>(openCall, open, reply, options.schema, options.maxBuffered);
    this.subscriptions.add(sub as Subscription<unknown>);
    const close = sub.close.bind(sub);
    sub.close = async () => {
      this.subscriptions.delete(sub as Subscription<unknown>);
      await close();
    };
    try {
      return await sub.start();
    } catch (err) {
      await sub.close();
      throw err;
    }
  }

  /**
   * Publish a request and wait for the first reply. Rejects with `NoResponders` when nobody
   * listens, `RequestTimeout` when nobody answers within `timeout` seconds (default 5).
   */
  async request<T = unknown>(
    subject: string,
    data: unknown,
    options: { timeout?: number; type?: string; schema?: Schema<T> } = {},
  ): Promise<Event<T>> {
    this.require();
    const timeout = options.timeout ?? 5;
    const event = toCloudEvent(data, { type: options.type ?? "lockgate.request", source: this.source, id: this.newId() });
    const response = await this.unary<Parameters<typeof Broker.request.requestSerialize>[0], RequestResponse>(
      Broker.request,
      { subject, event, timeout: toDuration(timeout) },
      timeout + 5,
    );
    return new Event<T>(response.event!, options.schema);
  }

  /** Read one stored event by its assigned id (`NotFound` if it is not there). */
  async getEvent<T = unknown>(id: string | bigint, options: { schema?: Schema<T> } = {}): Promise<StoredEvent<T>> {
    this.require();
    const response = await this.unary<{ id: string }, GetEventResponse>(Broker.getEvent, { id: String(id) });
    return new StoredEvent<T>(response.event!, options.schema);
  }

  /**
   * Stored events matching `pattern`, oldest first, fetched a page at a time.
   *
   * @example for await (const ev of c.queryEvents("orders.>", { since: new Date(Date.now() - 3600e3) })) console.log(ev.id, ev.data);
   */
  async *queryEvents<T = unknown>(pattern = ">", options: QueryOptions<T> = {}): AsyncGenerator<StoredEvent<T>> {
    this.require();
    const request: QueryEventsRequest = {
      pattern,
      startTime: options.since,
      endTime: options.until,
      afterId: options.afterId ?? "0",
      pageSize: options.pageSize ?? 100,
      pageToken: "",
      cloudeventId: options.cloudeventId ?? "",
    };
    let count = 0;
    for (;;) {
      const page = await this.unary<QueryEventsRequest, QueryEventsResponse>(Broker.queryEvents, request);
      for (const stored of page.events) {
        if (options.limit !== undefined && count >= options.limit) return;
        count += 1;
        yield new StoredEvent<T>(stored, options.schema);
      }
      // A wildcard page over a large log may be short, even empty, with a cursor.
      if (!page.nextPageToken) return;
      request.pageToken = page.nextPageToken;
    }
  }

  /**
   * Pull up to `maxEvents` deliveries of a durable, waiting up to `waitSeconds` for the first
   * (polling delivery). With `pattern` the durable is created when missing. Fetched messages
   * are pending until acked (`await msg.ack()`, sent in one call per turn of the event loop)
   * and redelivered after the ack wait otherwise.
   *
   * @example for (const msg of await c.fetch("billing", { pattern: "orders.>", waitSeconds: 5 })) await msg.ack();
   */
  async fetch<T = unknown>(
    durable: string,
    options: { maxEvents?: number; waitSeconds?: number; pattern?: string; start?: Start; schema?: Schema<T> } = {},
  ): Promise<Message<T>[]> {
    this.require();
    const wait = options.waitSeconds ?? 0;
    const request: FetchRequest = {
      durable,
      maxEvents: options.maxEvents ?? 100,
      wait: wait > 0 ? toDuration(wait) : undefined,
      pattern: options.pattern ?? "",
      start: toStartPosition(options.start),
    };
    // FetchResponse's deliveries share SubscribeResponse's field number and encoding.
    const fetch = { ...Broker.fetch, responseDeserialize: decodeSubscribeResponse };
    const response = await this.unary<FetchRequest, RawSubscribeResponse>(fetch, request, wait + 30);
    let acker = this.pullAckers.get(durable);
    if (acker === undefined) {
      const reply = (replyTo: string, data: unknown, req: Message<unknown>): Promise<string> =>
        this.publish(replyTo, data, { type: `${req.type}.reply` });
      acker = new PullAcker(durable, (d, o) => this.acknowledge(d, o), reply, (err) => this.emitWarning(err));
      this.pullAckers.set(durable, acker);
    }
    return response.deliveries.map((d) => new Message<T>(d, acker, options.schema));
  }

  /** Ack and nack deliveries of a durable by id, and wait for the broker's answer. */
  async acknowledge(durable: string, options: { ack?: string[]; nack?: string[]; nackDelaySeconds?: number }): Promise<void> {
    this.require();
    const request: AcknowledgeRequest = {
      durable,
      ackIds: options.ack ?? [],
      nackIds: options.nack ?? [],
      nackDelay: options.nackDelaySeconds ? toDuration(options.nackDelaySeconds) : undefined,
      termIds: [],
    };
    await this.unary<AcknowledgeRequest, unknown>(Broker.acknowledge, request);
  }

  private emitWarning(err: LockgateError): void {
    process.emitWarning(`acks were not sent: ${err.message}`, { code: "LOCKGATE_ACK_LOST" });
  }

  /** One unary call, retried on UNAVAILABLE with backoff for up to `connectTimeout`. */
  private async unary<Req, Res>(method: Unary<Req, Res>, request: Req, timeoutSeconds = 30): Promise<Res> {
    const backoff = new Backoff();
    const until = Date.now() + this.connectTimeout * 1000;
    for (;;) {
      try {
        return await new Promise<Res>((resolve, reject) => {
          this.grpc.makeUnaryRequest(
            method.path,
            method.requestSerialize,
            method.responseDeserialize,
            request,
            this.metadata.clone(),
            { deadline: Date.now() + timeoutSeconds * 1000 },
            (err, value) => (err ? reject(err) : resolve(value!)),
          );
        });
      } catch (err) {
        const e = err as grpc.ServiceError;
        if (e.code !== grpc.status.UNAVAILABLE || this.closed || Date.now() >= until) throw fromServiceError(e);
        await sleep(backoff.nextDelay());
      }
    }
  }

  /** Wait (up to 5 s) for unanswered publishes, close the subscriptions and the channel. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.publisher.close();
    this.closed = true;
    await Promise.all([...this.subscriptions].map((s) => s.close()));
    // Let the last writes (acks, stream ends) leave before the channel goes.
    await new Promise((r) => setImmediate(r));
    this.grpc.close();
  }
}
