/**
 * A Server-Sent Events parser (the WHATWG "event stream" format), fed text as it arrives.
 *
 * The kit reads the stream with fetch rather than EventSource: fetch can send the account
 * token as a header (not in the URL, where proxies log it) and sees the status code, so a
 * 401 can ask for a fresh token instead of retrying blindly.
 */

export interface SseEvent {
  /** `event:` field; "message" when the server named none. */
  event: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  /** The last `id:` seen so far on the stream, as the spec's "last event ID buffer". */
  id: string;
}

export interface SseFeed {
  events: SseEvent[];
  /** The server's `retry:` in ms, when this chunk carried one. */
  retryMs?: number;
}

export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private event = "";
  private lastId = "";
  // A chunk that ends in "\r" may be the first half of a "\r\n" line ending.
  private pendingCr = false;

  feed(chunk: string): SseFeed {
    const out: SseFeed = { events: [] };
    let text = chunk;
    if (this.pendingCr && text.startsWith("\n")) text = text.slice(1);
    this.pendingCr = text.endsWith("\r");
    this.buffer += text;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() ?? "";
    for (const line of lines) this.line(line, out);
    return out;
  }

  private line(line: string, out: SseFeed): void {
    if (line === "") {
      this.dispatch(out);
      return;
    }
    if (line.startsWith(":")) return; // a comment: the server's keep-alive ping
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    else if (field === "retry" && /^[0-9]+$/.test(value)) out.retryMs = Number(value);
  }

  private dispatch(out: SseFeed): void {
    if (this.data.length > 0) {
      out.events.push({ event: this.event || "message", data: this.data.join("\n"), id: this.lastId });
    }
    this.data = [];
    this.event = "";
  }
}
