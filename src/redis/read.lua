-- sessiondb's read of one user's sessions (RedisStore::sessions_of on one server):
-- no writes, no decisions. The client checks each session's owner and deadline
-- against the TIME returned here, exactly as sessions.lua's live_of does, and runs
-- sessions.lua (which prunes the index) if any entry is not a live session of the user.
--
-- KEYS[1] = <p>:u:<user>; ARGV[1] = the prefix.
-- Returns { TIME seconds, TIME microseconds, id, its session's string, id, ... }: false
-- (nil to the client) where the id's pointer or session is gone, or is a hash of the
-- earlier layout (sessions.lua reads those). TIME is read last, so every session was
-- read at or before it.
local P = ARGV[1]
local out = { '', '' }
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local h = redis.call('GET', P .. ':i:' .. id)
  local s = false
  if h then
    s = redis.pcall('GET', P .. ':s:' .. h)
    if type(s) ~= 'string' then s = false end
  end
  out[#out + 1] = id
  out[#out + 1] = s
end
local t = redis.call('TIME')
out[1], out[2] = t[1], t[2]
return out
