-- One session's line in its owner's list, from its id (the owner index lists ids): nil when
-- the session is gone, else {title, settings, message count, texts} and the bytes of message
-- text read. `texts` is {title, text of each message...} for a search (`with_text`), else {}.
local function summary_of(id, with_text)
  local base = SESSION_BASE[1] .. id .. SESSION_BASE[2]
  local fields = redis.call('HMGET', base .. SESSION_HASH, FIELD_SETTINGS, FIELD_TITLE)
  if not fields[1] then return nil, 0 end
  local count, texts, bytes = redis.call('LLEN', base .. KEY_ORDER), {}, 0
  if with_text then
    texts[1] = fields[2] or ''
    for _, m in ipairs(redis.call('LRANGE', base .. KEY_ORDER, 0, -1)) do
      local text = redis.call('GET', base .. KEY_TEXT .. m) or ''
      texts[#texts + 1] = text
      bytes = bytes + #text
    end
  end
  return {fields[2] or '', fields[1], count, texts}, bytes
end
