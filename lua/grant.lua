--[[
  grant: add credits to a wallet as a new grant; any debt is paid off first.
  Input:
    KEYS[1] wallet   KEYS[2] idempotency (record)   KEYS[3] journal (bucket)
    KEYS[4] due (bucket due set)   KEYS[5] events (bucket channel)
    ARGV[1] now_ms (includes/clock)
    ARGV[2] idempotency_ttl_s   ARGV[3] entry_id   ARGV[4] grant_id
    ARGV[5] account_id   ARGV[6] credit_type   ARGV[7] amount (1..CREDITS_MAX)
    ARGV[8] category (paid | promotional)   ARGV[9] priority (0..100, lower burns first)
    ARGV[10] expires_ms (0 = never; else after now_ms)   ARGV[11] source
    ARGV[12] reference_id   ARGV[13] fingerprint   ARGV[14] idempotency_key
    ARGV[15] description   ARGV[16] metadata (JSON)   ARGV[17] due_member
  Publishes the wallet's new state on the events channel (includes/balance_event).
  Output:
    {0|1 replayed, entry_id, grant_id, amount, balance, available, held}
    {-1} wallet not loaded   {-7} idempotency key reused   {-12, field} bad argument
    {-13, amount} balance would exceed CREDITS_MAX   {-14, 'grants'} too many grants
    {-22} a grant with this id is in the wallet already
]]
--- @include "includes/common"

local now_arg, clock_err = clock_arg(ARGV[1])
if not now_arg then return clock_err end
local now, entry_id, grant_id, account, credit_type = now_arg, ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local bad = check_common(now, account, credit_type, ARGV[13], ARGV[14], ARGV[2])
if bad then return bad end
if not valid_id(entry_id) then return {E_BAD_ARGUMENT, 'entry_id'} end
if not valid_id(grant_id) or grant_id == 'debt' then return {E_BAD_ARGUMENT, 'grant_id'} end
local amount = parse_uint(ARGV[7], CREDITS_MAX)
if not amount or amount < 1 then return {E_BAD_ARGUMENT, 'amount'} end
local cats = {paid = 'p', promotional = 'r'}
local cat = cats[ARGV[8]]
if not cat then return {E_BAD_ARGUMENT, 'category'} end
local prio = parse_uint(ARGV[9], PRIORITY_MAX)
if not prio then return {E_BAD_ARGUMENT, 'priority'} end
local exp = parse_uint(ARGV[10], CREDITS_MAX)
if not exp or (exp ~= 0 and exp <= tonumber(now)) then return {E_BAD_ARGUMENT, 'expires_at'} end
if not valid_text(ARGV[11], SOURCE_LEN_MAX) or #ARGV[11] == 0 then
  return {E_BAD_ARGUMENT, 'source'}
end
if not valid_text(ARGV[12], REFERENCE_LEN_MAX) then return {E_BAD_ARGUMENT, 'reference_id'} end
if not valid_text(ARGV[15], DESCRIPTION_LEN_MAX) then return {E_BAD_ARGUMENT, 'description'} end
if not valid_metadata(ARGV[16]) then return {E_BAD_ARGUMENT, 'metadata'} end

local replay = idem_check(KEYS[2], ARGV[13])
if replay then return replay end
local w = wallet_load(KEYS[1])
if not w then return {E_NOT_LOADED} end
local ctx = {journal = KEYS[3], events = KEYS[5], account = account, credit_type = credit_type,
  now = tonumber(now)}
wallet_expire(w, ctx)
if wallet_find_grant(w, grant_id) then
  wallet_save_refused(w, ctx)
  return {E_GRANT_EXISTS}
end
if #w.grants >= GRANTS_PER_WALLET_MAX then
  wallet_save_refused(w, ctx)
  return {E_LIMIT, 'grants'}
end
if wallet_balance(w) + amount > CREDITS_MAX then
  wallet_save_refused(w, ctx)
  return {E_AMOUNT_OVERFLOW, int_str(wallet_balance(w) + amount)}
end

local g = {id = grant_id, rem = 0, prio = prio, exp = exp, cat = cat}
local parts = wallet_credit(w, g, amount)
wallet_save(w)
due_mark(KEYS[4], ARGV[17], exp)
local balance = wallet_balance(w)
journal_add(ctx, entry_id, 'grant', amount, balance, {'g', breakdown_str(parts),
  'ng', grant_id .. ':' .. cat .. ':' .. int_str(prio) .. ':' .. int_str(exp), 'src', ARGV[11],
  'ref', ARGV[12], 'ik', ARGV[14], 'desc', ARGV[15], 'meta', ARGV[16]})
balance_event(ctx, balance, w.held, entry_id, 'grant')
return idem_store(KEYS[2], ARGV[13], ARGV[2],
  {E_OK, entry_id, grant_id, amount, balance, balance - w.held, w.held})
