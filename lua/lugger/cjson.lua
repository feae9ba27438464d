-- lugger.cjson: what `require "cjson"` gives a Fluent Bit filter
-- (compat = "fluent-bit"): lua-cjson 2.1's Lua API, on lugger's own JSON
-- code (lugger.json), so no C module is loaded into the sandbox.
--
-- The API (as lua-cjson documents it):
--   cjson.encode(v) -> text; raises "Cannot serialise ..." for functions,
--       excessively sparse arrays, NaN/inf (unless encode_invalid_numbers),
--       nesting deeper than encode_max_depth (default 1000)
--   cjson.decode(text) -> value; raises on invalid JSON
--   cjson.null            JSON null (the same value as flb_null and
--                         lugger.null, so `v == cjson.null` works)
--   cjson.empty_array     encodes as []
--   cjson.array_mt, cjson.empty_array_mt  metatables marking arrays
--   cjson.encode_empty_table_as_object([bool])   default true: {} -> "{}"
--   cjson.decode_array_with_array_mt([bool])     default false
--   cjson.encode_escape_forward_slash([bool])    default true: "/" -> "\/"
--   cjson.encode_sparse_array([convert[, ratio[, safe]]])  default false, 2, 10
--   cjson.encode_number_precision([1..16])       default 14
--   cjson.encode_max_depth([n]), cjson.decode_max_depth([n])
--   cjson.encode_invalid_numbers([bool|"null"]), cjson.decode_invalid_numbers,
--   cjson.encode_keep_buffer   accepted
--   cjson.new() -> a module with its own settings; cjson.safe -> the same
--       functions returning nil and a message instead of raising
--
-- Differences from lua-cjson: object keys are written sorted (lua-cjson
-- writes them in table order, which Lua does not define); cjson.null and
-- cjson.empty_array are tables, not lightuserdata.
local json = require("lugger.json")

local type, pairs, ipairs, next, tostring, error, pcall, setmetatable, getmetatable =
  type, pairs, ipairs, next, tostring, error, pcall, setmetatable, getmetatable
local floor, huge = math.floor, math.huge
local format, gsub, concat, sort = string.format, string.gsub, table.concat, table.sort
local quote, null = json.quote, json.null

local M = {}

local function new()
  local cfg = {
    empty_as_object = true, array_mt_on_decode = false, escape_slash = true,
    sparse_convert = false, sparse_ratio = 2, sparse_safe = 10,
    precision = 14, encode_depth = 1000, decode_depth = 1000,
    invalid = false,
  }
  local cj = { _NAME = "cjson", _VERSION = "2.1.0", null = null }
  cj.array_mt = { __name = "cjson.array" }
  cj.empty_array_mt = { __name = "cjson.empty_array" }
  cj.empty_array = setmetatable({}, { __tostring = function() return "[]" end })

  local function number(v)
    if v ~= v or v == huge or v == -huge then
      if cfg.invalid == "null" then return "null" end
      if not cfg.invalid then
        error("Cannot serialise number: must not be NaN or Infinity", 0)
      end
      return v ~= v and "nan" or (v > 0 and "inf" or "-inf")
    end
    if v == floor(v) and v > -1e15 and v < 1e15 then return format("%d", v) end
    return format("%." .. cfg.precision .. "g", v)
  end

  local encode_value

  -- lua-cjson's rule: a table whose keys are all positive integers is an
  -- array of length max key (holes are null), unless it is "excessively
  -- sparse"; an empty table is an object unless marked as an array.
  local function array_length(t)
    local max, count = 0, 0
    for k in pairs(t) do
      if type(k) == "number" and k > 0 and k == floor(k) then
        if k > max then max = k end
        count = count + 1
      else
        return -1
      end
    end
    if max > cfg.sparse_safe and max > count * cfg.sparse_ratio then
      if cfg.sparse_convert then return -1 end
      error("Cannot serialise table: excessively sparse array", 0)
    end
    return max
  end

  local function encode_table(t, out, depth)
    if depth > cfg.encode_depth then
      error("Cannot serialise, excessive nesting (" .. depth .. ")", 0)
    end
    local mt = getmetatable(t)
    local len
    if (t == cj.empty_array or mt == cj.empty_array_mt) and next(t) == nil then
      out[#out + 1] = "[]"
      return
    elseif mt == cj.empty_array_mt or mt == cj.array_mt or mt == "lugger.array" then
      len = #t
    else
      len = array_length(t)
      if len == 0 and cfg.empty_as_object then len = -1 end
    end
    if len >= 0 then
      out[#out + 1] = "["
      for i = 1, len do
        if i > 1 then out[#out + 1] = "," end
        encode_value(t[i], out, depth + 1)
      end
      out[#out + 1] = "]"
      return
    end
    local keys, ks = {}, {}
    for k in pairs(t) do
      local s
      if type(k) == "string" then s = k
      elseif type(k) == "number" then s = number(k)
      else error("Cannot serialise " .. type(k) .. ": table key must be a number or string", 0) end
      keys[#keys + 1] = s
      ks[s] = k
    end
    sort(keys)
    out[#out + 1] = "{"
    for i = 1, #keys do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = quote(keys[i])
      out[#out + 1] = ":"
      encode_value(t[ks[keys[i]]], out, depth + 1)
    end
    out[#out + 1] = "}"
  end

  encode_value = function(v, out, depth)
    local tv = type(v)
    if tv == "string" then
      out[#out + 1] = quote(v)
    elseif tv == "number" then
      out[#out + 1] = number(v)
    elseif tv == "boolean" then
      out[#out + 1] = v and "true" or "false"
    elseif v == nil or v == null then
      out[#out + 1] = "null"
    elseif tv == "table" then
      encode_table(v, out, depth)
    else
      error("Cannot serialise " .. tv .. ": type not supported", 0)
    end
  end

  function cj.encode(v)
    local out = {}
    encode_value(v, out, 1)
    local s = concat(out)
    -- A "/" can only stand inside a string in JSON text.
    if cfg.escape_slash then s = gsub(s, "/", "\\/") end
    return s
  end

  -- Turns lugger.json's decoded value into lua-cjson's: arrays are plain
  -- tables (or carry array_mt), null stays the null sentinel.
  local function convert(v, depth)
    if type(v) ~= "table" or v == null then return v end
    if depth > cfg.decode_depth then
      error("Found too many nested data structures (" .. depth .. ")", 0)
    end
    local is_array = getmetatable(v) == "lugger.array"
    local t = {}
    for k, x in pairs(v) do t[k] = convert(x, depth + 1) end
    if is_array and cfg.array_mt_on_decode then setmetatable(t, cj.array_mt) end
    return t
  end

  function cj.decode(s)
    if type(s) ~= "string" then
      error("bad argument #1 to 'decode' (string expected, got " .. type(s) .. ")", 2)
    end
    local v, err = json.decode(s)
    if err then error((gsub(err, "^json: ", "Expected value but found invalid token: ")), 2) end
    return convert(v, 1)
  end

  local function flag(key)
    return function(on)
      if on ~= nil then cfg[key] = on == true or on == "on" or on == 1 end
      return cfg[key]
    end
  end
  cj.encode_empty_table_as_object = flag("empty_as_object")
  cj.decode_array_with_array_mt = flag("array_mt_on_decode")
  cj.encode_escape_forward_slash = flag("escape_slash")
  function cj.encode_sparse_array(convert_, ratio, safe)
    if convert_ ~= nil then cfg.sparse_convert = convert_ == true or convert_ == "on" end
    if ratio ~= nil then cfg.sparse_ratio = ratio end
    if safe ~= nil then cfg.sparse_safe = safe end
    return cfg.sparse_convert, cfg.sparse_ratio, cfg.sparse_safe
  end
  function cj.encode_number_precision(n)
    if n ~= nil then
      if type(n) ~= "number" or n < 1 or n > 16 then
        error("bad argument #1 to 'encode_number_precision' (expected integer between 1 and 16)", 2)
      end
      cfg.precision = floor(n)
    end
    return cfg.precision
  end
  function cj.encode_max_depth(n)
    if n ~= nil then cfg.encode_depth = n end
    return cfg.encode_depth
  end
  function cj.decode_max_depth(n)
    if n ~= nil then cfg.decode_depth = n end
    return cfg.decode_depth
  end
  function cj.encode_invalid_numbers(v)
    if v ~= nil then cfg.invalid = v == "null" and "null" or (v == true or v == "on") end
    return cfg.invalid
  end
  function cj.decode_invalid_numbers(v) return v == nil and true or v end
  function cj.encode_keep_buffer(v) return v == nil and true or v end
  cj.new = new

  local safe = {}
  for k, f in pairs(cj) do safe[k] = f end
  for _, name in ipairs({ "encode", "decode" }) do
    local f = cj[name]
    safe[name] = function(...)
      local ok, r = pcall(f, ...)
      if ok then return r end
      return nil, tostring(r)
    end
  end
  cj.safe = safe
  return cj
end

-- A new cjson module table (one per script, so one script's settings do
-- not change another's).
M.new = new

return M
