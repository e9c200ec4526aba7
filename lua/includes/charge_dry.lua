-- Dry run of a charge (POST /v1/charges with "dry_run": true, Autumn's `check`): the charge's
-- own checks ran before this (tool lookup, credit type, wallet load); this answers the last
-- one, the overdraft test, and writes nothing. Expiries are computed, not applied: applying
-- them journals entries, and a dry run leaves the journal as it is.
-- Returns balance and available as the charge would see them after wallet_expire.
local function charge_dry_available(w, now)
  local balance, held = -w.debt, 0
  for _, g in ipairs(w.grants) do
    if g.exp == 0 or g.exp > now then balance = balance + g.rem end
  end
  for _, h in ipairs(w.holds) do
    if h.exp > now then held = held + h.amount end
  end
  -- Expired grants shrink the newest holds so that available never drops below -overdraft
  -- (wallet_clip_holds): the same floor here.
  return balance, math.max(balance - held, -w.od)
end

-- The reply of a dry run: {E_DRY_RUN, '', amount, balance, available, held, ''} (the charge
-- reply's shape, no entry and no breakdown) or the charge's own insufficient-credits reply.
local function charge_dry(w, amount, now)
  local balance, available = charge_dry_available(w, now)
  if available - amount < -w.od then
    return {E_INSUFFICIENT, balance, available, amount}
  end
  return {E_DRY_RUN, '', amount, balance, available, balance - available, ''}
end
