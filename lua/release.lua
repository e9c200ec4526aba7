--[[
  release: end a hold without charging; its credits are available again.
  Input:
    KEYS[1] hold (record)   KEYS[2] wallet   KEYS[3] idempotency (record)
    KEYS[4] journal (bucket)   KEYS[5] events (bucket channel)
    ARGV[1] now_ms (includes/clock)
    ARGV[2] idempotency_ttl_s   ARGV[3] hold_id   ARGV[4] account_id
    ARGV[5] credit_type   ARGV[6] fingerprint   ARGV[7] idempotency_key
  Publishes the wallet's new state on the events channel (includes/balance_event).
  Output:
    {0|1 replayed, released, balance, available, held}
    {-1} wallet not loaded   {-7} idempotency key reused   {-8} hold not found
    {-9, status} hold not active   {-12, field} bad argument
]]
--- @include "includes/common"

local now_arg, clock_err = clock_arg(ARGV[1])
if not now_arg then return clock_err end
local now, hold_id, account, credit_type = now_arg, ARGV[3], ARGV[4], ARGV[5]
local bad = check_common(now, account, credit_type, ARGV[6], ARGV[7], ARGV[2])
if bad then return bad end
if not valid_id(hold_id) then return {E_BAD_ARGUMENT, 'hold_id'} end

local replay = idem_check(KEYS[3], ARGV[6])
if replay then return replay end
local _, err = hold_record(KEYS[1], account, credit_type)
if err then return err end
local w = wallet_load(KEYS[2])
if not w then return {E_NOT_LOADED} end
local ctx = {journal = KEYS[4], events = KEYS[5], account = account, credit_type = credit_type,
  now = tonumber(now)}
wallet_expire(w, ctx)
local h = hold_in_wallet(w, KEYS[1], hold_id)
if not h then
  wallet_save_refused(w, ctx)
  return {E_HOLD_NOT_ACTIVE, 'expired'}
end

hold_remove(w, h)
wallet_save(w)
redis.call('HSET', KEYS[1], 's', 'released')
local balance = wallet_balance(w)
journal_add(ctx, hold_id, 'hold_release', h.amount, balance, {'hold', hold_id})
balance_event(ctx, balance, w.held, hold_id, 'hold_release')
return idem_store(KEYS[3], ARGV[6], ARGV[2], {E_OK, h.amount, balance, balance - w.held, w.held})
