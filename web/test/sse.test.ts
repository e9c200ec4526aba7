import { describe, expect, it } from "vitest";

import { SseParser, type SseEvent } from "../src/sse";

// Two frames as api/sse.py writes them: the retry, a ping, a snapshot and a change.
const STREAM =
  "retry: 2000\n\n" +
  ": ping\n\n" +
  'event: balance\ndata: {"credit_type":"credits","available":100,"held":0,"balance":100,"entry_id":null}\n\n' +
  'event: balance\ndata: {"credit_type":"credits","available":90,"held":0,"balance":90,"entry_id":"e1"}\n\n';

function feedAll(parser: SseParser, chunks: string[]): { events: SseEvent[]; retryMs?: number } {
  const events: SseEvent[] = [];
  let retryMs: number | undefined;
  for (const chunk of chunks) {
    const feed = parser.feed(chunk);
    events.push(...feed.events);
    retryMs = feed.retryMs ?? retryMs;
  }
  return { events, retryMs };
}

describe("SseParser", () => {
  it("reads the API's frames: retry, ping comment ignored, two balance events", () => {
    const { events, retryMs } = feedAll(new SseParser(), [STREAM]);
    expect(retryMs).toBe(2000);
    expect(events.map((e) => e.event)).toEqual(["balance", "balance"]);
    expect(JSON.parse(events[1]!.data).available).toBe(90);
  });

  it("gives the same events however the stream is cut into chunks", () => {
    const whole = feedAll(new SseParser(), [STREAM]).events;
    for (let cut = 1; cut < STREAM.length; cut += 1) {
      const parts = feedAll(new SseParser(), [STREAM.slice(0, cut), STREAM.slice(cut)]).events;
      expect(parts, `cut at ${cut}`).toEqual(whole);
    }
    const byChar = feedAll(new SseParser(), [...STREAM]).events;
    expect(byChar).toEqual(whole);
  });

  it("treats CRLF split between chunks as one line ending, and bare CR as one too", () => {
    const crlf = feedAll(new SseParser(), ["event: balance\r", "\ndata: a\r\n\r", "\n"]).events;
    expect(crlf).toEqual([{ event: "balance", data: "a", id: "" }]);
    const cr = feedAll(new SseParser(), ["data: b\r\r"]).events;
    expect(cr).toEqual([{ event: "message", data: "b", id: "" }]);
  });

  it("joins data lines with newlines, strips one leading space, and keeps the last id", () => {
    const { events } = feedAll(new SseParser(), ["id: 7\ndata:  two spaces\ndata:x\n\ndata: y\n\n"]);
    expect(events).toEqual([
      { event: "message", data: " two spaces\nx", id: "7" },
      { event: "message", data: "y", id: "7" },
    ]);
  });

  it("dispatches nothing for a frame without data, and ignores a retry that is not digits", () => {
    const { events, retryMs } = feedAll(new SseParser(), ["event: balance\n\nretry: 1e3\n\n"]);
    expect(events).toEqual([]);
    expect(retryMs).toBeUndefined();
  });

  it("holds an unfinished frame until its blank line arrives", () => {
    const parser = new SseParser();
    expect(parser.feed("data: half").events).toEqual([]);
    expect(parser.feed("\n").events).toEqual([]);
    expect(parser.feed("\n").events).toEqual([{ event: "message", data: "half", id: "" }]);
  });
});
