--[[
  threshold_set: a wallet's alert threshold (kind low: balance.low; topup: auto top-up), in
  force for the next change of the wallet (includes/crossings). Run after SQL committed it
  (the durable copy hydrate reads); the account key keeps it ('' once removed) for a wallet
  hydrated from a SQL read made before the change (lua/hydrate.lua), as account_set does.
  Input:
    KEYS[1] account (settings)   KEYS[2] wallet
    ARGV[1] account_id   ARGV[2] credit_type   ARGV[3] kind (low | topup)
    ARGV[4] threshold (1..CREDITS_MAX; '' = none)
  Output: {0, written (1: the loaded wallet was updated; 0: not loaded, hydrate brings it)}
    {-12, field} bad argument
]]
--- @include "includes/common"

if not valid_account(ARGV[1]) then return {E_BAD_ARGUMENT, 'account_id'} end
if not valid_credit_type(ARGV[2]) then return {E_BAD_ARGUMENT, 'credit_type'} end
local fields = {low = 'lt', topup = 'tt'}
local field = fields[ARGV[3]]
if not field then return {E_BAD_ARGUMENT, 'kind'} end
local threshold = threshold_arg(ARGV[4])
if not threshold then return {E_BAD_ARGUMENT, 'threshold'} end
redis.call('HSET', KEYS[1], field .. ':' .. ARGV[2], threshold)
if redis.call('EXISTS', KEYS[2]) == 0 then return {E_OK, 0} end
if threshold == '' then
  redis.call('HDEL', KEYS[2], field)
else
  redis.call('HSET', KEYS[2], field, threshold)
end
return {E_OK, 1}
