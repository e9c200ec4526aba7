-- Integers as exact decimal strings: tostring() would print 2^53-1 as 9.007199254741e+15.
local function int_str(n)
  return string.format('%d', n)
end
