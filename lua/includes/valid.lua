-- ARGV re-checks: the client validated already, but a script must never store garbage.
-- The well-formed UTF-8 sequences of more than one byte (RFC 3629 table): no overlong form,
-- no surrogate U+D800-DFFF (ED A0..BF), nothing past U+10FFFF. Most common first.
local UTF8_SEQUENCES = {
  '[\225-\236\238\239][\128-\191][\128-\191]',
  '[\194-\223][\128-\191]',
  '[\241-\243][\128-\191][\128-\191][\128-\191]',
  '\224[\160-\191][\128-\191]',
  '\237[\128-\159][\128-\191]',
  '\240[\144-\191][\128-\191][\128-\191]',
  '\244[\128-\143][\128-\191][\128-\191]',
}

-- Characters (code points) of text a SQL backend can store, or nil: valid UTF-8 without NUL,
-- which PostgreSQL refuses. The unit is the one meter/validate.text, pydantic and varchar(n)
-- count. Each valid sequence becomes one ASCII byte (a placeholder, never '', so removing one
-- cannot join its neighbours into a sequence); a byte >= 128 left over is invalid UTF-8.
-- gsub runs in C: 1 KiB of 3-byte text costs ~40 us, of ASCII ~13 us (a loop over the bytes
-- in Lua took ~360 us).
local function storable_chars(s)
  if string.find(s, '\0', 1, true) then return nil end
  local t = s
  for _, seq in ipairs(UTF8_SEQUENCES) do
    if not string.find(t, '[\128-\255]') then return #t end
    t = string.gsub(t, seq, '.')
  end
  if string.find(t, '[\128-\255]') then return nil end
  return #t
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
