-- lugger.json: JSON (RFC 8259) for field values that are tables, for
-- init(params), and for scripts (lugger.json_encode / json_decode).
--
-- Decoding: objects become tables with string keys, arrays become tables
-- 1..n marked with a protected metatable (getmetatable(t) == "lugger.array")
-- so that empty arrays encode back as [], null becomes lugger.null, and
-- numbers become Lua numbers (integers beyond 2^53 round to the nearest
-- double, as in any Lua JSON library).
--
-- Encoding: a table is an array when its keys are exactly 1..n (n > 0) or
-- it is marked as one (lugger.array), else an object; object keys are
-- strings or numbers (written as strings), sorted so that the output is
-- deterministic. Strings with control bytes, quotes, backslashes or
-- non-ASCII bytes are quoted by C (lg_ffi_json_quote), which escapes and
-- replaces invalid UTF-8 exactly as the record encoder does. NaN and
-- infinities are written as null. Cycles and nesting deeper than 100 are
-- errors.
local ffi = require("ffi")

local M = {}

M.cdef = [[
int lg_ffi_json_quote(const char *s, size_t len, char *out, size_t cap, size_t *outlen);
]]
ffi.cdef(M.cdef)

local C = ffi.C
local byte, char, find, format, sub, concat = string.byte, string.char,
  string.find, string.format, string.sub, table.concat
local floor, huge = math.floor, math.huge
local type, pairs, tonumber, error, setmetatable, getmetatable =
  type, pairs, tonumber, error, setmetatable, getmetatable
local sort = table.sort

-- JSON null: one frozen sentinel per Lua state.
M.null = setmetatable({}, {
  __metatable = "lugger.null",
  __tostring = function() return "null" end,
  __newindex = function() error("lugger.null is read-only", 2) end,
})
local null = M.null

local array_mt = { __metatable = "lugger.array" }

-- Marks `t` (default: a new table) as a JSON array; returns it.
function M.array(t)
  return setmetatable(t or {}, array_mt)
end

local qbuf, qcap = nil, 0
local qlen = ffi.new("size_t[1]")

local function quote(s)
  if not find(s, '[%c"\\\128-\255]') then
    return '"' .. s .. '"'
  end
  local need = #s * 6 + 2
  if need > qcap then
    qcap = need < 256 and 256 or need
    qbuf = ffi.new("char[?]", qcap)
  end
  local rc = C.lg_ffi_json_quote(s, #s, qbuf, qcap, qlen)
  if rc ~= 0 then
    error("json: cannot quote a string (" .. rc .. ")", 0)
  end
  return ffi.string(qbuf, qlen[0])
end
M.quote = quote

local function number(v)
  if v ~= v or v == huge or v == -huge then
    return "null"
  end
  if v == floor(v) and v >= -9007199254740992 and v <= 9007199254740992 then
    return format("%d", v)
  end
  local s = format("%.15g", v)
  if tonumber(s) ~= v then
    s = format("%.17g", v)
  end
  return s
end

local encode_value

local function keystr(k)
  if type(k) == "string" then return k end
  if type(k) == "number" then return number(k) end
  error("json: cannot encode a table key of type " .. type(k), 0)
end

local function encode_table(t, out, n, depth)
  if depth > 100 then
    error("json: tables nested too deeply (a cycle?)", 0)
  end
  local len, count = #t, 0
  for _ in pairs(t) do count = count + 1 end
  if count == len and (len > 0 or getmetatable(t) == "lugger.array") then
    n = n + 1; out[n] = "["
    for i = 1, len do
      if i > 1 then n = n + 1; out[n] = "," end
      n = encode_value(t[i], out, n, depth + 1)
    end
    n = n + 1; out[n] = "]"
    return n
  end
  local keys, ks = {}, {}
  for k in pairs(t) do
    local s = keystr(k)
    keys[#keys + 1] = s
    ks[s] = k
  end
  sort(keys)
  n = n + 1; out[n] = "{"
  for i = 1, #keys do
    if i > 1 then n = n + 1; out[n] = "," end
    n = n + 1; out[n] = quote(keys[i])
    n = n + 1; out[n] = ":"
    n = encode_value(t[ks[keys[i]]], out, n, depth + 1)
  end
  n = n + 1; out[n] = "}"
  return n
end

encode_value = function(v, out, n, depth)
  local tv = type(v)
  local s
  if tv == "string" then
    s = quote(v)
  elseif tv == "number" then
    s = number(v)
  elseif tv == "boolean" then
    s = v and "true" or "false"
  elseif v == nil or v == null then
    s = "null"
  elseif tv == "table" then
    return encode_table(v, out, n, depth)
  else
    error("json: cannot encode a " .. tv, 0)
  end
  n = n + 1
  out[n] = s
  return n
end

-- Encodes a Lua value as JSON text. Raises an error (without position) for
-- values JSON cannot hold.
function M.encode(v)
  local out = {}
  local n = encode_value(v, out, 0, 0)
  return concat(out, "", 1, n)
end

-- ---- decoding ----

local escapes = {
  [34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f",
  [110] = "\n", [114] = "\r", [116] = "\t",
}

local function utf8(cp)
  if cp < 0x80 then
    return char(cp)
  elseif cp < 0x800 then
    return char(0xc0 + floor(cp / 64), 0x80 + cp % 64)
  elseif cp < 0x10000 then
    return char(0xe0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return char(0xf0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64,
              0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
end

local decode_value

local function fail(pos, what)
  error({ json = "json: " .. what .. " at byte " .. pos }, 0)
end

local function skip(s, pos)
  local _, e = find(s, "^[ \t\r\n]*", pos)
  return e + 1
end

local function decode_string(s, pos)
  -- pos is just after the opening quote
  local parts, np = nil, 0
  local start = pos
  while true do
    local q = find(s, '["\\%z\1-\31]', pos)
    if not q then fail(start - 1, "unterminated string") end
    local c = byte(s, q)
    if c == 34 then
      if not parts then return sub(s, start, q - 1), q + 1 end
      np = np + 1; parts[np] = sub(s, pos, q - 1)
      return concat(parts, "", 1, np), q + 1
    elseif c ~= 92 then
      fail(q, "control character in string")
    end
    parts = parts or {}
    np = np + 1; parts[np] = sub(s, pos, q - 1)
    local e = byte(s, q + 1)
    if e == 117 then -- \uXXXX
      local hex = sub(s, q + 2, q + 5)
      local cp = #hex == 4 and not find(hex, "[^%x]") and tonumber(hex, 16)
      if not cp then fail(q, "bad \\u escape") end
      pos = q + 6
      if cp >= 0xd800 and cp <= 0xdbff and sub(s, pos, pos + 1) == "\\u" then
        local lo = tonumber(sub(s, pos + 2, pos + 5), 16)
        if lo and lo >= 0xdc00 and lo <= 0xdfff then
          cp = 0x10000 + (cp - 0xd800) * 1024 + (lo - 0xdc00)
          pos = pos + 6
        end
      end
      if cp >= 0xd800 and cp <= 0xdfff then cp = 0xfffd end
      np = np + 1; parts[np] = utf8(cp)
    else
      local r = escapes[e]
      if not r then fail(q, "bad escape") end
      np = np + 1; parts[np] = r
      pos = q + 2
    end
  end
end

local function decode_array(s, pos, depth)
  local t, n = setmetatable({}, array_mt), 0
  pos = skip(s, pos)
  if byte(s, pos) == 93 then return t, pos + 1 end
  while true do
    local v
    v, pos = decode_value(s, pos, depth)
    n = n + 1; t[n] = v
    pos = skip(s, pos)
    local c = byte(s, pos)
    if c == 93 then return t, pos + 1 end
    if c ~= 44 then fail(pos, "expected ',' or ']'") end
    pos = pos + 1
  end
end

local function decode_object(s, pos, depth)
  local t = {}
  pos = skip(s, pos)
  if byte(s, pos) == 125 then return t, pos + 1 end
  while true do
    if byte(s, pos) ~= 34 then fail(pos, "expected a string key") end
    local k
    k, pos = decode_string(s, pos + 1)
    pos = skip(s, pos)
    if byte(s, pos) ~= 58 then fail(pos, "expected ':'") end
    local v
    v, pos = decode_value(s, pos + 1, depth)
    t[k] = v
    pos = skip(s, pos)
    local c = byte(s, pos)
    if c == 125 then return t, pos + 1 end
    if c ~= 44 then fail(pos, "expected ',' or '}'") end
    pos = skip(s, pos + 1)
  end
end

decode_value = function(s, pos, depth)
  if depth > 100 then fail(pos, "nested too deeply") end
  pos = skip(s, pos)
  local c = byte(s, pos)
  if c == 34 then
    return decode_string(s, pos + 1)
  elseif c == 123 then
    return decode_object(s, pos + 1, depth + 1)
  elseif c == 91 then
    return decode_array(s, pos + 1, depth + 1)
  elseif c == 116 and sub(s, pos, pos + 3) == "true" then
    return true, pos + 4
  elseif c == 102 and sub(s, pos, pos + 4) == "false" then
    return false, pos + 5
  elseif c == 110 and sub(s, pos, pos + 3) == "null" then
    return null, pos + 4
  end
  local _, e = find(s, "^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  local v = e and tonumber(sub(s, pos, e))
  if not v then fail(pos, c and "unexpected character" or "unexpected end") end
  return v, e + 1
end

-- Decodes JSON text. Returns the value, or nil and an error message.
function M.decode(s)
  if type(s) ~= "string" then
    return nil, "json: expected a string, got " .. type(s)
  end
  local ok, v, pos = pcall(decode_value, s, 1, 0)
  if not ok then
    if type(v) == "table" and v.json then return nil, v.json end
    error(v, 0)
  end
  pos = skip(s, pos)
  if pos <= #s then
    return nil, "json: trailing characters at byte " .. pos
  end
  return v
end

return M
