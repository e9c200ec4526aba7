-- ARGV re-checks: the client validated already, but a script must never store garbage.
-- Characters (code points) of text a SQL backend can store, or nil: valid UTF-8 (no overlong
-- form, no surrogate U+D800-DFFF, nothing past U+10FFFF) without NUL, which PostgreSQL
-- refuses. The unit is the one meter/validate.text, pydantic and varchar(n) count.
local function storable_chars(s)
  if string.find(s, '%z') then return nil end
  if not string.find(s, '[\128-\255]') then return #s end  -- ASCII: one byte a character
  local n, i, len = 0, 1, #s
  while i <= len do
    local c = string.byte(s, i)
    local size
    if c < 0x80 then size = 1
    elseif c >= 0xC2 and c <= 0xDF then size = 2
    elseif c >= 0xE0 and c <= 0xEF then size = 3
    elseif c >= 0xF0 and c <= 0xF4 then size = 4
    else return nil end
    if i + size - 1 > len then return nil end
    for k = i + 1, i + size - 1 do
      local b = string.byte(s, k)
      if b < 0x80 or b > 0xBF then return nil end
    end
    if size > 2 then
      local c2 = string.byte(s, i + 1)
      if (c == 0xE0 and c2 < 0xA0) or (c == 0xF0 and c2 < 0x90) then return nil end  -- overlong
      if c == 0xED and c2 > 0x9F then return nil end  -- a surrogate
      if c == 0xF4 and c2 > 0x8F then return nil end  -- past U+10FFFF
    end
    n = n + 1
    i = i + size
  end
  return n
end

-- Free text of at most `max` characters.
local function valid_text(s, max)
  if type(s) ~= 'string' then return false end
  local n = storable_chars(s)
  return n ~= nil and n <= max
end

-- Serialized metadata: bounded in bytes (METADATA_BYTES_MAX is "4 KiB serialized").
local function valid_metadata(s)
  return type(s) == 'string' and #s <= METADATA_BYTES_MAX and storable_chars(s) ~= nil
end

local function valid_id(s)
  return type(s) == 'string' and #s >= 1 and #s <= ID_LEN_MAX and string.match(s, '^[%w%-]+$') ~= nil
end

local function valid_account(s)
  return #s >= 1 and #s <= ACCOUNT_ID_LEN_MAX and string.match(s, '^[%w_.:@%-]+$') ~= nil
end

local function valid_credit_type(s)
  return #s >= 1 and #s <= CREDIT_TYPE_LEN_MAX and string.match(s, '^[a-z0-9_]+$') ~= nil
end

local function valid_tool(s)
  return #s >= 1 and #s <= TOOL_LEN_MAX and string.match(s, '^[A-Z0-9_]+$') ~= nil
end

-- The checks every wallet-changing request shares; returns a BAD_ARGUMENT reply or nil.
local function check_common(now_s, account, credit_type, fingerprint, idem_key, ttl_s)
  if not parse_uint(now_s, CREDITS_MAX) then return {E_BAD_ARGUMENT, 'now_ms'} end
  if not valid_account(account) then return {E_BAD_ARGUMENT, 'account_id'} end
  if not valid_credit_type(credit_type) then return {E_BAD_ARGUMENT, 'credit_type'} end
  if #fingerprint < 8 or #fingerprint > 64 then return {E_BAD_ARGUMENT, 'fingerprint'} end
  if #idem_key < 1 or #idem_key > IDEMPOTENCY_KEY_LEN_MAX or not string.match(idem_key, '^[!-~]+$') then
    return {E_BAD_ARGUMENT, 'idempotency_key'}
  end
  local ttl = parse_uint(ttl_s, IDEMPOTENCY_TTL_S_MAX)
  if not ttl or ttl < IDEMPOTENCY_TTL_S_MIN then return {E_BAD_ARGUMENT, 'idempotency_ttl_s'} end
  return nil
end
