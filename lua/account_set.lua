--[[
  account_set: an account's overdraft limit, status and own rate limits, in force for its next
  charge or hold. Run after SQL committed them (the durable copy hydrate reads). Every wallet
  of the account in Redis gets them in this one call (they share the account's bucket); the
  account key keeps them for a wallet hydrated from a SQL read made before the change
  (lua/hydrate.lua). A charge or hold running before this call saw the old settings; one
  after it sees the new.
  Input:
    KEYS[1] account (settings)   KEYS[2 + i] per wallet i: wallet (of each credit type)
    ARGV[1] account_id   ARGV[2] overdraft_limit   ARGV[3] status (active | suspended)
    ARGV[4] rate_limits ("TOOL:count:period_ms;...", '*' all tools, "" none: includes/rate_overrides)
  Output: {0, wallets (how many loaded wallets were updated)}   {-12, field} bad argument
]]
--- @include "includes/common"
--- @include "includes/rate_overrides"

if not valid_account(ARGV[1]) then return {E_BAD_ARGUMENT, 'account_id'} end
local od = parse_uint(ARGV[2], OVERDRAFT_LIMIT_MAX)
if not od then return {E_BAD_ARGUMENT, 'overdraft_limit'} end
local status = ARGV[3]
if status ~= 'active' and status ~= 'suspended' then return {E_BAD_ARGUMENT, 'status'} end
local rates = ARGV[4]
if not valid_rate_overrides(rates) then return {E_BAD_ARGUMENT, 'rate_limits'} end
-- Sets field f of hash key to v, or deletes it when v is nil (an absent field is the default).
local function set_or_del(key, f, v)
  if v then redis.call('HSET', key, f, v) else redis.call('HDEL', key, f) end
end
local rates_value = rates ~= '' and rates or nil
redis.call('HSET', KEYS[1], 'o', int_str(od), 's', status)
set_or_del(KEYS[1], 'r', rates_value)
local updated = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HSET', KEYS[i], 'o', int_str(od))
    set_or_del(KEYS[i], 's', status == 'suspended' and '1' or nil)
    set_or_del(KEYS[i], 'r', rates_value)
    updated = updated + 1
  end
end
return {E_OK, updated}
