--[[
  adjust: an admin's signed change with a reason. Positive: a new never-expiring grant of
  the given category (debt paid first). Negative: burned like a charge, within the overdraft
  limit like every spend.
  Input:
    KEYS[1] wallet   KEYS[2] idempotency (record)   KEYS[3] journal (bucket)
    KEYS[4] events (bucket channel)
    ARGV[1] now_ms (includes/clock)
    ARGV[2] idempotency_ttl_s   ARGV[3] entry_id   ARGV[4] grant_id (if positive)
    ARGV[5] account_id   ARGV[6] credit_type   ARGV[7] amount (signed, not 0)
    ARGV[8] category (of a positive amount: paid | promotional)   ARGV[9] fingerprint
    ARGV[10] idempotency_key   ARGV[11] reason (required)   ARGV[12] metadata (JSON)
  Publishes the wallet's new state on the events channel (includes/balance_event).
  Output:
    {0|1 replayed, entry_id, amount, balance, available, held}
    {-1} wallet not loaded   {-6, balance, available, required}   {-7} idempotency key reused
    {-12, field} bad argument   {-13, amount} balance would exceed CREDITS_MAX
    {-14, 'grants'} too many grants
]]
--- @include "includes/common"

local now_arg, clock_err = clock_arg(ARGV[1])
if not now_arg then return clock_err end
local now, entry_id, grant_id, account, credit_type = now_arg, ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local bad = check_common(now, account, credit_type, ARGV[9], ARGV[10], ARGV[2])
if bad then return bad end
if not valid_id(entry_id) then return {E_BAD_ARGUMENT, 'entry_id'} end
if not valid_id(grant_id) or grant_id == 'debt' then return {E_BAD_ARGUMENT, 'grant_id'} end
local amount = parse_int(ARGV[7], CREDITS_MAX)
if not amount or amount == 0 then return {E_BAD_ARGUMENT, 'amount'} end
local cats = {paid = 'p', promotional = 'r'}
local cat = cats[ARGV[8]]
if not cat then return {E_BAD_ARGUMENT, 'category'} end
if #ARGV[11] == 0 or not valid_text(ARGV[11], DESCRIPTION_LEN_MAX) then
  return {E_BAD_ARGUMENT, 'reason'}
end
if not valid_metadata(ARGV[12]) then return {E_BAD_ARGUMENT, 'metadata'} end

local replay = idem_check(KEYS[2], ARGV[9])
if replay then return replay end
local w = wallet_load(KEYS[1])
if not w then return {E_NOT_LOADED} end
local ctx = {journal = KEYS[3], events = KEYS[4], account = account, credit_type = credit_type,
  now = tonumber(now)}
wallet_expire(w, ctx)
local before = wallet_available(w)

local parts
local new_grant, source = '', ''  -- a positive amount is a new grant, made by an admin
if amount > 0 then
  if #w.grants >= GRANTS_PER_WALLET_MAX then
    wallet_save_refused(w, ctx)
    return {E_LIMIT, 'grants'}
  end
  if wallet_balance(w) + amount > CREDITS_MAX then
    wallet_save_refused(w, ctx)
    return {E_AMOUNT_OVERFLOW, int_str(wallet_balance(w) + amount)}
  end
  parts = wallet_credit(w, {id = grant_id, rem = 0, prio = PRIORITY_DEFAULT, exp = 0, cat = cat},
    amount)
  new_grant = grant_id .. ':' .. cat .. ':' .. int_str(PRIORITY_DEFAULT) .. ':0'
  source = 'admin'
else
  local available = wallet_available(w)
  if available + amount < -w.od then
    wallet_save_refused(w, ctx)
    return {E_INSUFFICIENT, wallet_balance(w), available, -amount}
  end
  parts = wallet_burn(w, -amount)
end
wallet_save(w)
local balance = wallet_balance(w)
journal_add(ctx, entry_id, 'adjustment', amount, balance, {'g', breakdown_str(parts),
  'ng', new_grant, 'src', source, 'ik', ARGV[10], 'desc', ARGV[11], 'meta', ARGV[12],
  'al', crossing_flags(w, before, balance - w.held)})
balance_event(ctx, balance, w.held, entry_id, 'adjustment')
return idem_store(KEYS[2], ARGV[9], ARGV[2],
  {E_OK, entry_id, amount, balance, balance - w.held, w.held})
