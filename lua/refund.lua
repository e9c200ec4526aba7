--[[
  refund: return all or part of a charge to the grants it was taken from, last taken first
  (their category and expiry kept). A part whose grant has expired goes to a successor: one
  new never-expiring grant per category. A part that went into debt pays debt back; refunded
  credits, like every credit, pay debt first. Total refunded never exceeds the charge.
  Input:
    KEYS[1] record (the charge record: at the charge key, or where its pointer leads,
      includes/charge_record)   KEYS[2] wallet   KEYS[3] idempotency (record)
    KEYS[4] journal (bucket)   KEYS[5] due (bucket due set)   KEYS[6] events (bucket channel)
    ARGV[1] now_ms (includes/clock)
    ARGV[2] idempotency_ttl_s   ARGV[3] entry_id (of the refund)   ARGV[4] charge_id
    ARGV[5] account_id   ARGV[6] credit_type   ARGV[7] amount ('' = what is left)
    ARGV[8] successor_paid (grant id for paid credits)
    ARGV[9] successor_promotional (grant id for promotional credits)
    ARGV[10] fingerprint   ARGV[11] idempotency_key   ARGV[12] reason   ARGV[13] metadata
    ARGV[14] due_member
  Publishes the wallet's new state on the events channel (includes/balance_event).
  Output:
    {0|1 replayed, entry_id, amount, balance, available, held, refunded_total, breakdown}
    {-1} wallet not loaded   {-7} idempotency key reused   {-10} charge not found
    {-11, refundable} over-refund   {-12, field} bad argument
]]
--- @include "includes/common"

local now_arg, clock_err = clock_arg(ARGV[1])
if not now_arg then return clock_err end
local now, entry_id, charge_id, account, credit_type = now_arg, ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local bad = check_common(now, account, credit_type, ARGV[10], ARGV[11], ARGV[2])
if bad then return bad end
for _, i in ipairs({3, 4, 8, 9}) do
  if not valid_id(ARGV[i]) then return {E_BAD_ARGUMENT, 'id'} end
end
local wanted = nil
if ARGV[7] ~= '' then
  wanted = parse_uint(ARGV[7], CREDITS_MAX)
  if not wanted or wanted < 1 then return {E_BAD_ARGUMENT, 'amount'} end
end
if not valid_text(ARGV[12], DESCRIPTION_LEN_MAX) then return {E_BAD_ARGUMENT, 'reason'} end
if not valid_metadata(ARGV[13]) then return {E_BAD_ARGUMENT, 'metadata'} end

local replay = idem_check(KEYS[3], ARGV[10])
if replay then return replay end
local rec = charge_record_read(KEYS[1])
if not rec then return {E_CHARGE_NOT_FOUND} end
if rec.account ~= account or rec.credit_type ~= credit_type
    or (rec.entry_id and rec.entry_id ~= '' and rec.entry_id ~= charge_id) then
  return {E_BAD_ARGUMENT, 'charge_id'}
end
local refundable = rec.charged - rec.refunded
local amount = wanted or refundable
if amount < 1 or amount > refundable then return {E_OVER_REFUND, refundable} end
local w = wallet_load(KEYS[2])
if not w then return {E_NOT_LOADED} end
local ctx = {journal = KEYS[4], events = KEYS[6], account = account, credit_type = credit_type,
  now = tonumber(now)}
wallet_expire(w, ctx)

local parts, new_grants, successors = {}, {}, {}
local left = amount
for i = #rec.parts, 1, -1 do
  if left == 0 then break end
  local p = rec.parts[i]
  local take = math.min(p.refundable, left)
  if take > 0 then
    p.refundable = p.refundable - take
    left = left - take
    local g = nil
    if p.id ~= 'debt' then g = wallet_find_grant(w, p.id) end
    if not g and p.id ~= 'debt' and (p.exp == 0 or p.exp > ctx.now) then
      g = {id = p.id, rem = 0, prio = p.prio, exp = p.exp, cat = p.cat}
      due_mark(KEYS[5], ARGV[14], p.exp)
    end
    if not g then
      local cat = p.cat
      if cat ~= 'r' then cat = 'p' end
      g = successors[cat]
      if not g then
        local id = ARGV[8]
        if cat == 'r' then id = ARGV[9] end
        local prio = p.prio
        if p.id == 'debt' then prio = PRIORITY_DEFAULT end
        g = {id = id, rem = 0, prio = prio, exp = 0, cat = cat}
        successors[cat] = g
      end
    end
    for _, part in ipairs(wallet_credit(w, g, take)) do
      parts[#parts + 1] = part
    end
  end
end
assert(left == 0, 'refund parts do not cover the refundable amount')
for _, cat in ipairs({'p', 'r'}) do
  local g = successors[cat]
  if g and g.present then  -- only successors that received credits (not all went to debt)
    new_grants[#new_grants + 1] = g.id .. ':' .. cat .. ':' .. int_str(g.prio) .. ':0'
  end
end
wallet_save(w)
local balance = wallet_balance(w)
local breakdown = breakdown_str(parts)
charge_record_refunded(KEYS[1], rec, rec.refunded + amount)
journal_add(ctx, entry_id, 'refund', amount, balance, {'tool', rec.tool, 'ref', charge_id,
  'g', breakdown, 'ng', table.concat(new_grants, ';'), 'ik', ARGV[11], 'desc', ARGV[12],
  'meta', ARGV[13]})
balance_event(ctx, balance, w.held, entry_id, 'refund')
return idem_store(KEYS[3], ARGV[10], ARGV[2], {E_OK, entry_id, amount, balance,
  balance - w.held, w.held, rec.refunded + amount, breakdown})
