/** How the client speaks TLS: the options, the target's scheme, and a probe handshake that
 * names why the broker refused one (as the Python client's `clients/_tls.py` diagnoses). */
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { ConnectionOptions, connect as tlsConnect } from "node:tls";
import { InvalidArgument, TLSError } from "./errors";

/** TLS to the broker: the CA that signed its certificate (default: the system's), and a
 * client certificate and key for mTLS. `serverName` checks the certificate against that name. */
export interface TLSOptions {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  serverName?: string;
}

export function splitTarget(target: string): { address: string; tls: boolean } {
  if (target.startsWith("grpcs://")) return { address: target.slice(8), tls: true };
  if (target.startsWith("grpc://")) return { address: target.slice(7), tls: false };
  return { address: target, tls: false };
}

export function readPem(path: string | undefined, what: string): Buffer | null {
  if (!path) return null;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new InvalidArgument(`cannot read the TLS ${what} ${path}: ${(err as Error).message}`, {
      reason: "INVALID_CONFIG",
      hint: "check the paths of caFile / certFile / keyFile",
    });
  }
}

/** Why a TLS handshake with `address` fails, as the broker's TLS listener answers it (the
 * certificate it refused, a client certificate it wanted), or undefined when it succeeds. */
export function tlsHandshakeError(address: string, options: TLSOptions): Promise<TLSError | undefined> {
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon).replace(/^\[|\]$/g, "");
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const done = (err: Error | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(
        err === undefined
          ? undefined
          : new TLSError(`the TLS handshake with ${address} failed: ${err.message}`, {
              hint: "check that the broker serves TLS, that caFile signed its certificate, and the client certificate and key",
            }),
      );
    };
    const connectOptions: ConnectionOptions = { host, port: Number(address.slice(colon + 1)), ALPNProtocols: ["h2"] };
    const name = options.serverName ?? (isIP(host) ? undefined : host);
    if (name !== undefined) connectOptions.servername = name;
    if (options.caFile) connectOptions.ca = readPem(options.caFile, "CA file")!;
    if (options.certFile && options.keyFile) {
      connectOptions.cert = readPem(options.certFile, "certificate file")!;
      connectOptions.key = readPem(options.keyFile, "key file")!;
    }
    const socket = tlsConnect(connectOptions);
    // TLS 1.3: the broker checks the client certificate after the client's handshake is done,
    // so a refusal is a close (or an alert) right after it, where a served HTTP/2 connection
    // sends its SETTINGS at once.
    let secure = false;
    socket.once("secureConnect", () => {
      secure = true;
      timer = setTimeout(() => done(undefined), 1000);
    });
    socket.once("data", () => done(undefined));
    socket.once("error", (err) => (isTlsError(err) ? done(err) : done(undefined)));
    socket.once("close", () =>
      done(secure ? new Error("the broker closed the connection after the handshake: it wants a client certificate (certFile, keyFile) that it trusts") : undefined),
    );
  });
}

function isTlsError(err: Error & { code?: string }): boolean {
  const code = err.code ?? "";
  return code.startsWith("ERR_SSL") || code.startsWith("ERR_TLS") || /CERT|SELF_SIGNED|UNABLE_TO/.test(code) || /SSL|TLS|certificate/i.test(err.message);
}

