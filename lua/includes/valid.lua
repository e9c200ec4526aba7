-- ARGV re-checks: the client validated already, but a script must never store garbage.
local function valid_text(s, max)
  return type(s) == 'string' and #s <= max
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
