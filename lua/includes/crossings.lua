-- Balance alerts, detected where a change lowers available (balance - held), once per
-- crossing: the change's journal entry carries field al = "<flags>|<available after>|<low
-- threshold crossed, or ''>" (meter/wire.py parse_alerts), flags joined from l (available went from at or
-- above the wallet's low threshold to below it: balance.low), d (from above 0 to 0 or below:
-- balance.depleted), t (the same crossing of the top-up threshold). '' when nothing was
-- crossed, which journal_add leaves out. The thresholds are fields of the wallet hash the
-- script reads anyway (wallet_load: lt, tt), so a wallet without one costs no Redis command.
local function crossed(before, after, threshold)
  return threshold ~= nil and before >= threshold and after < threshold
end

local function crossing_flags(w, before, after)
  if after >= before then return '' end  -- the common case of a raise: nothing to compare
  local flags, low = '', ''
  if crossed(before, after, w.low) then flags, low = 'l', int_str(w.low) end
  if before > 0 and after <= 0 then flags = flags .. 'd' end
  if crossed(before, after, w.topup) then flags = flags .. 't' end
  if flags == '' then return '' end
  return flags .. '|' .. int_str(after) .. '|' .. low
end

-- A threshold as the scripts take it: '' (none) or 1..CREDITS_MAX; false when malformed.
local function threshold_arg(v)
  if v == '' then return '' end
  local n = parse_uint(v, CREDITS_MAX)
  if not n or n < 1 then return false end
  return int_str(n)
end

-- Hydrate's thresholds (from SQL), unless threshold_set wrote newer ones to the account key
-- since ('' there: removed); appended to the wallet's fields. False when one is malformed.
local function thresholds_hydrate(fields, account_key, credit_type, low_arg, topup_arg)
  local args = {threshold_arg(low_arg), threshold_arg(topup_arg)}
  local newer = redis.call('HMGET', account_key, 'lt:' .. credit_type, 'tt:' .. credit_type)
  for i, name in ipairs({'lt', 'tt'}) do
    if not args[i] then return false end
    local v = newer[i] or args[i]
    if v ~= '' then
      fields[#fields + 1] = name
      fields[#fields + 1] = v
    end
  end
  return true
end
