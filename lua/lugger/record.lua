-- lugger.record: the `rec` area of src/pipeline/lg_ffi.h (lg_ffi_rec_*), and the
-- record and batch proxies that user scripts see.
--
-- A proxy is a table {["\0i"] = record index, ["\0e"] = epoch} with a
-- shared, protected metatable. The keys are strings no script writes by
-- accident: a key the table holds is set without __newindex, so with
-- array slots `rec[1] = 0` silently made the proxy point at another
-- record (and `for k in pairs(rec)` listed them as if they were fields);
-- now it fails the record with "field names are strings". The epoch is this runtime's count of batch
-- begin/end events: a proxy is valid only while the batch it was made for
-- is the one being run, so a proxy kept past its batch raises an error
-- and never reads the (possibly freed) batch. Field reads and writes are
-- one FFI call each, through one preallocated lg_ffi_val_t; the batch's
-- data pointer is never cached, because setting a field may move it.
--
-- Value mapping (Lua <-> record field):
--   string <-> LG_VAL_STR
--   number: integral and within [-2^63, 2^63) -> LG_VAL_INT (int64), else
--           LG_VAL_NUM; LG_VAL_INT -> number, exact up to 2^53, beyond
--           that the nearest double (the stored int64 stays exact as long
--           as the script does not write the field back)
--   boolean <-> LG_VAL_BOOL;  lugger.null <-> LG_VAL_NULL
--   table -> JSON text (lugger.json rules) -> LG_VAL_JSON -> a new table
--           on every read (change it and assign it back to keep changes)
--   nil -> the field is removed (builtins and metadata are hidden)
--   time: reads as RFC 3339 text (UTC, nine fractional digits); accepts
--         RFC 3339 text or a number of nanoseconds since the epoch.
local ffi = require("ffi")
local base = require("lugger.base")
local bit = require("bit")
local batch = require("lugger.batch")
local json = require("lugger.json")
local parse = require("lugger.parse")

local M = {}

M.types = [[
typedef struct lg_ffi_val {
  double d;
  int64_t i;
  const char *s;
  size_t len;
  char buf[40];
} lg_ffi_val_t;
]]

M.cdef = [[
int lg_ffi_rec_get(const lg_batch_t *b, uint32_t i, const char *key, size_t klen, lg_ffi_val_t *out);
int lg_ffi_rec_set_str(lg_batch_t *b, uint32_t i, const char *key, size_t klen, const char *val, size_t vlen);
int lg_ffi_rec_set_int(lg_batch_t *b, uint32_t i, const char *key, size_t klen, int64_t val);
int lg_ffi_rec_set_num(lg_batch_t *b, uint32_t i, const char *key, size_t klen, double val);
int lg_ffi_rec_set_bool(lg_batch_t *b, uint32_t i, const char *key, size_t klen, int val);
int lg_ffi_rec_set_null(lg_batch_t *b, uint32_t i, const char *key, size_t klen);
int lg_ffi_rec_set_json(lg_batch_t *b, uint32_t i, const char *key, size_t klen, const char *json, size_t jlen);
int lg_ffi_rec_del(lg_batch_t *b, uint32_t i, const char *key, size_t klen);
int lg_ffi_key_id(lg_batch_t *b, const char *key, size_t klen);
int lg_ffi_rec_set_str_k(lg_batch_t *b, uint32_t i, uint32_t kid, const char *val, size_t vlen);
int lg_ffi_rec_set_int_k(lg_batch_t *b, uint32_t i, uint32_t kid, int64_t val);
int lg_ffi_rec_set_num_k(lg_batch_t *b, uint32_t i, uint32_t kid, double val);
int lg_ffi_rec_del_k(lg_batch_t *b, uint32_t i, uint32_t kid);
int lg_ffi_rec_set_time(lg_batch_t *b, uint32_t i, int64_t ns);
int lg_ffi_rec_set_time_str(lg_batch_t *b, uint32_t i, const char *s, size_t len);
int lg_ffi_rec_drop(lg_batch_t *b, uint32_t i);
int lg_ffi_rec_route(lg_batch_t *b, uint32_t i, int32_t out, int add);
int lg_ffi_rec_fail(lg_batch_t *b, uint32_t i, const char *msg, size_t len);
int lg_ffi_rec_id(const lg_batch_t *b, uint32_t i, char *buf, size_t cap);
]]

if not pcall(ffi.typeof, "lg_ffi_val_t") then
  ffi.cdef(M.types)
end
ffi.cdef(M.cdef)

local C = ffi.C
local ffi_string = ffi.string
local band = bit.band
local floor = math.floor
local type, select, error, tostring, setmetatable, pcall =
  type, select, error, tostring, setmetatable, pcall
local decode, encode, null = json.decode, json.encode, json.null

local STR, INT, NUM, BOOL, NULL, JSON, DELETED = batch.VAL_STR, batch.VAL_INT,
  batch.VAL_NUM, batch.VAL_BOOL, batch.VAL_NULL, batch.VAL_JSON, batch.VAL_DELETED
local SKIP = batch.DROPPED + batch.FAILED
local I64_MIN, I64_END = -2 ^ 63, 2 ^ 63

local E2BIG, EINVAL = base.E2BIG, base.EINVAL
local errno_text = { [E2BIG] = "the batch is full (4 GiB)" }

local function rc_error(rc, what)
  error(what .. ": " .. base.message(rc, errno_text), 0)
end

local function stale()
  error("record used after its batch is gone", 0)
end

-- Creates the record API of one runtime. `resolve_route(name)` returns the
-- output index (0..63) for a route name, or nil and a message. `progress`
-- (optional) is an int64_t[1] the host's watchdog reads: the index of the
-- record being processed is stored there as it changes (lg_lua.h).
function M.new(resolve_route, progress)
  local cur_b = nil -- the batch being run (lg_batch_t *), nil between runs
  local epoch = 0   -- bumped when a run begins and when it ends
  local cur_i = -1  -- the record being processed (for error attribution)
  progress = progress or ffi.new("int64_t[1]")
  -- Field name -> its key id in cur_b (lg_ffi_key_id), so that setting a
  -- field does not hash its name in C again; a new table for each batch.
  local kids = {}
  local val = ffi.new("lg_ffi_val_t")
  local idbuf = ffi.new("char[64]")
  local route_cache = {}

  local function route_index(name)
    local idx = route_cache[name]
    if idx then return idx end
    local msg
    idx, msg = resolve_route(name)
    if not idx then error(msg, 0) end
    route_cache[name] = idx
    return idx
  end

  local function get(p, k)
    if p["\0e"] ~= epoch then stale() end
    if type(k) ~= "string" then return nil end
    local t = C.lg_ffi_rec_get(cur_b, p["\0i"], k, #k, val)
    if t == STR then
      return ffi_string(val.s, val.len)
    elseif t == DELETED then
      return nil
    elseif t == INT or t == NUM then
      return val.d
    elseif t == BOOL then
      return val.d ~= 0
    elseif t == NULL then
      return null
    elseif t == JSON then
      local v, err = decode(ffi_string(val.s, val.len))
      if err then error("field '" .. k .. "': " .. err, 0) end
      return v
    end
    rc_error(t, "reading field '" .. k .. "'")
  end

  local function set_time(b, i, v)
    local tv, rc = type(v), nil
    if tv == "string" then
      rc = C.lg_ffi_rec_set_time_str(b, i, v, #v)
      if rc == EINVAL then
        error("time: '" .. v .. "' is not an RFC 3339 time", 0)
      end
    elseif tv == "number" then
      if not (v >= I64_MIN and v < I64_END) then
        error("time: " .. tostring(v) .. " is not a number of nanoseconds", 0)
      end
      rc = C.lg_ffi_rec_set_time(b, i, v)
    elseif v == nil then
      rc = C.lg_ffi_rec_del(b, i, "time", 4)
    else
      error("time must be RFC 3339 text or nanoseconds since the epoch, not a " .. tv, 0)
    end
    if rc ~= 0 then rc_error(rc, "setting field 'time'") end
  end

  local function key_id(b, k)
    local id = kids[k]
    if id == nil then
      id = C.lg_ffi_key_id(b, k, #k)
      if id < 0 then rc_error(id, "setting field '" .. k .. "'") end
      kids[k] = id
    end
    return id
  end

  local function set(p, k, v)
    if p["\0e"] ~= epoch then stale() end
    if type(k) ~= "string" then
      error("field names are strings, not " .. type(k) .. "s", 0)
    end
    local b, i = cur_b, p["\0i"]
    local tv, rc = type(v), nil
    if k == "time" then
      return set_time(b, i, v)
    elseif tv == "string" then
      rc = C.lg_ffi_rec_set_str_k(b, i, key_id(b, k), v, #v)
    elseif tv == "number" then
      if v == floor(v) and v >= I64_MIN and v < I64_END then
        rc = C.lg_ffi_rec_set_int_k(b, i, key_id(b, k), v)
      else
        rc = C.lg_ffi_rec_set_num_k(b, i, key_id(b, k), v)
      end
    elseif v == nil then
      rc = C.lg_ffi_rec_del_k(b, i, key_id(b, k))
    elseif tv == "boolean" then
      rc = C.lg_ffi_rec_set_bool(b, i, k, #k, v and 1 or 0)
    elseif v == null then
      rc = C.lg_ffi_rec_set_null(b, i, k, #k)
    elseif tv == "table" then
      local ok, s = pcall(encode, v)
      if not ok then error("field '" .. k .. "': " .. tostring(s), 0) end
      rc = C.lg_ffi_rec_set_json(b, i, k, #k, s, #s)
    else
      error("field '" .. k .. "': cannot store a " .. tv, 0)
    end
    if rc ~= 0 then rc_error(rc, "setting field '" .. k .. "'") end
  end

  -- Routes record i to output `name`: replacing its routes (add false) or
  -- adding to them (add true).
  local function route_one(i, name, add)
    if type(name) ~= "string" then
      error("output names are strings, not " .. type(name) .. "s", 0)
    end
    local rc = C.lg_ffi_rec_route(cur_b, i, route_index(name), add and 1 or 0)
    if rc ~= 0 then rc_error(rc, "routing") end
  end

  -- Replaces the routes of record i with the outputs named in list t (an
  -- empty list routes it nowhere).
  local function route_list(i, t)
    local n = #t
    if n == 0 then
      C.lg_ffi_rec_route(cur_b, i, -1, 0)
    end
    for k = 1, n do
      route_one(i, t[k], k > 1)
    end
  end

  local methods = {}

  function methods.get(p, k)
    return get(p, k)
  end

  function methods.set(p, k, v)
    set(p, k, v)
  end

  function methods.drop(p)
    if p["\0e"] ~= epoch then stale() end
    local rc = C.lg_ffi_rec_drop(cur_b, p["\0i"])
    if rc ~= 0 then rc_error(rc, "drop") end
  end

  function methods.route(p, ...)
    if p["\0e"] ~= epoch then stale() end
    local n = select("#", ...)
    local first = ...
    if n == 1 then
      if type(first) == "table" then return route_list(p["\0i"], first) end
      return route_one(p["\0i"], first, false)
    end
    return route_list(p["\0i"], { ... })
  end

  function methods.id(p)
    if p["\0e"] ~= epoch then stale() end
    local n = C.lg_ffi_rec_id(cur_b, p["\0i"], idbuf, 64)
    if n < 0 then rc_error(n, "id") end
    return ffi_string(idbuf, n)
  end

  -- rec:parse_regex, parse_json, parse_logfmt, parse_kv, parse_csv and
  -- set_time (lugger.parse).
  parse.install(methods, function(p)
    if p["\0e"] ~= epoch then stale() end
    return cur_b, p["\0i"]
  end)

  local RecMT = {
    __index = function(p, k)
      local m = methods[k]
      if m ~= nil then return m end
      return get(p, k)
    end,
    __newindex = set,
    __metatable = "lugger.record",
    __tostring = function() return "lugger.record" end,
  }

  -- What `process` returned for record i: nil/true keep (handled by the
  -- caller), false drop, a name or a list of names route.
  local function apply(i, ret)
    if ret == false then
      C.lg_ffi_rec_drop(cur_b, i)
    elseif type(ret) == "string" then
      route_one(i, ret, false)
    elseif type(ret) == "table" and ret ~= null then
      route_list(i, ret)
    else
      error("process returned a " .. type(ret) ..
            "; expected nothing, true, false, an output name or a list of names", 0)
    end
  end

  local BatchMT
  local batch_methods = {}

  -- The iterator of batch:records(): stateless (the control variable is
  -- the previous record proxy), so that a loop over a batch creates no
  -- closure.
  local function next_record(bp, prev)
    local ep = bp["\0e"]
    if ep ~= epoch then stale() end
    local i = prev == nil and bp["\0i"] or prev["\0i"] + 1
    local b = cur_b
    local n = b.n
    while i < n and band(b.recs[i].flags, SKIP) ~= 0 do
      i = i + 1
    end
    if i >= n then return nil end
    cur_i = i
    progress[0] = i
    return setmetatable({ ["\0i"] = i, ["\0e"] = ep }, RecMT)
  end

  -- Iterates over the records of the batch view that no earlier script
  -- dropped or failed, in order.
  function batch_methods.records(bp)
    if bp["\0e"] ~= epoch then stale() end
    return next_record, bp, nil
  end

  BatchMT = {
    __index = batch_methods,
    __newindex = function() error("the batch is read-only", 2) end,
    __metatable = "lugger.batch",
    __tostring = function() return "lugger.batch" end,
  }

  local view = {}

  function view.begin(b)
    cur_b = b
    kids = {}
    epoch = epoch + 1
    cur_i = -1
  end

  function view.finish()
    cur_b = nil
    kids = {}
    epoch = epoch + 1
    cur_i = -1
  end

  function view.current()
    return cur_i
  end

  -- For other record loops (lugger.fluentbit): the batch being run, the
  -- record being processed, and field access by index.
  function view.batch()
    return cur_b
  end

  function view.set_current(i)
    cur_i = i
    progress[0] = i
  end

  function view.get(i, k)
    return get({ ["\0i"] = i, ["\0e"] = epoch }, k)
  end

  function view.set(i, k, v)
    return set({ ["\0i"] = i, ["\0e"] = epoch }, k, v)
  end

  function view.skipped(i)
    return band(cur_b.recs[i].flags, SKIP) ~= 0
  end

  -- Flags record i failed with `msg` (C adds the file and offset) and
  -- returns the stored error text.
  function view.fail(i, msg)
    local b = cur_b
    C.lg_ffi_rec_fail(b, i, msg, #msg)
    local r = b.recs[i]
    return ffi_string(b.data + r.err_off, r.err_len)
  end

  -- The per-record loop: calls fn(rec) for records from..n-1 that are
  -- neither dropped nor failed. Errors propagate; cur_i says where.
  function view.run_process(fn, from)
    local b = cur_b
    local ep = epoch
    for i = from, b.n - 1 do
      if band(b.recs[i].flags, SKIP) == 0 then
        cur_i = i
        progress[0] = i
        local ret = fn(setmetatable({ ["\0i"] = i, ["\0e"] = ep }, RecMT))
        if ret ~= nil and ret ~= true then
          apply(i, ret)
        end
      end
    end
  end

  -- The per-batch call: fn(batch) over the records from..n-1.
  function view.run_batch(fn, from)
    cur_i = -1
    fn(setmetatable({ ["\0i"] = from, ["\0e"] = epoch }, BatchMT))
  end

  return view
end

return M
