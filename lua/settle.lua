--[[
  settle: end a hold by charging any amount; below the hold the rest is released, above it
  only if the account covers the difference (else nothing changes and the hold stays).
  Input:
    KEYS[1] hold (record)   KEYS[2] wallet   KEYS[3] idempotency (record)
    KEYS[4] journal (bucket)   KEYS[5] record (charge record, for refunds of the charge)
    KEYS[6] events (bucket channel)
    ARGV[1] now_ms (includes/clock)
    ARGV[2] idempotency_ttl_s   ARGV[3] hold_id   ARGV[4] entry_id (= charge id)
    ARGV[5] account_id   ARGV[6] credit_type   ARGV[7] amount ('' = the hold's amount)
    ARGV[8] fingerprint   ARGV[9] idempotency_key   ARGV[10] description
    ARGV[11] metadata (JSON)
  Publishes the wallet's new state on the events channel (includes/balance_event).
  Output:
    {0|1 replayed, entry_id, charged, released, balance, available, held}
    {-1} wallet not loaded   {-6, balance, available, required}   {-7} idempotency key reused
    {-8} hold not found   {-9, status} hold not active   {-12, field} bad argument
]]
--- @include "includes/common"

local now_arg, clock_err = clock_arg(ARGV[1])
if not now_arg then return clock_err end
local now, hold_id, entry_id, account, credit_type = now_arg, ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local bad = check_common(now, account, credit_type, ARGV[8], ARGV[9], ARGV[2])
if bad then return bad end
if not valid_id(hold_id) then return {E_BAD_ARGUMENT, 'hold_id'} end
if not valid_id(entry_id) then return {E_BAD_ARGUMENT, 'entry_id'} end
local wanted = nil
if ARGV[7] ~= '' then
  wanted = parse_uint(ARGV[7], CREDITS_MAX)
  if not wanted then return {E_BAD_ARGUMENT, 'amount'} end
end
if not valid_text(ARGV[10], DESCRIPTION_LEN_MAX) then return {E_BAD_ARGUMENT, 'description'} end
if not valid_metadata(ARGV[11]) then return {E_BAD_ARGUMENT, 'metadata'} end

local replay = idem_check(KEYS[3], ARGV[8])
if replay then return replay end
local rec, err = hold_record(KEYS[1], account, credit_type)
if err then return err end
local w = wallet_load(KEYS[2])
if not w then return {E_NOT_LOADED} end
local ctx = {journal = KEYS[4], events = KEYS[6], account = account, credit_type = credit_type,
  now = tonumber(now)}
wallet_expire(w, ctx)
local h = hold_in_wallet(w, KEYS[1], hold_id)
if not h then
  wallet_save_refused(w, ctx)
  return {E_HOLD_NOT_ACTIVE, 'expired'}
end
local charged = wanted or h.amount
local before = wallet_available(w)
local available_without_hold = wallet_available(w) + h.amount
if available_without_hold - charged < -w.od then
  wallet_save_refused(w, ctx)
  return {E_INSUFFICIENT, wallet_balance(w), available_without_hold, charged}
end

hold_remove(w, h)
local parts = wallet_burn(w, charged)
wallet_save(w)
local balance = wallet_balance(w)
local released = math.max(h.amount - charged, 0)
redis.call('HSET', KEYS[1], 's', 'settled', 'c', int_str(charged), 'e', entry_id)
if charged > 0 then
  journal_add(ctx, entry_id, 'charge', -charged, balance, {'tool', rec.tool, 'hold', hold_id,
    'g', breakdown_str(parts), 'ik', ARGV[9], 'desc', ARGV[10], 'meta', ARGV[11],
    'al', crossing_flags(w, before, balance - w.held)})
  charge_record_plain_write(KEYS[5], {account = account, credit_type = credit_type,
    tool = rec.tool, charged = charged, refunded = 0, parts = charge_parts(parts)})
end
journal_add(ctx, hold_id, 'hold_settle', charged, balance, {'hold', hold_id, 'e', entry_id})
if charged > 0 then
  balance_event(ctx, balance, w.held, entry_id, 'charge')
else
  balance_event(ctx, balance, w.held, hold_id, 'hold_settle')
end
return idem_store(KEYS[3], ARGV[8], ARGV[2],
  {E_OK, entry_id, charged, released, balance, balance - w.held, w.held})
