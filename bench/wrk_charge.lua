-- wrk script of the HTTP bench (bench/http.py): one POST per request, each a unique charge.
--
-- Input (wrk arguments after `--`):
--   1 path           /v1/charges, or /trivial for the reference endpoint (same request)
--   2 api key        a `meter` key, sent as Authorization: Bearer
--   3 accounts       how many pre-funded accounts to spread over (>= 1)
--   4 account tag    accounts are "<tag>-%05d" (bench.workload.account_names)
--   5 tool           the tool to charge, quantity 1
--   6 nonce          unique per run, so no Idempotency-Key repeats across runs
--   7 threads        wrk's -t, so the threads spread over the accounts without overlap
--   8 method         POST (default), or GET: the same headers without a body (/healthz)
-- Each request: Idempotency-Key "<nonce>-<thread>-<counter>", unique within the run;
-- thread t's n-th request charges account (n * threads + t) % accounts.
-- Output: done() prints one line `WRK_JSON {...}`: requests, duration_us, the error counts
-- (connect, read, write, status = non-2xx/3xx answers, timeout) and latency in us.

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   path = args[1]
   accounts = tonumber(args[3])
   tag = args[4]
   tool = args[5]
   nonce = args[6]
   nthreads = tonumber(args[7]) or 1
   method = args[8] or "POST"
   assert(path and accounts and accounts >= 1 and tag and tool and nonce, "bad arguments")
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. args[2],
   }
   counter = 0
end

function request()
   counter = counter + 1
   local account = string.format("%s-%05d", tag, (counter * nthreads + id) % accounts)
   headers["Idempotency-Key"] = nonce .. "-" .. id .. "-" .. counter
   if method == "GET" then
      return wrk.format("GET", path, headers)
   end
   local body = '{"account_id":"' .. account .. '","tool":"' .. tool .. '","quantity":1}'
   return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,'
         .. '"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,'
         .. '"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,"mean_us":%.1f}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean))
end
