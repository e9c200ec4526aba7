--[[
  hydrate: write a wallet loaded from SQL, only if Redis does not have it (a racing request
  or an earlier hydration wins; nothing is overwritten). Holds come with their records.
  The account's overdraft limit and status come from SQL, unless account_set wrote newer
  ones to the account key since (a PATCH that landed between the SQL read and this call);
  so do the wallet's alert thresholds, unless threshold_set did (includes/crossings).
  Input:
    KEYS[1] wallet   KEYS[2] account (settings)   KEYS[3] due (bucket due set)
    KEYS[4 + i] per hold i: hold (record)
    ARGV[1] account_id   ARGV[2] credit_type   ARGV[3] overdraft_limit
    ARGV[4] status (active | suspended)   ARGV[5] debt   ARGV[6] grants (their number G)
    ARGV[7 + 5i .. 11 + 5i] per grant i: grant_id, remaining, priority,
      expires_ms (0 = never), category (paid | promotional)
    ARGV[7 + 5G] holds (their number H)
    ARGV[8 + 5G + 4i .. 11 + 5G + 4i] per hold i: hold_id, amount, expires_ms, tool
    ARGV[#ARGV - 2] due_member   ARGV[#ARGV - 1] low_threshold ('' = none)
    ARGV[#ARGV] topup_threshold ('' = none)
  Output: {0, written (1, or 0: already present)}   {-12, field} bad argument
]]
--- @include "includes/common"

local account, credit_type = ARGV[1], ARGV[2]
if not valid_account(account) then return {E_BAD_ARGUMENT, 'account_id'} end
if not valid_credit_type(credit_type) then return {E_BAD_ARGUMENT, 'credit_type'} end
local od = parse_uint(ARGV[3], CREDITS_MAX)
local status = ARGV[4]
local debt = parse_uint(ARGV[5], CREDITS_MAX)
local n_grants = parse_uint(ARGV[6], GRANTS_PER_WALLET_MAX)
if not od or not debt or not n_grants then return {E_BAD_ARGUMENT, 'wallet'} end
if status ~= 'active' and status ~= 'suspended' then return {E_BAD_ARGUMENT, 'status'} end
local newer = redis.call('HMGET', KEYS[2], 'o', 's')
if newer[1] then
  od, status = tonumber(newer[1]), newer[2]
end
local fields = {'o', int_str(od)}
if status == 'suspended' then
  fields[#fields + 1] = 's'
  fields[#fields + 1] = '1'
end
if debt > 0 then
  fields[#fields + 1] = 'd'
  fields[#fields + 1] = int_str(debt)
end
local cats = {paid = 'p', promotional = 'r'}
local next_due = 0
for i = 0, n_grants - 1 do
  local b = 7 + 5 * i
  local rem, prio = parse_uint(ARGV[b + 1], CREDITS_MAX), parse_uint(ARGV[b + 2], PRIORITY_MAX)
  local exp, cat = parse_uint(ARGV[b + 3], CREDITS_MAX), cats[ARGV[b + 4]]
  if not valid_id(ARGV[b]) or not rem or rem < 1 or not prio or not exp or not cat then
    return {E_BAD_ARGUMENT, 'grant'}
  end
  fields[#fields + 1] = 'g:' .. ARGV[b]
  fields[#fields + 1] = int_str(rem) .. '|' .. int_str(prio) .. '|' .. int_str(exp) .. '|' .. cat
  if exp > 0 and (next_due == 0 or exp < next_due) then next_due = exp end
end
local hb = 7 + 5 * n_grants
local n_holds = parse_uint(ARGV[hb], HOLDS_PER_WALLET_MAX)
if not n_holds or #KEYS ~= 3 + n_holds or #ARGV ~= hb + 4 * n_holds + 3 then
  return {E_BAD_ARGUMENT, 'holds'}
end
for i = 0, n_holds - 1 do
  local b = hb + 1 + 4 * i
  local amount, exp = parse_uint(ARGV[b + 1], CREDITS_MAX), parse_uint(ARGV[b + 2], CREDITS_MAX)
  if not valid_id(ARGV[b]) or not amount or not exp or not valid_tool(ARGV[b + 3]) then
    return {E_BAD_ARGUMENT, 'hold'}
  end
  fields[#fields + 1] = 'h:' .. ARGV[b]
  fields[#fields + 1] = int_str(amount) .. '|' .. int_str(exp)
  if next_due == 0 or exp < next_due then next_due = exp end
end
if not thresholds_hydrate(fields, KEYS[2], credit_type, ARGV[#ARGV - 1], ARGV[#ARGV]) then
  return {E_BAD_ARGUMENT, 'threshold'}
end

if redis.call('EXISTS', KEYS[1]) == 1 then return {E_OK, 0} end
redis.call('HSET', KEYS[1], unpack(fields))
for i = 0, n_holds - 1 do
  local b = hb + 1 + 4 * i
  if redis.call('EXISTS', KEYS[4 + i]) == 0 then
    redis.call('HSET', KEYS[4 + i], 'a', account, 't', credit_type, 'tool', ARGV[b + 3],
      'm', ARGV[b + 1], 'x', ARGV[b + 2], 's', 'active')
    redis.call('EXPIRE', KEYS[4 + i], HOLD_TTL_S_MAX + HOLD_RECORD_TTL_S)  -- outlives any hold
  end
end
due_mark(KEYS[3], ARGV[#ARGV - 2], next_due)
return {E_OK, 1}
