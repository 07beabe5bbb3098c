-- An owner's sessions, newest activity first, from a cursor. KEYS[1] the owner's index;
-- ARGV[1] scores below this are of expired sessions (pruned), [2] the cursor's score ('':
-- from the newest), [3] the cursor's session id, [4] most sessions to return, [5] '1' to
-- return their text too (a search), [6] stop once this many bytes of text are returned,
-- [7] look at the newest this many sessions only ('0': all).
-- Returns {more, {id, score, title, settings, message count, {title, text, ...}}, ...}:
-- `more` is 1 when sessions after the last one returned remain. Index entries whose session
-- is gone are removed on the way.
local index = KEYS[1]
redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. ARGV[1])
local top, after_score, after_id = '+inf', nil, ARGV[3]
if ARGV[2] ~= '' then top, after_score = ARGV[2], tonumber(ARGV[2]) end
local want, with_text, max_bytes = tonumber(ARGV[4]), ARGV[5] == '1', tonumber(ARGV[6])
local floor_id, floor_score = nil, nil
if tonumber(ARGV[7]) > 0 then
  local floor = redis.call('ZREVRANGE', index, ARGV[7] - 1, ARGV[7] - 1, 'WITHSCORES')
  if #floor > 0 then floor_id, floor_score = floor[1], tonumber(floor[2]) end
end
local out, found, bytes, offset = {0}, 0, 0, 0
while true do
  local page = redis.call('ZREVRANGEBYSCORE', index, top, '-inf', 'WITHSCORES', 'LIMIT', offset, 64)
  if #page == 0 then return out end
  offset = offset + #page / 2
  for i = 1, #page, 2 do
    local id, score = page[i], tonumber(page[i + 1])
    -- Past the newest ARGV[7]: a search looks no further.
    if floor_id and (score < floor_score or (score == floor_score and id < floor_id)) then
      return out
    end
    if not (after_score and score == after_score and id >= after_id) then
      if found == want or (with_text and bytes >= max_bytes) then
        out[1] = 1
        return out
      end
      local summary, read = summary_of(id, with_text)
      if summary then
        bytes = bytes + read
        out[#out + 1] = {id, page[i + 1], unpack(summary)}
        found = found + 1
      else
        redis.call('ZREM', index, id)
        offset = offset - 1
      end
    end
  end
end
