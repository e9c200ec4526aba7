--[[
  expire: the sweep for one wallet found in the bucket's due set: expire its due grants and
  holds (journaled), then keep the due set at its next pending expiry.
  Input:
    KEYS[1] wallet   KEYS[2] journal (bucket)   KEYS[3] due (bucket due set)
    KEYS[4] events (bucket channel)
    ARGV[1] now_ms (includes/clock)
    ARGV[2] account_id   ARGV[3] credit_type   ARGV[4] due_member
  Publishes the wallet's new state if anything expired (includes/balance_event).
  Output: {0, grants_expired, holds_expired}   {-12, field} bad argument
]]
--- @include "includes/common"

local now_arg, clock_err = clock_arg(ARGV[1])
if not now_arg then return clock_err end
local now, account, credit_type = now_arg, ARGV[2], ARGV[3]
if not parse_uint(now, CREDITS_MAX) then return {E_BAD_ARGUMENT, 'now_ms'} end
if not valid_account(account) then return {E_BAD_ARGUMENT, 'account_id'} end
if not valid_credit_type(credit_type) then return {E_BAD_ARGUMENT, 'credit_type'} end
local w = wallet_load(KEYS[1])
if not w then
  redis.call('ZREM', KEYS[3], ARGV[4])
  return {E_OK, 0, 0}
end
local grants_before, holds_before = #w.grants, #w.holds
local ctx = {journal = KEYS[2], events = KEYS[4], account = account, credit_type = credit_type,
  now = tonumber(now)}
local next_due = wallet_expire(w, ctx)
wallet_save(w)
if next_due > 0 then
  redis.call('ZADD', KEYS[3], next_due, ARGV[4])
else
  redis.call('ZREM', KEYS[3], ARGV[4])
end
balance_event_expired(ctx, w)
return {E_OK, grants_before - #w.grants, holds_before - #w.holds}
