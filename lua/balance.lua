--[[
  balance: read wallets without changing them; grants and holds past their expiry are left
  out, exactly as the next write would expire them.
  Input:
    KEYS[i] per wallet i: wallet
    ARGV[1] now_ms
  Output: per wallet {0, balance, available, held, debt, overdraft_limit, grants}
          grants: flat, per grant: grant_id, remaining, priority, expires_ms, category (p | r)
          or {-1} wallet not loaded
]]
--- @include "includes/common"

if not parse_uint(ARGV[1], CREDITS_MAX) then return {{E_BAD_ARGUMENT, 'now_ms'}} end
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local w = wallet_load(key)
  if not w then
    out[i] = {E_NOT_LOADED}
  else
    local grants, sum, held = {}, 0, 0
    if #w.grants > 1 then table.sort(w.grants, grant_before) end
    for _, g in ipairs(w.grants) do
      if g.exp == 0 or g.exp > now then
        sum = sum + g.rem
        grants[#grants + 1] = g.id
        grants[#grants + 1] = g.rem
        grants[#grants + 1] = g.prio
        grants[#grants + 1] = g.exp
        grants[#grants + 1] = g.cat
      end
    end
    for _, h in ipairs(w.holds) do
      if h.exp > now then held = held + h.amount end
    end
    local balance = sum - w.debt
    if held > balance + w.od then
      held = math.max(balance + w.od, 0)  -- as wallet_clip_holds will on the next write
    end
    out[i] = {E_OK, balance, balance - held, held, w.debt, w.od, grants}
  end
end
return out
