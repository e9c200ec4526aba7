-- The caller's clock, bounded by the server's. ARGV now is "<now_ms>:<skew_ms_max>" when the
-- caller asks for the bound (the meter always does on the wall clock): a now_ms further than
-- skew_ms_max from Redis TIME is refused, so a worker whose clock is wrong cannot expire a
-- grant or a hold early (or keep one alive late). A bare "<now_ms>" is a clock the caller
-- drives itself (tests, simulations): trusted as is. TIME is allowed in scripts since
-- Redis 5 (effects replication; the only mode from Redis 7 and Valkey).
-- Returns the now_ms digits and nil, or nil and the error reply.
local function clock_arg(arg)
  if type(arg) ~= 'string' then return nil, {E_BAD_ARGUMENT, 'now_ms'} end
  local now_s, skew_s = string.match(arg, '^(%d+):(%d+)$')
  if not now_s then return arg, nil end
  local now, skew = parse_uint(now_s, CREDITS_MAX), parse_uint(skew_s, CREDITS_MAX)
  if not now or not skew then return nil, {E_BAD_ARGUMENT, 'now_ms'} end
  local t = redis.call('TIME')
  local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if math.abs(now - server_ms) > skew then
    return nil, {E_CLOCK_SKEW, int_str(now), int_str(server_ms)}
  end
  return now_s, nil
end
