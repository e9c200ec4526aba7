-- When expired grants leave holds reserving more than the wallet can cover, the newest holds
-- shrink by the shortfall (journaled as hold_reduce), so available >= -overdraft holds always.
local function wallet_clip_holds(w, ctx)
  local short = w.held - wallet_balance(w) - w.od
  if short <= 0 then return end
  for i = #w.holds, 1, -1 do
    local h = w.holds[i]
    local cut = math.min(h.amount, short)
    if cut > 0 then
      h.amount = h.amount - cut
      w.held = w.held - cut
      short = short - cut
      w.sets['h:' .. h.id] = int_str(h.amount) .. '|' .. int_str(h.exp)
      journal_add(ctx, h.id, 'hold_reduce', h.amount, wallet_balance(w), {'hold', h.id})
      w.exp_entry, w.exp_kind = h.id, 'hold_reduce'
    end
    if short <= 0 then return end
  end
end

-- Expires every grant and hold of w whose expiry is at or before ctx.now, journaling each.
-- An expired grant is never spent: every script that reads a wallet calls this first.
-- The last entry it journals is noted in w.exp_entry / w.exp_kind (for balance events).
-- Returns the earliest expiry still pending (0 when none), for the bucket's due set.
local function wallet_expire(w, ctx)
  local next_due = 0
  local kept = {}
  for _, g in ipairs(w.grants) do
    if g.exp ~= 0 and g.exp <= ctx.now then
      local lost = g.rem
      local before = wallet_available(w)
      g.rem = 0
      wallet_set_grant(w, g)
      local id = det_id('expire|' .. g.id)
      journal_add(ctx, id, 'expire', -lost, wallet_balance(w),
        {'g', g.id .. ':' .. int_str(-lost) .. ':0',
         'al', crossing_flags(w, before, before - lost)})
      w.exp_entry, w.exp_kind = id, 'expire'
    else
      kept[#kept + 1] = g
      if g.exp ~= 0 and (next_due == 0 or g.exp < next_due) then next_due = g.exp end
    end
  end
  w.grants = kept
  local holds = {}
  for _, h in ipairs(w.holds) do
    if h.exp <= ctx.now then
      w.held = w.held - h.amount
      w.dels['h:' .. h.id] = true
      journal_add(ctx, h.id, 'hold_expire', h.amount, wallet_balance(w), {'hold', h.id})
      w.exp_entry, w.exp_kind = h.id, 'hold_expire'
    else
      holds[#holds + 1] = h
      if next_due == 0 or h.exp < next_due then next_due = h.exp end
    end
  end
  w.holds = holds
  wallet_clip_holds(w, ctx)
  return next_due
end
