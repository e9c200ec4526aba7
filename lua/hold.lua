--[[
  hold: reserve credits for a long generation; available = balance - held.
  Input:
    KEYS[1] wallet   KEYS[2] idempotency (record)   KEYS[3] hold (record)
    KEYS[4] catalog (bucket replica)   KEYS[5] journal (bucket)   KEYS[6] due (bucket due set)
    KEYS[7] events (bucket channel)
    ARGV[1] now_ms (includes/clock)
    ARGV[2] idempotency_ttl_s   ARGV[3] hold_id   ARGV[4] account_id
    ARGV[5] credit_type (the client expects)   ARGV[6] tool   ARGV[7] quantity
    ARGV[8] amount ('' = tool cost x quantity)   ARGV[9] ttl_s (1..HOLD_TTL_S_MAX)
    ARGV[10] fingerprint   ARGV[11] idempotency_key   ARGV[12] due_member
  Publishes the wallet's new state on the events channel (includes/balance_event).
  Output:
    {0|1 replayed, hold_id, amount, expires_ms, balance, available, held}
    {-1} wallet not loaded   {-2} catalog not loaded   {-3, tool}   {-4, tool}   {-5, credit_type}
    {-6, balance, available, required}   {-7} idempotency key reused   {-12, field} bad argument
    {-13, amount} amount above CREDITS_MAX   {-14} too many open holds on the wallet
    {-23, account_id} the account is suspended (includes/account_status)
]]
--- @include "includes/common"

local now_arg, clock_err = clock_arg(ARGV[1])
if not now_arg then return clock_err end
local now, hold_id, account, credit_type = now_arg, ARGV[3], ARGV[4], ARGV[5]
local bad = check_common(now, account, credit_type, ARGV[10], ARGV[11], ARGV[2])
if bad then return bad end
if not valid_id(hold_id) then return {E_BAD_ARGUMENT, 'hold_id'} end
if not valid_tool(ARGV[6]) then return {E_BAD_ARGUMENT, 'tool'} end
local qty = parse_uint(ARGV[7], QUANTITY_MAX)
if not qty or qty < 1 then return {E_BAD_ARGUMENT, 'quantity'} end
local fixed_amount = nil
if ARGV[8] ~= '' then
  fixed_amount = parse_uint(ARGV[8], CREDITS_MAX)
  if not fixed_amount then return {E_BAD_ARGUMENT, 'amount'} end
end
local ttl_s = parse_uint(ARGV[9], HOLD_TTL_S_MAX)
if not ttl_s or ttl_s < 1 then return {E_BAD_ARGUMENT, 'ttl_seconds'} end

local replay = idem_check(KEYS[2], ARGV[10])
if replay then return replay end
local cost, err = tool_lookup(KEYS[4], ARGV[6], credit_type)
if err then return err end
local amount = fixed_amount or cost * qty
if amount > CREDITS_MAX then return {E_AMOUNT_OVERFLOW, string.format('%.0f', amount)} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {E_BAD_ARGUMENT, 'hold_id'} end
local w = wallet_load(KEYS[1])
if not w then return {E_NOT_LOADED} end
local refused = account_refusal(w, account)
if refused then return refused end

local ctx = {journal = KEYS[5], events = KEYS[7], account = account, credit_type = credit_type,
  now = tonumber(now)}
wallet_expire(w, ctx)
if #w.holds >= HOLDS_PER_WALLET_MAX then
  wallet_save_refused(w, ctx)
  return {E_LIMIT, 'holds'}
end
local available = wallet_available(w)
if available - amount < -w.od then
  wallet_save_refused(w, ctx)
  return {E_INSUFFICIENT, wallet_balance(w), available, amount}
end
local expires_ms = ctx.now + ttl_s * 1000
w.sets['h:' .. hold_id] = int_str(amount) .. '|' .. int_str(expires_ms)
w.held = w.held + amount
wallet_save(w)
redis.call('HSET', KEYS[3], 'a', account, 't', credit_type, 'tool', ARGV[6], 'm', int_str(amount),
  'x', int_str(expires_ms), 's', 'active')
redis.call('EXPIRE', KEYS[3], ttl_s + HOLD_RECORD_TTL_S)  -- relative: immune to clock skew
due_mark(KEYS[6], ARGV[12], expires_ms)
local balance = wallet_balance(w)
journal_add(ctx, hold_id, 'hold_open', amount, balance, {'tool', ARGV[6], 'q', ARGV[7],
  'x', int_str(expires_ms), 'hold', hold_id, 'ik', ARGV[11],
  'al', crossing_flags(w, available, available - amount)})
balance_event(ctx, balance, w.held, hold_id, 'hold_open')
return idem_store(KEYS[2], ARGV[10], ARGV[2],
  {E_OK, hold_id, amount, expires_ms, balance, available - amount, w.held})
