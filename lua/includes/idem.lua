-- Idempotency record: "<fingerprint>\31<reply field>\31...". A replay with the same
-- fingerprint returns the stored reply with code 1; another fingerprint is an error.
-- A record that is IDEM_IN_SQL was restored from SQL after Redis lost its data
-- (idem_restore.lua): the request ran before, and the client answers it from SQL.
local IDEM_SEP = '\31'
local IDEM_IN_SQL = '\30'

local function idem_check(key, fingerprint)
  local stored = redis.call('GET', key)
  if not stored then
    return nil
  end
  if stored == IDEM_IN_SQL then
    return {E_IDEMPOTENCY_IN_SQL}
  end
  local fields = split(stored, IDEM_SEP)
  if fields[1] ~= fingerprint then
    return {-7}
  end
  fields[1] = 1
  return fields
end

-- Stores reply (whose first element is the code 0) and returns it.
local function idem_store(key, fingerprint, ttl_s, reply)
  local parts = {fingerprint}
  for i = 2, #reply do
    local v = reply[i]
    if type(v) == 'number' then v = int_str(v) end
    parts[i] = v
  end
  redis.call('SET', key, table.concat(parts, IDEM_SEP), 'EX', ttl_s)
  return reply
end
