-- A deterministic UUID-shaped id (version nibble 8) for entries the script itself creates,
-- such as grant expiries: the same event always gets the same id, so SQL dedups it.
local function det_id(seed)
  local h = redis.sha1hex(seed)
  return string.sub(h, 1, 8) .. '-' .. string.sub(h, 9, 12) .. '-8' .. string.sub(h, 14, 16)
    .. '-' .. string.sub(h, 17, 20) .. '-' .. string.sub(h, 21, 32)
end
