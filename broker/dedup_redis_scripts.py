"""The Lua scripts of the Redis dedup window (see :mod:`broker.dedup_redis`): each takes a
batch's key digests back to back in one argument, so a step is one command per batch."""

from __future__ import annotations

__all__: list[str] = []

_DIGEST = 16
"""Bytes of a key's digest; the scripts take a batch's digests back to back."""
_ID_BYTES = 8
_CLAIMING = """
local prefix, window, blob, frame, px = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
redis.call('SET', prefix .. 'f:' .. frame .. ':p', '1', 'PX', px)
local mine = 'c' .. frame .. ':'
local out = {}
for i = 1, #blob, 16 do
  local n = (i - 1) / 16
  local k = prefix .. string.sub(blob, i, i + 15)
"""
"""The start of both claim scripts: the frame's pending marker, then a loop over the batch's
keys (``k``, the ``n``-th) that adds to ``out``."""
_CLAIM = (
    _CLAIMING
    + """  local old = redis.call('SET', k, mine .. n, 'NX', 'PX', window, 'GET')
  if old then
    local other, m = string.match(old, '^c([^:]+):(%d+)$')
    if other then
      local stored = redis.call('GET', prefix .. 'f:' .. other)
      local id = stored and string.sub(stored, m * 8 + 1, m * 8 + 8) or ''
      if #id == 8 and id ~= '\0\0\0\0\0\0\0\0' then
        old = '=' .. id
      elseif stored or redis.call('EXISTS', prefix .. 'f:' .. other .. ':p') == 0 then
        redis.call('SET', k, mine .. n, 'PX', window)
        old = false
      end
    end
    if old then
      out[#out + 1] = n
      out[#out + 1] = old
    end
  end
end
return out
"""
)
"""Claims every key of the batch that is not there yet for ``frame``, and takes over the keys
whose frame neither stored them nor is pending; answers ``[index, value, ...]`` for the
others: ``=<8-byte id>`` (stored), or the claim of a frame still pending."""
_FRESH = (
    _CLAIMING
    + """  if not redis.call('SET', k, mine .. n, 'NX', 'PX', window) then
    out[#out + 1] = n
  end
end
return out
"""
)
"""Claims the keys of a fresh frame for ``frame`` without reading anything; answers the
indexes of the keys that were there (the frame was not fresh after all: they are looked up)."""
_STORED = """
local prefix, window = ARGV[1], ARGV[2]
for i = 3, #ARGV, 2 do
  redis.call('SET', prefix .. 'f:' .. ARGV[i], ARGV[i + 1], 'PX', window)
  redis.call('DEL', prefix .. 'f:' .. ARGV[i] .. ':p')
end
return 0
"""
"""Writes each frame's stored record (``ARGV[i]`` the frame, ``ARGV[i + 1]`` its ids) and
drops its pending marker."""
_RENEW = """
local prefix, px = ARGV[1], ARGV[2]
for i = 3, #ARGV do redis.call('PEXPIRE', prefix .. 'f:' .. ARGV[i] .. ':p', px) end
return 0
"""
"""Extends the pending markers of the frames named."""
