-- lugger.parse: the `parse` area of src/pipeline/lg_ffi.h (lg_ffi_parse_*):
-- parsing a record's text into fields in C, and the script API over it:
--   lugger.regex(pattern [, opts]) -> a compiled PCRE2 pattern
--   re:match(s) -> captures (or the whole match), or nil
--   re:test(s) -> boolean
--   lugger.parse_time(s, format) -> nanoseconds, or nil and a message
--   rec:parse_regex(re [, field]), rec:parse_json([field] [, opts]),
--   rec:parse_logfmt([field]), rec:parse_kv([field,] pair_sep, kv_sep),
--   rec:parse_csv(columns [, sep [, field]]), rec:set_time(v [, format])
-- The reference, with every argument and error, is lua/README.md.
--
-- Scripts never see cdata: a compiled pattern is a table proxy with a
-- protected metatable, its PCRE2 handle kept in a weak table here.
-- Errors that are the script's (a bad pattern, format, argument) are
-- raised without a position (level 0), as lugger.record's are: the
-- driver's handler names the innermost user-script frame and its line.
-- A position from error(msg, 2) would name a runtime frame when the
-- script tail-calls a helper (`return rec:parse_json(x)` leaves no frame
-- of its own). Data that does not parse returns false or nil and a
-- message.
local ffi = require("ffi")
local base = require("lugger.base")
require("lugger.batch") -- lg_batch_t

local M = {}

M.types = [[
struct lg_regex;
struct lg_parse_scratch;
struct lg_regex_span { int32_t a, z; };
]]

M.cdef = [[
int lg_ffi_parse_scratch_create(struct lg_parse_scratch **out);
int lg_ffi_parse_scratch_destroy(struct lg_parse_scratch *s);
int lg_ffi_parse_regex_create(const char *pat, size_t len, const char *flags, size_t flen, struct lg_regex **out, char *err, size_t errlen);
int lg_ffi_parse_regex_destroy(struct lg_regex *re);
int lg_ffi_parse_regex_set_type(struct lg_regex *re, const char *name, size_t nlen, const char *type, size_t tlen);
int lg_ffi_parse_regex_groups(const struct lg_regex *re);
int lg_ffi_parse_regex_exec(struct lg_regex *re, const char *s, size_t len, int32_t *spans, uint32_t nspans);
int lg_ffi_parse_regex_set_time(struct lg_regex *re, const char *fmt, size_t flen, char *err, size_t errlen);
int lg_ffi_parse_rec_regex(lg_batch_t *b, uint32_t i, struct lg_regex *re, const char *field, size_t flen, char *err, size_t errlen);
int lg_ffi_parse_rec_json(lg_batch_t *b, uint32_t i, const char *field, size_t flen, const char *sep, size_t seplen, const char *prefix, size_t plen, struct lg_parse_scratch *s, char *err, size_t errlen);
int lg_ffi_parse_rec_logfmt(lg_batch_t *b, uint32_t i, const char *field, size_t flen, struct lg_parse_scratch *s);
int lg_ffi_parse_rec_kv(lg_batch_t *b, uint32_t i, const char *field, size_t flen, const char *psep, size_t pslen, const char *kvsep, size_t kvlen, struct lg_parse_scratch *s);
int lg_ffi_parse_rec_csv(lg_batch_t *b, uint32_t i, const char *field, size_t flen, const char *cols, size_t clen, int sep, struct lg_parse_scratch *s, char *err, size_t errlen);
int lg_ffi_parse_time(const char *s, size_t len, const char *fmt, size_t flen, int64_t *out, char *err, size_t errlen);
int lg_ffi_parse_rec_time(lg_batch_t *b, uint32_t i, const char *s, size_t len, const char *fmt, size_t flen, char *err, size_t errlen);
]]

ffi.cdef(M.types)
ffi.cdef(M.cdef)

local C = ffi.C
local ffi_string = ffi.string
local type, error, tostring, setmetatable, pairs, ipairs, tonumber, unpack, load, assert =
  type, error, tostring, setmetatable, pairs, ipairs, tonumber, unpack, load, assert
local sub, concat = string.sub, table.concat

local ENOENT, EINVAL, EOPNOTSUPP = base.ENOENT, base.EINVAL, base.EOPNOTSUPP
local errno_text = {
  [base.E2BIG] = "the batch is full (4 GiB)",
  [base.EOVERFLOW] = "PCRE2 gave up at its match limit: the pattern backtracks too much on "
    .. "this text (make it more specific, e.g. no nested quantifiers such as (a+)+)",
}

local ERRLEN = 512
local errbuf = ffi.new("char[?]", ERRLEN)
local nsbox = ffi.new("int64_t[1]")
local rebox = ffi.new("struct lg_regex *[1]")
local scratch
do
  local box = ffi.new("struct lg_parse_scratch *[1]")
  if C.lg_ffi_parse_scratch_create(box) ~= 0 then error("lugger.parse: out of memory") end
  scratch = ffi.gc(box[0], C.lg_ffi_parse_scratch_destroy)
end

local function raise(rc, what)
  error(what .. ": " .. base.message(rc, errno_text), 0)
end

-- ---- lugger.regex -------------------------------------------------------

-- Proxy -> { re = cdata, spans = struct lg_regex_span[ngroups + 1], the
-- same as int32_t[nspans] for lg_ffi_parse_regex_exec, nspans, ngroups,
-- captures }.
local handles = setmetatable({}, { __mode = "k" })
-- flags .. "\0" .. pattern -> proxy, for patterns without a types table.
-- Weak values: a pattern the script no longer holds is collected, and
-- its PCRE2 code freed (ffi.gc). Held strongly, a script compiling a
-- pattern from each record's text grew by ~2 KiB of C memory per record,
-- outside script_memory (100,000 records: 195 MiB).
local cache = setmetatable({}, { __mode = "v" })
local regex_methods = {}
local RegexMT = {
  __index = regex_methods,
  __newindex = function() error("a lugger.regex is read-only", 0) end,
  __metatable = "lugger.regex",
  __tostring = function() return "lugger.regex" end,
}

local function handle(re, what)
  local h = handles[re]
  if h == nil then
    error(what .. ": expected a pattern from lugger.regex, not a " .. type(re), 0)
  end
  return h
end

local function capture(s, spans, k)
  local a = spans[k].a
  if a < 0 then return nil end
  return sub(s, a + 1, spans[k].z)
end

-- The captures 1..n of a match, as n separate values, from a function
-- made for n when a pattern with n groups is compiled (and shared by
-- every pattern with as many), every capture written out. A shared
-- helper called once per group, or a recursive one, made LuaJIT abort
-- the traces of a loop calling re:match (a hot function entered again:
-- loop unroll limit; down-recursion); a loop over the groups into a table
-- and unpack() leaves the caller's loop uncompiled ("leaving loop in root
-- trace"): 3-4x the time per call at 9 to 40 groups.
--
-- What bounds a written-out function are two limits of a LuaJIT trace:
-- its spill area (256 4-byte slots, never reused within the trace) and
-- its 500 IR constants; a loop's trace holds its body twice (the first
-- iteration, then the loop). Every string made is live across the next
-- one's allocation (a call), so it takes an 8-byte slot, twice. When
-- each capture was `if a >= 0 then c = sub(s, a + 1, b) end`, each
-- guard (a >= 0, sub's bounds) also kept the offsets in its snapshot,
-- which took slots of their own when no register was free: a 32-group
-- loop used 916-1008 of the 1024 bytes, and the first trace of a
-- start-up, recorded where LuaJIT's hot counters (shared by bytecode
-- address) happened to run out, could need more ("too many spill
-- slots"): in 14 of 1000 start-ups some trace aborted, in 2 the loop was
-- never compiled. Its offsets, read as spans[2 * k], also took 10 of
-- the 500 constants per group (the index as int, as int64, times 4), so
-- that 36 and 40 groups never compiled ("trace too long").
-- Now the strings are made first with no guard at all (ffi.string from
-- the subject's address; an unset group, -1 and -1, gives ""), and only
-- then are empty ones checked against their start (-1: did not take
-- part, nil). The offsets are in no snapshot, and are read from a struct
-- per group (about 6 constants a group): 32 groups take 750-820 bytes
-- and 400 constants, 40 groups 880-940 bytes and 450, and the loop
-- compiled in 3000 of 3000 start-ups at 32 to 40 groups. A trace that
-- begins at a batch's first record still overflows in 1-2 start-ups in
-- 100 (it also holds record.lua's key id cache misses: C calls, table
-- inserts); LuaJIT drops it and records the loop again later. lg_regex_exec
-- guarantees start <= end, which ffi.string needs. The cost: with the
-- JIT off, a call takes 3x as long (FFI arithmetic is slow interpreted).
-- Past CAPTURES_MAX groups, the table and unpack(): the strings alone
-- would fill the spill area, and interpreted the written-out function
-- took 3-7 us a call at 56-100 groups, more than unpack() (2-2.5 us).
-- The functions keep the runtime's name so that the watchdog's hook
-- never stops inside them.
local CAPTURES_MAX = 40

local function make_captures(n)
  local make, check, rets = {}, {}, {}
  for k = 1, n do
    make[k] = ("g = sp[%d]\nlocal c%d = str(p + g.a, g.z - g.a)"):format(k, k)
    check[k] = ('if c%d == "" and sp[%d].a < 0 then c%d = nil end'):format(k, k, k)
    rets[k] = "c" .. k
  end
  local src = "local str, cast, charp = ...\nreturn function(s, sp)\n"
    .. "local p, g = cast(charp, s)\n" .. concat(make, "\n") .. "\n" .. concat(check, "\n")
    .. "\nreturn " .. concat(rets, ", ") .. "\nend\n"
  return assert(load(src, "@lua/lugger/parse.lua", "t"))(ffi_string, ffi.cast,
                                                      ffi.typeof("const char *"))
end

local captures_of = {}

-- The function returning the captures of a pattern with n >= 1 groups.
local function captures_fn(n)
  local f = captures_of[n]
  if f then return f end
  if n <= CAPTURES_MAX then
    f = make_captures(n)
  else
    f = function(s, sp)
      local t = {}
      for k = 1, n do t[k] = capture(s, sp, k) end
      return unpack(t, 1, n)
    end
  end
  captures_of[n] = f
  return f
end

--- lugger.regex(pattern [, opts]) -> a compiled pattern. See lua/README.md.
function M.regex(pattern, opts)
  if type(pattern) ~= "string" then
    error("lugger.regex: the pattern is a string, not a " .. type(pattern), 0)
  end
  local flags, types = "", nil
  if type(opts) == "string" then
    flags = opts
  elseif type(opts) == "table" then
    flags = opts.flags or ""
    types = opts.types
    if type(flags) ~= "string" then error("lugger.regex: flags is a string", 0) end
    if types ~= nil and type(types) ~= "table" then
      error("lugger.regex: types is a table of group name -> type", 0)
    end
  elseif opts ~= nil then
    error("lugger.regex: options are a string of flags or a table, not a " .. type(opts), 0)
  end
  local key = flags .. "\0" .. pattern
  if types == nil and cache[key] then return cache[key] end
  local rc = C.lg_ffi_parse_regex_create(pattern, #pattern, flags, #flags, rebox, errbuf, ERRLEN)
  if rc ~= 0 then
    if rc == EINVAL then error("lugger.regex: " .. ffi_string(errbuf), 0) end
    raise(rc, "lugger.regex")
  end
  local re = ffi.gc(rebox[0], C.lg_ffi_parse_regex_destroy)
  for name, t in pairs(types or {}) do
    if type(name) ~= "string" or type(t) ~= "string" then
      error("lugger.regex: types maps group names to type names (int, float, bool, str)", 0)
    end
    if name == "time" then
      rc = C.lg_ffi_parse_regex_set_time(re, t, #t, errbuf, ERRLEN)
      if rc ~= 0 then error("lugger.regex: types: " .. ffi_string(errbuf), 0) end
    else
      rc = C.lg_ffi_parse_regex_set_type(re, name, #name, t, #t)
    end
    if rc == ENOENT then
      error("lugger.regex: types: the pattern has no group named '" .. name .. "'", 0)
    elseif rc ~= 0 then
      error("lugger.regex: types: unknown type '" .. t .. "' for group '" .. name ..
            "' (int, float, bool, str)", 0)
    end
  end
  local ngroups = C.lg_ffi_parse_regex_groups(re)
  local nspans = 2 * (ngroups + 1)
  local proxy = setmetatable({}, RegexMT)
  local spans = ffi.new("struct lg_regex_span[?]", ngroups + 1)
  handles[proxy] = { re = re, spans = spans, spans32 = ffi.cast("int32_t *", spans), nspans = nspans,
                     ngroups = ngroups, captures = ngroups > 0 and captures_fn(ngroups) or nil }
  if types == nil then cache[key] = proxy end
  return proxy
end

local function exec(h, s, what)
  if type(s) ~= "string" then
    error(what .. ": expected a string, not a " .. type(s), 0)
  end
  local rc = C.lg_ffi_parse_regex_exec(h.re, s, #s, h.spans32, h.nspans)
  if rc < 0 then raise(rc, what) end
  return rc == 1
end

--- re:match(s) -> the captures as strings (nil for a group that did not
-- take part), or the whole match when the pattern has no group; nil when
-- it does not match.
function regex_methods.match(re, s)
  local h = handle(re, "re:match")
  if not exec(h, s, "re:match") then return nil end
  local f = h.captures
  if f == nil then return capture(s, h.spans, 0) end
  return f(s, h.spans)
end

--- re:test(s) -> whether s matches.
function regex_methods.test(re, s)
  return exec(handle(re, "re:test"), s, "re:test")
end

-- ---- lugger.parse_time ----------------------------------------------------

local function check_format(fmt, what)
  if type(fmt) ~= "string" then
    error(what .. ": the format is a string (a name such as \"nginx\" or %-directives), not a "
          .. type(fmt), 0)
  end
end

-- Nanoseconds per unit of the epoch formats: with one of them, a number
-- (a JSON "ts": 1714564800.25 read by parse_json) is a count of that unit.
local EPOCH_UNIT = { epoch = 1e9, epoch_ms = 1e6, epoch_us = 1e3, epoch_ns = 1 }
local floor = math.floor

-- Number v in the unit of epoch format fmt, as int64_t nanoseconds; or nil
-- and a message (another format, or out of int64 nanoseconds' range). The
-- whole part is exact; the fraction as exact as a double holds it,
-- truncated to the nanosecond like a fraction in text.
local function epoch_number(v, fmt)
  local unit = EPOCH_UNIT[fmt]
  if not unit then
    return nil, "not a time: a number (a number is a time only in the formats "
      .. "epoch, epoch_ms, epoch_us and epoch_ns)"
  end
  local whole = floor(v)
  if not (whole >= -2 ^ 63 / unit and whole < 2 ^ 63 / unit) then -- NaN too
    return nil, "not a time: " .. tostring(v) .. " (" .. fmt .. ") is out of range"
  end
  return ffi.new("int64_t", whole) * unit + floor((v - whole) * unit)
end

--- lugger.parse_time(s, format) -> nanoseconds since the epoch (a number:
-- exact to about 256 ns for present-day times), or nil and a message when
-- s is not in the format. With an epoch format, s may be a number of that
-- unit. A bad format raises an error.
function M.parse_time(s, fmt)
  check_format(fmt, "lugger.parse_time")
  if type(s) == "number" then
    local ns, err = epoch_number(s, fmt)
    if ns == nil then return nil, err end
    return tonumber(ns)
  end
  if type(s) ~= "string" then
    return nil, "not a time: a " .. type(s)
  end
  local rc = C.lg_ffi_parse_time(s, #s, fmt, #fmt, nsbox, errbuf, ERRLEN)
  if rc == 0 then return tonumber(nsbox[0]) end
  if rc == EINVAL then return nil, ffi_string(errbuf) end
  if rc == EOPNOTSUPP then error("lugger.parse_time: " .. ffi_string(errbuf), 0) end
  raise(rc, "lugger.parse_time")
end

-- ---- record methods ---------------------------------------------------------

local function field_arg(field, what)
  if field == nil then return "" end
  if type(field) ~= "string" then
    error(what .. ": the field name is a string, not a " .. type(field), 0)
  end
  return field
end

local csv_cols = setmetatable({}, { __mode = "k" }) -- columns table -> joined

local function join_columns(cols)
  local j = csv_cols[cols]
  if j then return j end
  local t = {}
  for k, c in ipairs(cols) do
    if c == false then
      t[k] = ""
    elseif type(c) == "string" then
      if c:find("\0", 1, true) then error("rec:parse_csv: a column name holds a NUL byte", 0) end
      t[k] = c
    else
      error("rec:parse_csv: column " .. k .. " is a " .. type(c) ..
            "; columns are names (\"name\" or \"name:int\") or false to skip", 0)
    end
  end
  j = concat(t, "\0")
  csv_cols[cols] = j
  return j
end

-- Adds the parse methods to the record methods table of lugger.record.
-- `batch_of(p)` returns the batch of record proxy p and the record's
-- index in it, raising when the proxy is stale.
function M.install(methods, batch_of)
  --- rec:parse_regex(re [, field]) -> whether re matched; named groups
  -- set, the group "time" as the record's time (true and a message when
  -- that time did not parse).
  function methods.parse_regex(p, re, field)
    local b, i = batch_of(p)
    local h = handle(re, "rec:parse_regex")
    field = field_arg(field, "rec:parse_regex")
    local rc = C.lg_ffi_parse_rec_regex(b, i, h.re, field, #field, errbuf, ERRLEN)
    if rc == 1 then return true end
    if rc == 0 or rc == ENOENT then return false end
    if rc == 2 then return true, "time: " .. ffi_string(errbuf) end
    raise(rc, "rec:parse_regex")
  end

  --- rec:parse_json([field] [, opts]) -> number of fields set, or nil and
  -- a message (the record unchanged).
  function methods.parse_json(p, field, opts)
    local b, i = batch_of(p)
    if type(field) == "table" and opts == nil then field, opts = nil, field end
    field = field_arg(field, "rec:parse_json")
    local sep, prefix = "", ""
    if opts ~= nil then
      if type(opts) ~= "table" then
        error("rec:parse_json: options are a table, not a " .. type(opts), 0)
      end
      local f = opts.flatten
      if f == true then
        sep = "."
      elseif type(f) == "string" and f ~= "" then
        sep = f
      elseif f ~= nil and f ~= false then
        error("rec:parse_json: flatten is true or a separator string", 0)
      end
      prefix = opts.prefix or ""
      if type(prefix) ~= "string" then error("rec:parse_json: prefix is a string", 0) end
    end
    local rc = C.lg_ffi_parse_rec_json(b, i, field, #field, sep, #sep, prefix, #prefix,
                                       scratch, errbuf, ERRLEN)
    if rc >= 0 then return rc end
    if rc == EINVAL then return nil, ffi_string(errbuf) end
    if rc == ENOENT then
      return nil, "no string field '" .. (field == "" and "body" or field) .. "'"
    end
    raise(rc, "rec:parse_json")
  end

  --- rec:parse_logfmt([field]) -> number of fields set.
  function methods.parse_logfmt(p, field)
    local b, i = batch_of(p)
    field = field_arg(field, "rec:parse_logfmt")
    local rc = C.lg_ffi_parse_rec_logfmt(b, i, field, #field, scratch)
    if rc >= 0 then return rc end
    if rc == ENOENT then return 0 end
    raise(rc, "rec:parse_logfmt")
  end

  --- rec:parse_kv([field,] pair_sep, kv_sep) -> number of fields set.
  function methods.parse_kv(p, a, b2, c)
    local b, i = batch_of(p)
    local field, psep, kvsep
    if c ~= nil then
      field, psep, kvsep = a, b2, c
    elseif b2 ~= nil then
      psep, kvsep = a, b2
    else
      field = a
    end
    field = field_arg(field, "rec:parse_kv")
    psep, kvsep = psep or " ", kvsep or "="
    if type(psep) ~= "string" or psep == "" or type(kvsep) ~= "string" or kvsep == "" then
      error("rec:parse_kv: the separators are non-empty strings", 0)
    end
    local rc = C.lg_ffi_parse_rec_kv(b, i, field, #field, psep, #psep, kvsep, #kvsep, scratch)
    if rc >= 0 then return rc end
    if rc == ENOENT then return 0 end
    raise(rc, "rec:parse_kv")
  end

  --- rec:parse_csv(columns [, sep [, field]]) -> number of fields set, or
  -- nil and a message for bad quoting.
  function methods.parse_csv(p, cols, sep, field)
    local b, i = batch_of(p)
    if type(cols) ~= "table" then
      error("rec:parse_csv: columns is a list of names, not a " .. type(cols), 0)
    end
    sep = sep or ","
    if type(sep) ~= "string" or #sep ~= 1 or sep == '"' then
      error("rec:parse_csv: the separator is one byte other than '\"'", 0)
    end
    field = field_arg(field, "rec:parse_csv")
    local j = join_columns(cols)
    local rc = C.lg_ffi_parse_rec_csv(b, i, field, #field, j, #j, sep:byte(), scratch,
                                      errbuf, ERRLEN)
    if rc >= 0 then return rc end
    if rc == ENOENT then return 0 end
    if rc == EINVAL then
      local msg = ffi_string(errbuf)
      if msg:find("unknown type", 1, true) then error("rec:parse_csv: " .. msg, 0) end
      return nil, msg
    end
    raise(rc, "rec:parse_csv")
  end

  --- rec:set_time(v [, format]) -> true, or nil and a message when the
  -- text is not in the format. v: text (format default "rfc3339");
  -- without a format, a number of nanoseconds since the epoch; with an
  -- epoch format, a number of its unit (seconds for "epoch").
  function methods.set_time(p, v, fmt)
    local b, i = batch_of(p)
    if type(v) == "number" and fmt ~= nil then
      check_format(fmt, "rec:set_time")
      local ns, err = epoch_number(v, fmt)
      if ns == nil then return nil, err end
      local rc = C.lg_ffi_rec_set_time(b, i, ns)
      if rc ~= 0 then raise(rc, "rec:set_time") end
      return true
    end
    if type(v) == "number" then
      if not (v >= -2 ^ 63 and v < 2 ^ 63) then
        error("rec:set_time: " .. tostring(v) .. " is not a number of nanoseconds", 0)
      end
      local rc = C.lg_ffi_rec_set_time(b, i, v)
      if rc ~= 0 then raise(rc, "rec:set_time") end
      return true
    end
    fmt = fmt or "rfc3339"
    check_format(fmt, "rec:set_time")
    if type(v) ~= "string" then
      return nil, "not a time: a " .. type(v)
    end
    local rc = C.lg_ffi_parse_rec_time(b, i, v, #v, fmt, #fmt, errbuf, ERRLEN)
    if rc == 0 then return true end
    if rc == EINVAL then return nil, ffi_string(errbuf) end
    if rc == EOPNOTSUPP then error("rec:set_time: " .. ffi_string(errbuf), 0) end
    raise(rc, "rec:set_time")
  end
end

return M
