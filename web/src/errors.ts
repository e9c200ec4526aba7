/** An HTTP error answered as RFC 9457 problem+json (every creditmeter error is one). */
export class CreditsError extends Error {
  readonly status: number;
  /** The problem's `type` (`urn:creditmeter:problem:<slug>`), when the body had one. */
  readonly type: string | null;
  readonly problem: Record<string, unknown>;
  /** The answer's Retry-After in seconds (429, 503), when it had one. */
  readonly retryAfterS: number | null;

  constructor(
    status: number,
    problem: Record<string, unknown>,
    fallback: string,
    retryAfterS: number | null = null,
  ) {
    const detail = typeof problem.detail === "string" ? problem.detail : fallback;
    super(detail);
    this.name = "CreditsError";
    this.status = status;
    this.type = typeof problem.type === "string" ? problem.type : null;
    this.problem = problem;
    this.retryAfterS = retryAfterS;
  }

  /** The slug after `urn:creditmeter:problem:`, e.g. "below-minimum". */
  get slug(): string | null {
    return this.type?.split(":").pop() ?? null;
  }
}

/** The response's problem as a CreditsError (a body that is not JSON keeps the status). */
export async function errorFrom(res: Response): Promise<CreditsError> {
  let problem: Record<string, unknown> = {};
  try {
    const body: unknown = await res.json();
    if (typeof body === "object" && body !== null) problem = body as Record<string, unknown>;
  } catch {
    problem = {};
  }
  const retryAfter = res.headers.get("Retry-After");
  const retryAfterS = retryAfter !== null && /^[0-9]+$/.test(retryAfter) ? Number(retryAfter) : null;
  return new CreditsError(res.status, problem, `HTTP ${res.status} from ${res.url || "the server"}`, retryAfterS);
}
