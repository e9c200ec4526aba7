--[[
  charge: take tool cost x quantity from a wallet, atomically, or nothing. One call carries
  one charge (sync client) or many charges of one bucket (the async client's auto-batching);
  each charge succeeds or fails on its own.
  Input:
    KEYS[1] catalog (bucket replica)   KEYS[2] journal (bucket)
    KEYS[3 + 4i .. 6 + 4i] per charge i: wallet (also holding the rate limit's state:
      includes/rate_limit), idempotency (record), record (charge record), events (bucket
      channel, per charge so the async client merges calls by concatenation)
    ARGV[1] now_ms (includes/clock)   ARGV[2] idempotency_ttl_s
    ARGV[3 + 9i .. 11 + 9i] per charge i: entry_id (= charge id; '' for a dry run: check
      only, includes/charge_dry, so a charge carries no flag of its own), account_id,
      credit_type (the client expects for the tool), tool, quantity (1..QUANTITY_MAX),
      fingerprint, idempotency_key, description, metadata (JSON)
  Publishes one balance event per wallet the call changed, its last state (includes/
  balance_event, charge_one charge_flush).
  Output: one reply per charge, in order:
    {0|1 replayed, entry_id, amount, balance, available, held, breakdown, rate_limit,
      rate_remaining, rate_reset_ms (the rate limit in force after this charge, includes/
      rate_limit rate_reply; the three left out when the call has none, and by a replay)}
    {2, '', amount, balance, available, held, '', rate_limit, rate_remaining, rate_reset_ms}
      a dry run that would succeed (the state now; the rate fields as above)
    {-1} wallet not loaded ({-1, amount} for a dry run)   {-2} catalog not loaded   {-3, tool} unknown tool
    {-4, tool} tool disabled {-5, credit_type} the tool's credit type differs
    {-6, balance, available, required} insufficient credits   {-7} idempotency key reused
    {-12, field} bad argument   {-13, amount} amount above CREDITS_MAX
    {-24, tool, limit, retry_after_ms, reset_ms} the rate limit in force is used up (the
      account's own for the tool, else the catalog's; limit 0: the account may not call it)
    {-21, now_ms, server_ms} the caller's clock is too far from the server's (every charge)
    {-23, account_id} the account is suspended (includes/account_status)
]]
--- @include "includes/common"
--- @include "includes/charge_dry"
--- @include "includes/rate_limit"
--- @include "includes/charge_one"

local n = (#KEYS - 2) / 4
if n < 1 or n > BATCH_CHARGES_MAX or n ~= math.floor(n) or #ARGV ~= 2 + 9 * n then
  return {{E_BAD_ARGUMENT, 'batch'}}
end
local now_arg, clock_err = clock_arg(ARGV[1])
if not now_arg then
  local refused = {}
  for i = 1, n do refused[i] = clock_err end
  return refused
end
local replies = {}
local cache = {tools = {}, wallets = {}, events = {}}
for i = 0, n - 1 do
  local kb, ab = 3 + 4 * i, 3 + 9 * i
  replies[i + 1] = charge_one({catalog = KEYS[1], journal = KEYS[2], wallet = KEYS[kb],
    idem = KEYS[kb + 1], record = KEYS[kb + 2], events = KEYS[kb + 3]}, now_arg, ARGV[2],
    {entry_id = ARGV[ab], account = ARGV[ab + 1], credit_type = ARGV[ab + 2],
    tool = ARGV[ab + 3], quantity = ARGV[ab + 4], fingerprint = ARGV[ab + 5],
    idempotency_key = ARGV[ab + 6], description = ARGV[ab + 7], metadata = ARGV[ab + 8]},
    cache)
end
charge_flush(cache)
return replies
