--[[
  account_set: an account's overdraft limit and status, in force for its next charge or hold.
  Run after SQL committed them (the durable copy hydrate reads). Every wallet of the account
  in Redis gets both in this one call (they share the account's bucket); the account key keeps
  them for a wallet hydrated from a SQL read made before the change (lua/hydrate.lua).
  A charge or hold running before this call saw the old settings; one after it sees the new.
  Input:
    KEYS[1] account (settings)   KEYS[2 + i] per wallet i: wallet (of each credit type)
    ARGV[1] account_id   ARGV[2] overdraft_limit   ARGV[3] status (active | suspended)
  Output: {0, wallets (how many loaded wallets were updated)}   {-12, field} bad argument
]]
--- @include "includes/common"

if not valid_account(ARGV[1]) then return {E_BAD_ARGUMENT, 'account_id'} end
local od = parse_uint(ARGV[2], OVERDRAFT_LIMIT_MAX)
if not od then return {E_BAD_ARGUMENT, 'overdraft_limit'} end
local status = ARGV[3]
if status ~= 'active' and status ~= 'suspended' then return {E_BAD_ARGUMENT, 'status'} end
redis.call('HSET', KEYS[1], 'o', int_str(od), 's', status)
local updated = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HSET', KEYS[i], 'o', int_str(od))
    if status == 'suspended' then
      redis.call('HSET', KEYS[i], 's', '1')
    else
      redis.call('HDEL', KEYS[i], 's')
    end
    updated = updated + 1
  end
end
return {E_OK, updated}
