-- sessiondb's read of one user's sessions (RedisStore::sessions_of on one server):
-- no writes, no decisions. The client checks each session's owner and deadline
-- against the TIME returned here, exactly as sessions.lua's live_of does, and runs
-- sessions.lua (which prunes the index) if any entry is not a live session of the user.
--
-- KEYS[1] = <p>:u:<user>; ARGV[1] = the prefix.
-- Returns { TIME seconds, TIME microseconds, id, HGETALL of its session, id, ... }: an
-- empty array where the id's pointer or hash is gone. TIME is read last, so every hash
-- was read at or before it.
local P = ARGV[1]
local out = { '', '' }
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local h = redis.call('GET', P .. ':i:' .. id)
  out[#out + 1] = id
  if h then out[#out + 1] = redis.call('HGETALL', P .. ':s:' .. h) else out[#out + 1] = {} end
end
local t = redis.call('TIME')
out[1], out[2] = t[1], t[2]
return out
