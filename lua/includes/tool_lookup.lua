-- Reads a tool from the bucket's catalog replica ("cost|credit_type|active").
-- Returns cost, nil and the value's fields (cost, credit_type, active, then the rate limit's
-- count and period_ms when it has one), or nil and an error reply. A missing replica is "not loaded", never
-- "unknown tool": the client restores it from SQL and retries. cache (optional) keeps the
-- replies of one script call, so a batch reads each tool once.
local function tool_lookup(catalog_key, tool, credit_type, cache)
  local raw = cache and cache[tool]
  if raw == nil then
    raw = redis.call('HGET', catalog_key, tool)
    if cache then cache[tool] = raw end
  end
  if not raw then
    if redis.call('EXISTS', catalog_key) == 0 then
      return nil, {E_CATALOG_NOT_LOADED}
    end
    return nil, {E_UNKNOWN_TOOL, tool}
  end
  local t = split(raw, '|')
  if t[3] ~= '1' then
    return nil, {E_TOOL_DISABLED, tool}
  end
  if t[2] ~= credit_type then
    return nil, {E_CREDIT_TYPE_MISMATCH, t[2]}
  end
  return tonumber(t[1]), nil, t
end
