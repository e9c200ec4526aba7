--[[
  clawback: take back purchased credits after a refund or a dispute (SPEC §9). The caller
  gives the running total that should have been taken back by now; the script takes only the
  difference from what its record says was taken, so redelivered or reordered events never
  take twice. Credits come from the purchase's own grant first, then in burn order, and what
  the wallet cannot cover becomes debt (no overdraft check: the money is already gone).
  Input:
    KEYS[1] wallet   KEYS[2] clawed (taken-so-far record)   KEYS[3] journal (bucket)
    KEYS[4] events (bucket channel)
    ARGV[1] now_ms (includes/clock)   ARGV[2] entry_id   ARGV[3] account_id   ARGV[4] credit_type
    ARGV[5] target (total, credits)   ARGV[6] known (total SQL knows was taken: a floor after
    a Redis loss)   ARGV[7] grant_id (to take from first; '' = none)   ARGV[8] reference_id
    ARGV[9] reason   ARGV[10] metadata (JSON)
  Publishes the wallet's new state on the events channel (includes/balance_event).
  Output:
    {0, entry_id ('' if nothing was due), amount (taken now), total (taken so far), balance,
      available, held}
    {-1} wallet not loaded   {-12, field} bad argument
]]
--- @include "includes/common"

local now_arg, clock_err = clock_arg(ARGV[1])
if not now_arg then return clock_err end
local now, entry_id, account, credit_type = now_arg, ARGV[2], ARGV[3], ARGV[4]
if not parse_uint(now, CREDITS_MAX) then return {E_BAD_ARGUMENT, 'now_ms'} end
if not valid_account(account) then return {E_BAD_ARGUMENT, 'account_id'} end
if not valid_credit_type(credit_type) then return {E_BAD_ARGUMENT, 'credit_type'} end
if not valid_id(entry_id) then return {E_BAD_ARGUMENT, 'entry_id'} end
local target = parse_uint(ARGV[5], CREDITS_MAX)
if not target then return {E_BAD_ARGUMENT, 'target'} end
local known = parse_uint(ARGV[6], CREDITS_MAX)
if not known then return {E_BAD_ARGUMENT, 'known'} end
if ARGV[7] ~= '' and not valid_id(ARGV[7]) then return {E_BAD_ARGUMENT, 'grant_id'} end
if #ARGV[8] == 0 or not valid_text(ARGV[8], REFERENCE_LEN_MAX) then
  return {E_BAD_ARGUMENT, 'reference_id'}
end
if not valid_text(ARGV[9], DESCRIPTION_LEN_MAX) then return {E_BAD_ARGUMENT, 'reason'} end
if not valid_metadata(ARGV[10]) then return {E_BAD_ARGUMENT, 'metadata'} end

local w = wallet_load(KEYS[1])
if not w then return {E_NOT_LOADED} end
local ctx = {journal = KEYS[3], events = KEYS[4], account = account, credit_type = credit_type,
  now = tonumber(now)}
wallet_expire(w, ctx)
local before = wallet_available(w)
local taken = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), known)
local due = target - taken
if due <= 0 then
  wallet_save_refused(w, ctx)
  local balance = wallet_balance(w)
  return {E_OK, '', 0, taken, balance, balance - w.held, w.held}
end

local parts = {}
local own = ARGV[7] ~= '' and wallet_find_grant(w, ARGV[7])
local left = due
if own and own.rem > 0 then
  local take = math.min(own.rem, left)
  own.rem = own.rem - take
  left = left - take
  wallet_set_grant(w, own)
  parts[1] = {id = own.id, delta = -take, after = own.rem}
end
if left > 0 then
  for _, p in ipairs(wallet_burn(w, left)) do parts[#parts + 1] = p end
end
wallet_save(w)
redis.call('SET', KEYS[2], int_str(target), 'EX', CLAWBACK_RECORD_TTL_S)
local balance = wallet_balance(w)
journal_add(ctx, entry_id, 'clawback', -due, balance, {'g', breakdown_str(parts),
  'src', 'stripe', 'ref', ARGV[8], 'desc', ARGV[9], 'meta', ARGV[10],
  'al', crossing_flags(w, before, balance - w.held)})
balance_event(ctx, balance, w.held, entry_id, 'clawback')
return {E_OK, entry_id, due, target, balance, balance - w.held, w.held}
