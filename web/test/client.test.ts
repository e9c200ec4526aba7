// CreditsClient against a real HTTP server on loopback, played by node:http: the stream,
// the reconnects and the token refreshes go over real sockets, as in a browser.
import { afterEach, describe, expect, it } from "vitest";

import { CreditsClient, CreditsError } from "../src/index";
import type { Balances, StreamStatus } from "../src/index";
import { closeServer, frame, openStream, problem, serve, token, until } from "./loopback";

const stops: Array<() => void> = [];

afterEach(async () => {
  stops.splice(0).forEach((stop) => stop());
  await closeServer();
});

const FAST = { baseMs: 20, maxMs: 200 };
const LATER = Date.now() + 3_600_000;

describe("CreditsClient.subscribe", () => {
  it("shows the snapshot, then each change, per credit type, from the account's events route", async () => {
    const { base, requests } = await serve((req, res) => {
      openStream(res);
      res.write(frame("credits", 100) + frame("video_seconds", 60));
      setTimeout(() => res.write(": ping\n\n" + frame("credits", 90, 0, "e1")), 20);
    });
    const seen: Balances[] = [];
    const client = new CreditsClient({ accountId: "user 1", token: token("user 1", LATER), baseUrl: base });
    stops.push(client.subscribe((b) => seen.push(b)));
    const last = await until(() => (seen.at(-1)?.credits?.available === 90 ? seen.at(-1) : undefined), "the change");
    expect(last).toEqual({
      credits: { creditType: "credits", available: 90, held: 0, balance: 90 },
      video_seconds: { creditType: "video_seconds", available: 60, held: 0, balance: 60 },
    });
    expect(requests[0]!.url).toBe("/v1/accounts/user%201/events");
    expect(requests[0]!.headers.authorization).toBe(`Bearer ${token("user 1", LATER)}`);
  });

  it("skips a frame whose data is not a balance, without losing the next one", async () => {
    const { base } = await serve((req, res) => {
      openStream(res);
      res.write('event: balance\ndata: {"credit_type":"credits","available":"lots"}\n\n' + frame("credits", 7));
    });
    const seen: Balances[] = [];
    const client = new CreditsClient({ accountId: "u", token: "t", baseUrl: base });
    stops.push(client.subscribe((b) => seen.push(b)));
    await until(() => seen.at(-1), "the good frame");
    expect(seen).toEqual([{ credits: { creditType: "credits", available: 7, held: 0, balance: 7 } }]);
  });

  it("reconnects with growing backoff while the server fails, and starts over once events flowed", async () => {
    // Three failures, a stream that delivers and ends, one more failure, then a stream.
    const { base } = await serve((req, res, n) => {
      if (n <= 3 || n === 5) return problem(res, 502, "bad-gateway");
      openStream(res); // retry: 50
      if (n === 4) res.end(frame("credits", 5));
      else res.write(frame("credits", 4));
    });
    const waits: Array<[StreamStatus, number | undefined]> = [];
    const seen: Balances[] = [];
    const client = new CreditsClient({ accountId: "u", token: "t", baseUrl: base, backoff: FAST, random: () => 1 });
    stops.push(
      client.subscribe((b) => seen.push(b), {
        onStatus: (s, _e, retryInMs) => waits.push([s, retryInMs]),
      }),
    );
    await until(() => (seen.at(-1)?.credits?.available === 4 ? true : undefined), "the last stream");
    // 20, 40, 80 ms (doubling, jitter at its top), the stream's own retry after its clean
    // end, then the base again: the failures before a delivering stream no longer count.
    expect(waits.filter(([s]) => s === "reconnecting").map(([, ms]) => ms)).toEqual([20, 40, 80, 50, 20]);
    expect(waits.at(-1)).toEqual(["open", undefined]);
  });

  it("waits what a 429 or 503 says in Retry-After rather than its own backoff", async () => {
    const { base } = await serve((req, res, n) => {
      if (n === 1) return problem(res, 429, "too-many-event-streams", { "Retry-After": "1" });
      openStream(res);
      res.write(frame("credits", 1));
    });
    const waits: number[] = [];
    const seen: Balances[] = [];
    const client = new CreditsClient({ accountId: "u", token: "t", baseUrl: base, backoff: FAST });
    stops.push(
      client.subscribe((b) => seen.push(b), {
        onStatus: (s, _e, retryInMs) => (retryInMs === undefined ? undefined : waits.push(retryInMs)),
      }),
    );
    await until(() => seen.at(-1), "the stream after the 429");
    expect(waits).toEqual([1000]);
  });

  it("comes back after the server ends the stream, waiting the stream's retry", async () => {
    const { base } = await serve((req, res, n) => {
      openStream(res);
      res.end(frame("credits", 100 - n));
    });
    const seen: Balances[] = [];
    const client = new CreditsClient({ accountId: "u", token: "t", baseUrl: base });
    stops.push(client.subscribe((b) => seen.push(b)));
    await until(() => (seen.length >= 3 ? true : undefined), "two reconnects");
    expect(seen.map((b) => b.credits!.available).slice(0, 3)).toEqual([99, 98, 97]);
  });

  it("on 401 asks onTokenExpired for a fresh token and connects with it", async () => {
    const fresh = token("u", LATER, "fresh");
    const { base, requests } = await serve((req, res) => {
      if (req.headers.authorization !== `Bearer ${fresh}`) return problem(res, 401, "unauthorized");
      openStream(res);
      res.write(frame("credits", 42));
    });
    let refreshes = 0;
    const seen: Balances[] = [];
    const client = new CreditsClient({
      accountId: "u",
      token: token("u", LATER, "revoked"),
      baseUrl: base,
      onTokenExpired: async () => {
        refreshes += 1;
        return fresh;
      },
    });
    stops.push(client.subscribe((b) => seen.push(b)));
    await until(() => seen.at(-1), "the event");
    expect(refreshes).toBe(1);
    expect(requests.map((r) => r.headers.authorization)).toEqual([
      `Bearer ${token("u", LATER, "revoked")}`,
      `Bearer ${fresh}`,
    ]);
  });

  it("backs off before asking again when the fresh token is refused too", async () => {
    const { base } = await serve((req, res) => problem(res, 401, "unauthorized"));
    let refreshes = 0;
    const waits: number[] = [];
    const client = new CreditsClient({
      accountId: "u",
      token: "t0",
      baseUrl: base,
      backoff: FAST,
      random: () => 1,
      onTokenExpired: async () => `t${(refreshes += 1)}`,
    });
    stops.push(
      client.subscribe(() => undefined, {
        onStatus: (s, _e, retryInMs) => (retryInMs === undefined ? undefined : waits.push(retryInMs)),
      }),
    );
    await until(() => (refreshes >= 3 ? true : undefined), "three refreshes");
    // t0 refused -> t1 refused -> wait 20 -> t2 refused -> wait 40 -> t3 ...
    expect(waits.slice(0, 2)).toEqual([20, 40]);
    expect(refreshes - waits.length).toBeLessThanOrEqual(1);
  });

  it("refreshes a token about to expire before connecting, so the server never refuses it", async () => {
    const fresh = token("u", LATER, "fresh");
    const { base, requests } = await serve((req, res) => {
      openStream(res);
      res.write(frame("credits", 1));
    });
    const seen: Balances[] = [];
    const client = new CreditsClient({
      accountId: "u",
      token: token("u", Date.now() + 2_000),
      baseUrl: base,
      onTokenExpired: async () => fresh,
    });
    stops.push(client.subscribe((b) => seen.push(b)));
    await until(() => seen.at(-1), "the event");
    expect(requests.map((r) => r.headers.authorization)).toEqual([`Bearer ${fresh}`]);
  });

  it("sends a token given with setToken at the next connection", async () => {
    const { base, requests } = await serve((req, res) => {
      openStream(res);
      res.end(frame("credits", requests.length));
    });
    const seen: Balances[] = [];
    const client = new CreditsClient({ accountId: "u", token: "first", baseUrl: base });
    stops.push(
      client.subscribe((b) => {
        seen.push(b);
        client.setToken("second");
      }),
    );
    await until(() => (seen.length >= 2 ? true : undefined), "a reconnect");
    expect(requests.slice(0, 2).map((r) => r.headers.authorization)).toEqual(["Bearer first", "Bearer second"]);
  });

  it("stops for good on 403 (a token of another account): status failed, one request", async () => {
    const { base, requests } = await serve((req, res) => problem(res, 403, "forbidden"));
    const statuses: Array<[StreamStatus, unknown]> = [];
    const client = new CreditsClient({ accountId: "u", token: "t", baseUrl: base, backoff: FAST });
    stops.push(client.subscribe(() => undefined, { onStatus: (s, e) => statuses.push([s, e]) }));
    const [, error] = await until(() => statuses.find(([s]) => s === "failed"), "failed");
    await new Promise((r) => setTimeout(r, 100));
    expect(requests).toHaveLength(1);
    expect(error).toBeInstanceOf(CreditsError);
    expect((error as CreditsError).slug).toBe("forbidden");
  });

  it("closes the connection when unsubscribed, and reports closed", async () => {
    let closed = false;
    const { base } = await serve((req, res) => {
      res.on("close", () => {
        closed = true;
      });
      openStream(res);
      res.write(frame("credits", 3));
    });
    const statuses: StreamStatus[] = [];
    const seen: Balances[] = [];
    const client = new CreditsClient({ accountId: "u", token: "t", baseUrl: base });
    const stop = client.subscribe((b) => seen.push(b), { onStatus: (s) => statuses.push(s) });
    await until(() => seen.at(-1), "the event");
    stop();
    await until(() => (closed ? true : undefined), "the server to see the close");
    await until(() => (statuses.at(-1) === "closed" ? true : undefined), "closed");
  });
});

describe("CreditsClient.balance, quote and checkout", () => {
  it("reads the balance with the token, refreshing it once on 401", async () => {
    const { base, requests } = await serve((req, res) => {
      if (req.headers.authorization !== "Bearer new") return problem(res, 401, "unauthorized");
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ account_id: "u", balances: [{ credit_type: "credits", available: 8, held: 2, balance: 10 }], grants: [] }));
    });
    const client = new CreditsClient({ accountId: "u", token: "old", baseUrl: base, onTokenExpired: async () => "new" });
    expect(await client.balance()).toEqual({ credits: { creditType: "credits", available: 8, held: 2, balance: 10 } });
    expect(requests.map((r) => r.url)).toEqual(["/v1/accounts/u/balance", "/v1/accounts/u/balance"]);
  });

  it("asks the app's backend for the quote and passes on its problem as a CreditsError", async () => {
    const { base, requests } = await serve((req, res) => {
      if (req.url!.includes("credits=9")) return problem(res, 422, "below-minimum");
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ credit_type: "credits", credits: 1500, amount: 11199, discount_percent: 20 }));
    });
    const client = new CreditsClient({ accountId: "", backendUrl: base });
    expect((await client.quote("credits", 1500)).amount).toBe(11199);
    expect(requests[0]!.url).toBe("/api/credits/quote?credit_type=credits&credits=1500");
    const error = await client.quote("credits", 9).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CreditsError);
    expect((error as CreditsError).status).toBe(422);
    expect((error as CreditsError).slug).toBe("below-minimum");
  });

  it("posts the checkout to the app's backend and navigates to the session's URL", async () => {
    let body = "";
    const { base } = await serve((req, res) => {
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        res.writeHead(201, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ id: "cs_1", url: "https://checkout.stripe.com/c/pay/cs_1", amount: 500, currency: "usd", mode: "payment" }));
      });
    });
    const visited: string[] = [];
    const client = new CreditsClient({ accountId: "", backendUrl: base, checkoutPath: "/buy" });
    const session = await client.checkout({ creditType: "credits", credits: 50 }, { navigate: (u) => visited.push(u) });
    expect(JSON.parse(body)).toEqual({ credit_type: "credits", credits: 50 });
    expect(session.id).toBe("cs_1");
    expect(visited).toEqual(["https://checkout.stripe.com/c/pay/cs_1"]);
  });

  it("refuses to navigate when the backend answers without a session URL", async () => {
    const { base } = await serve((req, res) => {
      res.writeHead(201, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ url: "javascript:alert(1)" }));
    });
    const visited: string[] = [];
    const client = new CreditsClient({ accountId: "", backendUrl: base });
    const error = await client.checkout({ packId: "credits-small" }, { navigate: (u) => visited.push(u) }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CreditsError);
    expect(visited).toEqual([]);
  });
});
