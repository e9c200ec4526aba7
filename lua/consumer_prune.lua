--[[
  consumer_prune: delete a consumer of a journal's group if it holds no pending entry. The
  check and the delete are one step: a consumer that read an entry meanwhile keeps it
  (deleting it would drop the entry from the group's pending list, never to be reclaimed).
  Input:
    KEYS[1] journal (bucket)
    ARGV[1] group (consumer group)   ARGV[2] consumer (name)
  Output: {0, deleted (1/0)}
]]
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held > 0 then return {0, 0} end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return {0, 1}
