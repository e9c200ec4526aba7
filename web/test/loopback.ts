// A real HTTP server on loopback (node:http) playing creditmeter or the app's backend, and
// the frames api/sse.py writes: the kit's tests go over real sockets, as in a browser.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

let server: Server | null = null;

/** Serves `handler` (n counts requests from 1) until closeServer(); one server at a time. */
export async function serve(handler: Handler): Promise<{ base: string; requests: IncomingMessage[] }> {
  const requests: IncomingMessage[] = [];
  const created = createServer((req, res) => {
    requests.push(req);
    handler(req, res, requests.length);
  });
  server = created;
  await new Promise<void>((resolve) => created.listen(0, "127.0.0.1", resolve));
  return { base: `http://127.0.0.1:${(created.address() as AddressInfo).port}`, requests };
}

export async function closeServer(): Promise<void> {
  const closing = server;
  server = null;
  if (!closing) return;
  closing.closeAllConnections();
  await new Promise((resolve) => closing.close(resolve));
}

export function frame(creditType: string, available: number, held = 0, entryId: string | null = null): string {
  const data = { credit_type: creditType, available, held, balance: available + held, entry_id: entryId };
  return `event: balance\ndata: ${JSON.stringify(data)}\n\n`;
}

/** A 200 event stream asking for reconnects after 50 ms. */
export function openStream(res: ServerResponse): void {
  res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
  res.write("retry: 50\n\n");
}

export function problem(res: ServerResponse, status: number, slug: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "Content-Type": "application/problem+json", ...headers });
  res.end(JSON.stringify({ type: `urn:creditmeter:problem:${slug}`, title: slug, status, detail: `${slug} detail` }));
}

export function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

/** An account token shaped as api/tokens.py makes them (the signature is not checked here). */
export function token(account: string, expiresAtMs: number, tag = "sig"): string {
  const body = Buffer.from(JSON.stringify({ a: account, e: expiresAtMs })).toString("base64url");
  return `cmt_${body}.${tag}`;
}

/** Polls `read` until it returns a value. */
export async function until<T>(read: () => T | undefined, what: string, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
