-- lugger.fluentbit: runs unmodified Fluent Bit Lua filters
-- (script entry `compat = "fluent-bit", call = "fn"`; `lugger test
-- --compat fluent-bit --call fn`).
--
-- The filter is `function fn(tag, timestamp, record) return code,
-- timestamp, record end`, called once per record:
--   code -1 drop; 0 keep unchanged; 1 new timestamp and record; 2 new
--   record, old timestamp; for 1 and 2 the record may be an array of
--   records (tables), which splits the record into several.
-- The record table holds the body under `log`, `log.iostream` when the
-- format has a stream, the source's metadata keys and the fields. On the
-- way back `log` becomes the body, other keys become fields (set only when
-- changed, so untouched metadata is not copied into fields), and keys
-- removed from the table are removed from the record. New keys are set in
-- sorted order, so the output's key order does not depend on Lua's table
-- order.
--
-- Fluent Bit's options (the entry's `compat_opts`, `--compat-opt K=V`):
--   time_as_table   timestamp is {sec=, nsec=} instead of seconds (float)
--   type_int_key    space-separated keys converted to integers on return
--   type_array_key  space-separated keys whose tables are JSON arrays
--                   (an empty table then encodes as [] instead of {})
--   enable_flb_null JSON nulls reach the filter as the global flb_null
--                   (otherwise null keys are absent, and kept)
--   protected_mode  accepted; lugger always catches errors per record (the
--                   record fails and goes to the dead-letter output)
--   tag             the tag argument (default: the pipeline's name)
local ffi = require("ffi")
local bit = require("bit")
local batch = require("lugger.batch")
local json = require("lugger.json")

local C = ffi.C
local band = bit.band
local type, pairs, ipairs, tostring, tonumber, error =
  type, pairs, ipairs, tostring, tonumber, error
local floor, sort = math.floor, table.sort
local ffi_string = ffi.string

local SKIP = batch.DROPPED + batch.FAILED
local NS = 1000000000LL

local M = {}

local KNOWN = {
  time_as_table = true, type_int_key = true, type_array_key = true,
  enable_flb_null = true, protected_mode = true, tag = true,
}

local function truthy(v)
  if type(v) == "boolean" then return v end
  v = tostring(v):lower()
  return v == "true" or v == "on" or v == "yes" or v == "1"
end

local function key_set(v)
  local set = {}
  if type(v) == "table" then
    for _, k in ipairs(v) do set[tostring(k)] = true end
  elseif v ~= nil then
    for k in tostring(v):gmatch("%S+") do set[k] = true end
  end
  return set
end

-- Parses the options (JSON object text or nil). Returns a table, or nil
-- and a message.
function M.options(text)
  local raw = {}
  if text and text ~= "" then
    local v, err = json.decode(text)
    if err then return nil, "compat options: " .. err end
    if type(v) ~= "table" then return nil, "compat options: not an object" end
    raw = v
  end
  for k in pairs(raw) do
    if not KNOWN[k] then
      return nil, "unknown Fluent Bit option '" .. tostring(k) ..
        "' (time_as_table, type_int_key, type_array_key, enable_flb_null, protected_mode, tag)"
    end
  end
  return {
    time_as_table = raw.time_as_table ~= nil and truthy(raw.time_as_table),
    int_keys = key_set(raw.type_int_key),
    array_keys = key_set(raw.type_array_key),
    flb_null = raw.enable_flb_null ~= nil and truthy(raw.enable_flb_null),
    tag = raw.tag ~= nil and tostring(raw.tag) or nil,
  }
end

-- Adds what Fluent Bit gives filters to a sandbox env (before the script
-- runs).
function M.prepare_env(env, o)
  if o.flb_null then env.flb_null = json.null end
end

-- The names of the keys record i may have: body, log.iostream, metadata,
-- fields (tombstones included; reads skip what is absent).
local function key_names(b, i)
  local names = { "body", "log.iostream" }
  local m = b.meta
  if m ~= nil then
    for k = 0, m.n - 1 do
      local kv = m.kv[k]
      names[#names + 1] = ffi_string(kv.key, kv.key_len)
    end
  end
  local f = b.recs[i].field_head
  while f >= 0 do
    local fd = b.fields[f]
    names[#names + 1] = ffi_string(b.data + fd.key_off, fd.key_len)
    f = fd.next
  end
  return names
end

-- Record i as a Fluent Bit record table.
local function read(view, b, i, o)
  local t = {}
  for _, k in ipairs(key_names(b, i)) do
    if k ~= "time" then
      local v = view.get(i, k)
      if v == json.null and not o.flb_null then v = nil end
      if v ~= nil then t[k == "body" and "log" or k] = v end
    end
  end
  return t
end

local function convert(o, k, v)
  if o.int_keys[k] then
    local n = tonumber(v)
    if n then
      return n >= 0 and floor(n) or -floor(-n)
    end
  end
  if o.array_keys[k] and type(v) == "table" then
    return json.array(v)
  end
  if v == nil and o.flb_null then return nil end
  return v
end

-- Makes record i look like table `new`, given `orig` (what read() gave).
local function apply(view, i, orig, new, o)
  if type(new) ~= "table" then
    error("the filter returned a " .. type(new) .. " as the record, not a table", 0)
  end
  for k in pairs(orig) do
    if new[k] == nil then view.set(i, k == "log" and "body" or k, nil) end
  end
  local keys = {}
  for k in pairs(new) do
    if type(k) == "string" then keys[#keys + 1] = k end
  end
  sort(keys)
  for _, k in ipairs(keys) do
    local v = convert(o, k, new[k])
    if type(v) == "table" or v ~= orig[k] then
      view.set(i, k == "log" and "body" or k, v)
    end
  end
end

local function set_time(b, i, ts, o)
  local ns
  if type(ts) == "table" and o.time_as_table then
    local sec, nsec = tonumber(ts.sec), tonumber(ts.nsec) or 0
    if not sec then error("the filter returned a timestamp table without sec", 0) end
    ns = NS * floor(sec) + floor(nsec)
  elseif type(ts) == "number" and ts == ts and ts > -9.2e9 and ts < 9.2e9 then
    local sec = floor(ts)
    ns = NS * sec + floor((ts - sec) * 1e9 + 0.5)
  else
    error("the filter returned a " .. type(ts) .. " as the timestamp", 0)
  end
  local rc = C.lg_ffi_rec_set_time(b, i, ns)
  if rc ~= 0 then error("setting the time: error " .. tostring(rc), 0) end
end

-- Returns the per-record loop of a filter: loop(fn, from), as the driver
-- calls view.run_process. `view` is the runtime's record view.
function M.loop(view, o, tag)
  return function(fn, from)
    local b = view.batch()
    local i = from
    while i < b.n do
      if band(b.recs[i].flags, SKIP) ~= 0 then
        i = i + 1
      else
        view.set_current(i)
        local tns = b.recs[i].time_ns
        local sec, nsec = tonumber(tns / NS), tonumber(tns % NS)
        if nsec < 0 then sec, nsec = sec - 1, nsec + 1e9 end
        local ts = o.time_as_table and { sec = sec, nsec = nsec } or sec + nsec / 1e9
        local orig = read(view, b, i, o)
        -- The filter may change the table it gets; compare with a copy.
        local given = {}
        for k, v in pairs(orig) do given[k] = v end
        local code, nts, nrec = fn(tag, ts, given)
        if type(code) ~= "number" then
          error("the filter returned a " .. type(code) .. " as the code; expected -1, 0, 1 or 2", 0)
        end
        if code == -1 then
          C.lg_ffi_rec_drop(b, i)
          i = i + 1
        elseif code == 0 then
          i = i + 1
        elseif code == 1 or code == 2 then
          if type(nrec) ~= "table" then
            error("the filter returned code " .. code .. " and a " .. type(nrec) .. " as the record", 0)
          end
          if code == 1 then set_time(b, i, nts, o) end
          if type(nrec[1]) == "table" then
            -- An array of records: record i becomes the first, the others
            -- are inserted after it with its time, offsets and routes.
            apply(view, i, orig, nrec[1], o)
            local last = i
            for k = 2, #nrec do
              local r = nrec[k]
              if type(r) ~= "table" then
                error("record " .. k .. " of the returned array is a " .. type(r), 0)
              end
              local body = type(r.log) == "string" and r.log or ""
              local j = C.lg_ffi_batch_insert(b, last, body, #body)
              if j < 0 then error("splitting the record: error " .. tostring(j), 0) end
              view.set_current(j)
              apply(view, j, read(view, b, j, o), r, o)
              last = j
            end
            i = last + 1
          else
            apply(view, i, orig, nrec, o)
            i = i + 1
          end
        else
          error("the filter returned code " .. tostring(code) .. "; expected -1, 0, 1 or 2", 0)
        end
      end
    end
  end
end

return M
