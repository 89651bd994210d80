-- sessiondb's operations on Redis, one script, one operation per call.
--
-- Every change a session goes through (its hash, its id pointer, its user-index entry,
-- the expiry registry, the event) happens inside one call of this script, so Redis
-- applies it as one step: no reader sees half of it and no crash leaves half of it.
--
-- Calling convention: KEYS[1] = the expiry registry (<prefix>:x), which also routes
-- the call in a Redis Cluster (every key shares the prefix's hash tag, if it has one).
-- ARGV[1] prefix, ARGV[2] operation, ARGV[3] authentication lifetime (ms, 0 = none),
-- ARGV[4] retention (ms a session's keys outlive its deadline so the reaper can report
-- it), ARGV[5] approximate length cap of the event stream, ARGV[6] trial lifetime (ms,
-- 0 = none), ARGV[7] '1' if a budget evicts anonymous sessions (keep <p>:n), ARGV[8..]
-- the operation's arguments.
--
-- Keys (h = 32 hex digits of the token's hash, id = 32 hex digits of the public id):
--   <p>:s:<h>   string: the session, one MessagePack array (cmsgpack, built into
--               Redis's Lua): 1 (the layout), id, user, label, created, last seen,
--               authenticated, absolute deadline, idle (ms, 0 = none), version, data
--               bytes, then each data entry's key and value; false where there is no
--               user, label or authentication. One string so that a read is one GET
--               and one value to parse (src/redis/read.rs).
--               Layout 2, for a session with sign-in factors or a device: the same
--               with four more before the data entries: factors (text, "method level
--               at" joined by ';'), user agent, address (text), when the device was
--               recorded; false where there is none. A session with neither keeps
--               layout 1, which earlier versions read.
--               Or, for a rotated-away token inside its grace period (PX grace): the
--               array 0 (an alias), id — so that one GET also answers "is this token
--               an alias?".
--               Stores written before this layout kept a hash here (fields id u l c
--               ls a abs idle v dsz, and d:<key> per data entry): `load` still reads
--               it, and the session's next write replaces it with the string. (Those
--               versions kept grace aliases at <p>:a:<h>; they are not read.)
--   <p>:i:<id>  string: the current h of the session with that id
--   <p>:u:<user> sorted set: the user's session ids scored by deadline
--   <p>:b:<user> string: the user's not-before time (ms; no expiry): a session of
--               the user authenticated before it was revoked and is never admitted
--               again (revoke_before, admit)
--   <p>:B       set: the users with a not-before time (not_before_list)
--   <p>:x       sorted set: every session id scored by deadline (len, reaper, clear)
--   <p>:n       sorted set: anonymous session ids scored by last seen (the budget's
--               eviction order; kept only when the budget evicts)
--   <p>:e       stream: the events
-- Times are Redis server milliseconds (TIME), so every node agrees on them.

-- Redis 5 and 6 replicate scripts verbatim unless told otherwise, and this script
-- reads the clock before it writes: replicate its effects (always the case from 7.0).
if redis.replicate_commands then pcall(redis.replicate_commands) end

local P = ARGV[1]
local OP = ARGV[2]
local AUTH = tonumber(ARGV[3])
local KEEP = tonumber(ARGV[4])
local EVMAX = ARGV[5]
local TRIAL = tonumber(ARGV[6])
local ANON = ARGV[7] == '1'
local A = {}
for i = 8, #ARGV do A[#A + 1] = ARGV[i] end

local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local KX = KEYS[1]
local KE = P .. ':e'
local KN = P .. ':n'
local function kS(h) return P .. ':s:' .. h end
local function kI(id) return P .. ':i:' .. id end
local function kU(u) return P .. ':u:' .. u end
local function kB(u) return P .. ':b:' .. u end
local function fmt(n) return string.format('%d', n) end
-- The highest version (Session::MAX_VERSION, 2^53 - 1): every integer up to it is exact
-- in Lua's doubles. A change to a session at it is refused, never wrapped or rounded.
local MAXV = 9007199254740991
local function exhausted(s) return { 'exhausted', fmt(s.v) } end
local function num(x) if x then return tonumber(x) end return 0 end

-- A session stored by an earlier version, as a hash (see the key layout above).
local function load_hash(h)
  local all = redis.call('HGETALL', kS(h))
  if #all == 0 then return nil end
  local f, data = {}, {}
  for i = 1, #all, 2 do
    local k = all[i]
    if string.sub(k, 1, 2) == 'd:' then
      data[#data + 1] = string.sub(k, 3)
      data[#data + 1] = all[i + 1]
    else
      f[k] = all[i + 1]
    end
  end
  if not f.id then return nil end
  return { h = h, id = f.id, u = f.u, l = f.l, c = num(f.c), ls = num(f.ls),
           a = f.a and tonumber(f.a) or false, abs = num(f.abs), idle = num(f.idle),
           v = num(f.v), dsz = num(f.dsz), data = data }
end

-- The session at token hash h, with its data as a flat key/value list; or nil, and the
-- session id if h is a rotated-away token in its grace period.
local function load(h)
  local r = redis.pcall('GET', kS(h))
  if type(r) == 'table' and r.err then return load_hash(h) end -- WRONGTYPE: a hash
  if not r then return nil end
  local t = cmsgpack.unpack(r)
  if type(t) == 'table' and t[1] == 0 then return nil, t[2] end
  if type(t) ~= 'table' or (t[1] ~= 1 and t[1] ~= 2) then error('sessiondb: the session at ' .. kS(h) .. ' has an unknown layout') end
  local s = { h = h, id = t[2], u = t[3] or nil, l = t[4] or nil, c = t[5], ls = t[6], a = t[7],
              abs = t[8], idle = t[9], v = t[10], dsz = t[11], data = {} }
  local first = 12
  if t[1] == 2 then
    s.f, s.ua, s.ip, s.dat = t[12] or nil, t[13] or nil, t[14] or nil, t[15] or nil
    first = 16
  end
  for i = first, #t do s.data[#s.data + 1] = t[i] end
  return s
end

-- A session's factors as a list of { m = method, l = level, at = time }, from their
-- text ("method level at" joined by ';'; nil: none).
local function factors_of(f)
  local out = {}
  if not f then return out end
  for m, l, at in string.gmatch(f, '([^ ;]+) (%d+) (%d+)') do
    out[#out + 1] = { m = m, l = tonumber(l), at = tonumber(at) }
  end
  return out
end

-- The text of a list of factors (nil for none), each dated `at` if given.
local function factors_text(list, at)
  if #list == 0 then return nil end
  local parts = {}
  for i, x in ipairs(list) do
    parts[i] = x.m .. ' ' .. fmt(x.l) .. ' ' .. fmt(at or x.at)
  end
  return table.concat(parts, ';')
end

-- On trial: anonymous, version 0, not seen since its creation (Options::trial_lifetime).
local function on_trial(s)
  return TRIAL > 0 and not s.u and s.v == 0 and s.ls == s.c
end

local function deadline(s)
  local d = s.abs
  if on_trial(s) and s.c + TRIAL < d then d = s.c + TRIAL end
  if s.idle > 0 and s.ls + s.idle < d then d = s.ls + s.idle end
  if AUTH > 0 and s.a and s.a + AUTH < d then d = s.a + AUTH end
  return d
end

local function by_id(id)
  local h = redis.call('GET', kI(id))
  if not h then return nil end
  local s = load(h)
  if s and s.id == id then return s end
  return nil
end

-- The live session token hash h answers to (directly, or as a rotated-away token in
-- its grace period), and whether it came through such an alias.
local function resolve(h)
  local s, id = load(h)
  local alias = false
  if not s then
    if not id then return nil, false end
    s = by_id(id)
    if not s then return nil, false end
    alias = true
  end
  if deadline(s) <= NOW then return nil, false end
  return s, alias
end

local function event(...)
  redis.call('XADD', KE, 'MAXLEN', '~', EVMAX, '*', ...)
end

-- Pushes the key's expiry out to at least `at` (never pulls it in).
local function keep_until(k, at)
  local ttl = redis.call('PTTL', k)
  if ttl == -1 or (ttl >= 0 and NOW + ttl < at) then redis.call('PEXPIREAT', k, at) end
end

-- Writes s to its key (replacing a hash of the earlier layout), expiring a retention
-- after its deadline.
local function store(s)
  local t = { 1, s.id, s.u or false, s.l or false, s.c, s.ls, s.a or false, s.abs, s.idle, s.v, s.dsz }
  if s.f or s.ua or s.ip then
    t[1] = 2
    t[12], t[13], t[14], t[15] = s.f or false, s.ua or false, s.ip or false, s.dat or false
  end
  for i = 1, #s.data do t[#t + 1] = s.data[i] end
  redis.call('SET', kS(s.h), cmsgpack.pack(t))
  redis.call('PEXPIREAT', kS(s.h), deadline(s) + KEEP)
end

-- Makes the indexes and the id pointer's expiry agree with s's deadline (the session's
-- own key gets its expiry when it is stored).
local function arm(s)
  local d = deadline(s)
  local at = d + KEEP
  redis.call('PEXPIREAT', kI(s.id), at)
  redis.call('ZADD', KX, d, s.id)
  if s.u then
    redis.call('ZADD', kU(s.u), d, s.id)
    keep_until(kU(s.u), at)
  end
  if ANON then
    if s.u then redis.call('ZREM', KN, s.id) else redis.call('ZADD', KN, s.ls, s.id) end
  end
  return d
end

-- Removes every key of s; `reason` goes into the event (false: no event).
local function drop(s, reason)
  redis.call('DEL', kS(s.h), kI(s.id))
  redis.call('ZREM', KX, s.id)
  redis.call('ZREM', KN, s.id)
  if s.u then redis.call('ZREM', kU(s.u), s.id) end
  if reason then event('k', 'ended', 'id', s.id, 'u', s.u or '', 'r', reason) end
end

-- The user's live sessions, oldest first; prunes whatever in the index is not one.
local function live_of(user)
  local k = kU(user)
  redis.call('ZREMRANGEBYSCORE', k, '-inf', NOW)
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', k, 0, -1)) do
    local s = by_id(id)
    if s and s.u == user and deadline(s) > NOW then
      out[#out + 1] = s
    else
      redis.call('ZREM', k, id)
    end
  end
  table.sort(out, function(x, y)
    if x.c ~= y.c then return x.c < y.c end
    return x.id < y.id
  end)
  return out
end

-- Makes room for one more session of `user` (not counting session id `except`):
-- returns false if the policy refuses.
local function make_room(user, max, policy, except)
  if max <= 0 then return true end
  local live = {}
  for _, s in ipairs(live_of(user)) do
    if s.id ~= except then live[#live + 1] = s end
  end
  if #live < max then return true end
  if policy == 'refuse' then return false end
  for i = 1, #live - max + 1 do drop(live[i], 'limit') end
  return true
end

-- A session as the client decodes it: 17 scalars (the 12th its deadline, the 13th the
-- time now, then factors, user agent, address and device time), then its data's
-- key/value pairs (as loaded: callers that change the data do not answer with an image).
local function image(s)
  local out = { s.id, s.u or '', s.u and '1' or '0', s.l or '', s.l and '1' or '0', fmt(s.c),
                fmt(s.ls), s.a and fmt(s.a) or '-1', fmt(s.abs), fmt(s.idle), fmt(s.v),
                fmt(deadline(s)), fmt(NOW), s.f or '', s.ua or '', s.ip or '',
                s.dat and fmt(s.dat) or '-1' }
  for i = 1, #s.data do out[#out + 1] = s.data[i] end
  return out
end

local function ok(...) return { 'ok', ... } end
local function with_image(tag, s)
  local img = image(s)
  table.insert(img, 1, tag)
  return img
end

-- The index in s.data of the key k's entry (its value is at the next index), or nil.
local function entry(s, k)
  for i = 1, #s.data - 1, 2 do
    if s.data[i] == k then return i end
  end
  return nil
end

-- The operations: one block each, run only for the operation asked (a table of
-- functions would create every closure on every call).

-- Makes room for one more session under a budget of `max` live sessions (0: none):
-- ends the least recently seen anonymous sessions under 'evict', or refuses. Returns
-- nil, or the refusal.
local function within_budget(max, policy)
  if max <= 0 then return nil end
  while true do
    local live = redis.call('ZCOUNT', KX, '(' .. fmt(NOW), '+inf')
    if live < max then return nil end
    if policy ~= 'evict' then return { 'full', fmt(live) } end
    local oldest = redis.call('ZRANGE', KN, 0, 0)
    if #oldest == 0 then return { 'full', fmt(live) } end
    local v = by_id(oldest[1])
    if not v or v.u then
      redis.call('ZREM', KN, oldest[1]) -- ended, or signed in
    elseif deadline(v) <= NOW then
      drop(v, 'expired')
    else
      drop(v, 'evicted')
    end
  end
end

-- create / import: h id user label created last_seen authenticated absolute idle
-- version dsz max policy budget_max budget_policy factors factors_now user_agent
-- address device_at [k v ...]. Times < 0 mean "now" (a create); factors_now '1' dates
-- every factor now.
if OP == 'admit' then
  local h, id, user, label = A[1], A[2], A[3], A[4]
  if redis.call('EXISTS', kS(h)) > 0 then return { 'exists', 'token' } end
  if redis.call('EXISTS', kI(id)) > 0 then return { 'exists', 'session id' } end
  local function at(x) local n = tonumber(x); if n < 0 then return NOW end; return n end
  local s = { h = h, id = id, u = (user ~= '' and user) or nil, l = (label ~= '' and label) or nil,
              c = at(A[5]), ls = at(A[6]), a = false, abs = tonumber(A[8]), idle = tonumber(A[9]),
              v = tonumber(A[10]), dsz = tonumber(A[11]), data = {} }
  for i = 21, #A do s.data[#s.data + 1] = A[i] end
  if s.u and A[16] ~= '' then
    s.f = factors_text(factors_of(A[16]), A[17] == '1' and NOW or nil)
  end
  if A[18] ~= '' then s.ua = A[18] end
  if A[19] ~= '' then s.ip = A[19] end
  if s.ua or s.ip then s.dat = at(A[20]) end
  if s.abs < 0 then s.abs = NOW - tonumber(A[8]) end -- a create passes -lifetime
  if s.u and A[7] ~= '' then s.a = at(A[7]) end
  if s.u then
    local nb = redis.call('GET', kB(s.u))
    if nb then
      nb = tonumber(nb)
      if tonumber(A[7]) == nil or tonumber(A[7]) >= 0 then
        -- An import authenticated before the user's not-before time: revoked already.
        if not s.a or s.a < nb then return { 'expired' } end
      elseif s.a < nb then
        s.a = nb -- a login after the revocation, on a clock set back past it
      end
    end
  end
  if deadline(s) <= NOW then return { 'expired' } end
  if s.u and not make_room(s.u, tonumber(A[12]), A[13], nil) then return { 'limit' } end
  local full = within_budget(tonumber(A[14]), A[15])
  if full then return full end
  store(s)
  redis.call('SET', kI(id), h)
  arm(s)
  event('k', 'created', 'id', id, 'u', s.u or '')
  return with_image('ok', s)
end

-- get / peek: h touch_ms (touch_ms < 0: no activity)
if OP == 'get' then
  local s = resolve(A[1])
  if not s then return { 'ended' } end
  local touch = tonumber(A[2])
  -- A read by a later request always counts for a session on trial: it promotes it.
  if touch >= 0 and (NOW - s.ls >= touch or (on_trial(s) and NOW > s.ls)) then
    s.ls = NOW
    store(s)
    arm(s)
  end
  return with_image('ok', s)
end

if OP == 'get_by_id' then
  local s = by_id(A[1])
  if not s or deadline(s) <= NOW then return { 'ended' } end
  return with_image('ok', s)
end

-- put: h key value entry_bytes max_data_bytes
if OP == 'put' then
  local s = resolve(A[1])
  if not s then return { 'ended' } end
  local i = entry(s, A[2])
  local old = 0
  if i then old = 6 + string.len(A[2]) + string.len(s.data[i + 1]) end
  local dsz = s.dsz - old + tonumber(A[4])
  if dsz > tonumber(A[5]) then return { 'too_large', fmt(dsz) } end
  if s.v >= MAXV then return exhausted(s) end
  local trial = on_trial(s)
  if i then
    s.data[i + 1] = A[3]
  else
    s.data[#s.data + 1] = A[2]
    s.data[#s.data + 1] = A[3]
  end
  s.v, s.dsz = s.v + 1, dsz
  store(s)
  if trial then arm(s) end -- written: no longer on trial
  return ok(fmt(s.v))
end

-- remove: h key
if OP == 'remove' then
  local s = resolve(A[1])
  if not s then return { 'ended' } end
  local i = entry(s, A[2])
  if not i then return ok(fmt(s.v)) end
  if s.v >= MAXV then return exhausted(s) end
  local trial = on_trial(s)
  s.dsz = s.dsz - (6 + string.len(A[2]) + string.len(s.data[i + 1]))
  table.remove(s.data, i)
  table.remove(s.data, i)
  s.v = s.v + 1
  store(s)
  if trial then arm(s) end
  return ok(fmt(s.v))
end

-- save: h expected_version dsz [k v ...]
if OP == 'save' then
  local s = resolve(A[1])
  if not s then return { 'ended' } end
  if s.v ~= tonumber(A[2]) then return { 'conflict', fmt(s.v) } end
  if s.v >= MAXV then return exhausted(s) end
  local trial = on_trial(s)
  s.data = {}
  for i = 4, #A do s.data[#s.data + 1] = A[i] end
  s.dsz, s.v = tonumber(A[3]), s.v + 1
  store(s)
  if trial then arm(s) end
  return ok(fmt(s.v))
end

if OP == 'touch' then
  local s = resolve(A[1])
  if not s then return { 'ended' } end
  s.ls = NOW
  store(s)
  arm(s)
  return ok()
end

-- extend: h by_ms (never shortens)
if OP == 'extend' then
  local s = resolve(A[1])
  if not s then return { 'ended' } end
  local abs = NOW + tonumber(A[2])
  if abs > s.abs then s.abs = abs end
  s.ls = NOW
  store(s)
  return ok(fmt(arm(s)))
end

-- set_expiry: h absolute_ms (a moment at or before now ends the session as expired)
if OP == 'set_expiry' then
  local s = resolve(A[1])
  if not s then return { 'ended' } end
  local abs = tonumber(A[2])
  if abs <= NOW then
    drop(s, 'expired')
    return ok(fmt(abs))
  end
  s.abs = abs
  s.ls = NOW
  store(s)
  return ok(fmt(arm(s)))
end

-- set_label: h has_label label
if OP == 'set_label' then
  local s = resolve(A[1])
  if not s then return { 'ended' } end
  if A[2] == '1' then s.l = A[3] else s.l = nil end
  store(s)
  return ok()
end

-- Binds `user` (a login), with the sign-in factors `f` (text, or nil: none).
local function bind(s, user, max, policy, f)
  if s.v >= MAXV then return exhausted(s) end
  local old = s.u
  if old ~= user and not make_room(user, max, policy, s.id) then return { 'limit' } end
  if old and old ~= user then redis.call('ZREM', kU(old), s.id) end
  -- Never dated before the user's not-before time (a clock set back past it).
  local at = math.max(NOW, num(redis.call('GET', kB(user))))
  s.u, s.a, s.ls, s.v = user, at, NOW, s.v + 1
  s.f = f
  store(s)
  arm(s)
  if old and old ~= user then event('k', 'unbound', 'id', s.id, 'u', old) end
  event('k', 'bound', 'id', s.id, 'u', user)
  return nil
end

-- bind: h user max policy factors ('' none; dated now)
if OP == 'bind' then
  local s = resolve(A[1])
  if not s then return { 'ended' } end
  return bind(s, A[2], tonumber(A[3]), A[4], factors_text(factors_of(A[5]), NOW)) or ok()
end

if OP == 'unbind' then
  local s = resolve(A[1])
  if not s then return { 'ended' } end
  if not s.u then return ok('0', '') end
  if s.v >= MAXV then return exhausted(s) end
  local user = s.u
  redis.call('ZREM', kU(user), s.id)
  s.v = s.v + 1
  s.u, s.a, s.f = nil, false, nil
  store(s)
  arm(s)
  event('k', 'unbound', 'id', s.id, 'u', user)
  return ok('1', user)
end

-- The session token hash `old` may be rotated from to `new`, or the refusal.
local function rotatable(old, new)
  local s, alias = load(old)
  if not s then
    if alias and resolve(old) then return nil, { 'retired' } end
    return nil, { 'ended' }
  end
  if deadline(s) <= NOW then return nil, { 'ended' } end
  if old == new or redis.call('EXISTS', kS(new)) > 0 then
    return nil, { 'exists' }
  end
  return s, nil
end

-- Moves s to token hash `new`; the old one resolves for `grace` ms (not past s's end).
local function rotate(s, new, grace)
  local old = s.h
  redis.call('DEL', kS(old))
  s.h, s.ls = new, NOW
  store(s)
  redis.call('SET', kI(s.id), new)
  local d = arm(s)
  if grace > 0 then
    if NOW + grace > d then grace = d - NOW end
    redis.call('SET', kS(old), cmsgpack.pack({ 0, s.id }), 'PX', grace)
  end
  event('k', 'rotated', 'id', s.id)
end

-- rotate: old_h new_h grace_ms
if OP == 'rotate' then
  local s, err = rotatable(A[1], A[2])
  if err then return err end
  rotate(s, A[2], tonumber(A[3]))
  return ok()
end

-- login: old_h new_h grace_ms user max policy factors: rotate, then bind, as one step
-- (the limit is checked first, so a refused login changes nothing); the factors
-- ('' for none) are dated now.
if OP == 'login' then
  local s, err = rotatable(A[1], A[2])
  if err then return err end
  local user = A[4]
  if s.v >= MAXV then return exhausted(s) end
  if s.u ~= user and not make_room(user, tonumber(A[5]), A[6], s.id) then return { 'limit' } end
  rotate(s, A[2], tonumber(A[3]))
  bind(s, user, 0, '', factors_text(factors_of(A[7]), NOW))
  return ok()
end

-- step_up: old_h new_h grace_ms factors max. Rotates (unless new_h is ''), and adds
-- the factors (dated now) to the session's, replacing those of the same methods;
-- refused if no user is signed in, or if more than `max` factors would result.
if OP == 'step_up' then
  local s, err
  if A[2] == '' then
    s = resolve(A[1])
    if not s then return { 'ended' } end
  else
    s, err = rotatable(A[1], A[2])
    if err then return err end
  end
  if not s.u then return { 'not_signed_in' } end
  local new = factors_of(A[4])
  local out = {}
  for _, x in ipairs(factors_of(s.f)) do
    local replaced = false
    for _, y in ipairs(new) do
      if y.m == x.m then replaced = true end
    end
    if not replaced then out[#out + 1] = x end
  end
  for _, y in ipairs(new) do
    y.at = NOW
    out[#out + 1] = y
  end
  if #out > tonumber(A[5]) then return { 'too_many', fmt(#out) } end
  s.f = factors_text(out)
  if A[2] == '' then store(s) else rotate(s, A[2], tonumber(A[3])) end
  return ok()
end

-- seen_from: h user_agent address touch_ms ('' for none). Records the device when it
-- differs from the session's, at most once per touch interval; answers '1' if it did.
if OP == 'seen_from' then
  local s = resolve(A[1])
  if not s then return { 'ended' } end
  local ua, ip = A[2], A[3]
  if ua == '' then ua = nil end
  if ip == '' then ip = nil end
  if s.dat and s.ua == ua and s.ip == ip then return ok('0') end
  if s.dat and NOW - s.dat < tonumber(A[4]) then return ok('0') end
  s.ua, s.ip, s.dat = ua, ip, NOW
  store(s)
  return ok('1')
end

-- end: h (an old token in its grace period ends its session too)
if OP == 'end' then
  local s = resolve(A[1])
  if not s then return ok('0') end
  drop(s, 'ended')
  return ok('1')
end

if OP == 'end_by_id' then
  local s = by_id(A[1])
  if not s or deadline(s) <= NOW then return ok('0') end
  drop(s, 'ended')
  return ok('1')
end

if OP == 'sessions_of' then
  local out = { 'ok' }
  for _, s in ipairs(live_of(A[1])) do out[#out + 1] = image(s) end
  return out
end

-- Ends `user`'s sessions authenticated before `at` (all of them when `at` is nil) that
-- `meets` (all of them when nil): those past their deadline as expired, the rest as
-- revoked, reported together in one revoke event; drops from the user's index whatever
-- is not one of their sessions.
local function revoke_user(user, at, meets)
  local k = kU(user)
  local ended = {}
  for _, id in ipairs(redis.call('ZRANGE', k, 0, -1)) do
    local s = by_id(id)
    if not s or s.u ~= user then
      redis.call('ZREM', k, id) -- gone, or another user's now: the repair rule
    elseif deadline(s) <= NOW then
      drop(s, 'expired')
    elseif (not at or not s.a or s.a < at) and (not meets or meets(s)) then
      drop(s, 'revoked')
      ended[#ended + 1] = id
    end
  end
  event('k', 'revoked', 'u', user, 'ids', table.concat(ended, ','))
  return ok(fmt(#ended))
end

if OP == 'revoke' then
  return revoke_user(A[1], nil)
end

-- revoke_where: user kind value lifetimes. Ends the user's sessions that signed in
-- with method `value` (kind 'm') or whose level is below `value` (kind 'l'): the highest
-- level among their factors still within their level's lifetime ("level ms" pairs
-- joined by ';'), 0 if none.
if OP == 'revoke_where' then
  local kind, value = A[2], A[3]
  local life = {}
  for l, ms in string.gmatch(A[4], '(%d+) (%d+)') do life[tonumber(l)] = tonumber(ms) end
  local function meets(s)
    local best = 0
    for _, x in ipairs(factors_of(s.f)) do
      if kind == 'm' and x.m == value then return true end
      local l = life[x.l]
      if (not l or NOW < x.at + l) and x.l > best then best = x.l end
    end
    return kind == 'l' and best < tonumber(value)
  end
  return revoke_user(A[1], nil, meets)
end

-- revoke_before: user at. Ends the user's sessions authenticated before `at` (at most
-- now) and raises the user's not-before time to it.
if OP == 'revoke_before' then
  local user = A[1]
  local at = math.min(tonumber(A[2]), NOW)
  local kb = kB(user)
  redis.call('SET', kb, fmt(math.max(at, num(redis.call('GET', kb)))))
  redis.call('SADD', P .. ':B', user)
  return revoke_user(user, at)
end

-- not_before_list: cursor. A page of the users with a not-before time:
-- { 'ok', next cursor, user, time, user, time, ... }.
if OP == 'not_before_list' then
  local page = redis.call('SSCAN', P .. ':B', A[1], 'COUNT', 500)
  local out = { 'ok', page[1] }
  for _, user in ipairs(page[2]) do
    local at = redis.call('GET', kB(user))
    if at then
      out[#out + 1] = user
      out[#out + 1] = at
    end
  end
  return out
end

-- revoke_others: h (or, for revoke_others_by_id, the public id). Ends every other
-- session of that session's user; keeps it.
if OP == 'revoke_others' or OP == 'revoke_others_by_id' then
  local s
  if OP == 'revoke_others' then s = resolve(A[1]) else s = by_id(A[1]) end
  if not s or deadline(s) <= NOW then return { 'ended' } end
  if not s.u then return ok('0') end
  local k = kU(s.u)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGE', k, 0, -1)) do
    if id ~= s.id then
      local o = by_id(id)
      if o and o.u == s.u then
        if deadline(o) > NOW then
          drop(o, 'revoked_others')
          n = n + 1
        else
          drop(o, 'expired')
        end
      else
        redis.call('ZREM', k, id) -- gone, or another user's now: the repair rule
      end
    end
  end
  return ok(fmt(n))
end

-- reap: batch. Ends sessions whose deadline passed; reports sessions Redis already
-- dropped (no node reaped them within the retention) as expired with no user.
if OP == 'reap' then
  local n = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KX, '-inf', NOW, 'LIMIT', 0, tonumber(A[1]))) do
    local s = by_id(id)
    if s then
      local d = deadline(s)
      if d <= NOW then
        drop(s, 'expired')
        n = n + 1
      else
        redis.call('ZADD', KX, d, id)
      end
    else
      redis.call('ZREM', KX, id)
      redis.call('DEL', kI(id))
      event('k', 'ended', 'id', id, 'u', '', 'r', 'expired')
      n = n + 1
    end
  end
  return ok(fmt(n))
end

-- clear: batch. Ends up to `batch` sessions (no per-session events); the caller loops
-- while any remain, then calls clear_done.
if OP == 'clear' then
  local n = 0
  for _, id in ipairs(redis.call('ZRANGE', KX, 0, tonumber(A[1]) - 1)) do
    local s = by_id(id)
    if s then
      if deadline(s) > NOW then n = n + 1 end
      drop(s, false)
    else
      redis.call('ZREM', KX, id)
      redis.call('DEL', kI(id))
    end
  end
  return ok(fmt(n), fmt(redis.call('ZCARD', KX)))
end

if OP == 'clear_done' then
  redis.call('DEL', KN)
  event('k', 'cleared', 'n', A[1])
  return ok()
end

if OP == 'len' then
  return ok(fmt(redis.call('ZCOUNT', KX, '(' .. fmt(NOW), '+inf')))
end

-- export: cursor batch -> next cursor, then the images (each followed by its h) of
-- the live sessions in this step of a ZSCAN of the registry (every session live for the
-- whole walk is returned at least once; the caller drops repeats).
if OP == 'export' then
  local r = redis.call('ZSCAN', KX, A[1], 'COUNT', tonumber(A[2]))
  local out = { 'ok', r[1] }
  for i = 1, #r[2], 2 do
    local s = by_id(r[2][i])
    if s and deadline(s) > NOW then
      local img = image(s)
      img[#img + 1] = s.h
      out[#out + 1] = img
    end
  end
  return out
end

return redis.error_reply('sessiondb: unknown operation ' .. tostring(OP))
