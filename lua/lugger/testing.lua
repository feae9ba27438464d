-- lugger.testing: run a filter script on given records from a busted spec
-- (or any Lua file run by `lugger lua`), through the real driver, sandbox
-- and framing, and inspect what it did.
--
--   local testing = require("lugger.testing")
--   local f = assert(testing.load("nginx.lua", { params = { drop_health = true } }))
--   local res = f:run({ '10.0.0.1 - - [01/May/2024:12:00:01 +0000] "GET /x HTTP/1.1" 200 5 "-" "curl"' })
--   assert.equals(200, res.kept[1].status)
--
-- testing.load(path [, opts]) and testing.load_string(src, name [, opts])
-- load a script as a pipeline's script entry would; opts:
--   params       init(params): a table or JSON object text
--   compat       "fluent-bit" to run a Fluent Bit filter, with
--   call         the filter function's name, and
--   compat_opts  its options (time_as_table, type_int_key, ...) as a table
--   tag          the Fluent Bit tag (default "test")
--   name         the pipeline name (default "test")
--   timeout_ms   the time limit, in milliseconds of CPU time, per record
--                (and for loading: the main chunk and init); default 1000,
--                settings.script_timeout's default; 0 turns it off
-- They return a filter, or nil and the load error ("<script>:<line>: msg").
-- Each load is a fresh runtime: module-level state starts anew.
--
-- A script stuck on a record (`while true do end`) does not hang the spec:
-- past the time limit the record fails with "<script>:<line>:
-- script_timeout: exceeded the time limit of 1000 ms of CPU time on this
-- record" (in res.errors) and the next record goes on, as in the collector
-- (lugger.timelimit; the JIT is off while the script runs, so the limit
-- also stops loops LuaJIT would compile). A script stuck in loading makes
-- load return nil and that error.
--
-- testing.here(rel) is `rel` next to the calling spec file.
--
-- A filter runs records and returns a result:
--   f:run(records [, opts])     records: a list of bodies (strings) or of
--                               records (tables: "body", "time" as RFC 3339
--                               text, "log.iostream", any other fields, as
--                               `lugger test --format json` reads them)
--   f:run_text(text [, opts])   raw log text framed as opts.format says
--                               ("line", "cri", "docker", "json", "auto";
--                               default "auto")
--   f:run_file(path [, opts])   a sample file (its path becomes log.file.path)
-- opts: path (log.file.path for run/run_text), now_ns (the time of lines
-- without one; default now), format. Bad input raises an error.
--
-- A result has, in record order:
--   res.kept      the kept records as tables (their JSON output, decoded)
--   res.routes    res.routes[k]: the route names of res.kept[k]
--                 ({"default"} = the pipeline's outputs)
--   res.lines     the kept records' JSON lines, as `lugger test` prints them
--   res.dropped   the dropped records as tables
--   res.failed    the failed records as tables ("lugger.error" not added)
--   res.errors    the failed records' error texts
--   res.all       every record: { record =, status = "kept" | "dropped" |
--                 "failed", routes =, error = }
local ffi = require("ffi")
local bit = require("bit")
local batch = require("lugger.batch")
local driver = require("lugger.driver")
local json = require("lugger.json")
local sample = require("lugger.sample")
local timelimit = require("lugger.timelimit")

local M = {}

local Filter = {}
Filter.__index = Filter

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    -- io.open's message starts with the path, which the caller names.
    if err:sub(1, #path + 2) == path .. ": " then err = err:sub(#path + 3) end
    return nil, err
  end
  local s = f:read("*a")
  f:close()
  return s
end

local function to_json(v, what)
  if v == nil or type(v) == "string" then return v end
  local ok, s = pcall(json.encode, v)
  if not ok then error(what .. ": " .. tostring(s), 3) end
  return s
end

-- Loads script text `src` named `name` (used in error messages).
function M.load_string(src, name, opts)
  opts = opts or {}
  if type(src) ~= "string" then error("load_string: script text expected", 2) end
  name = name or "script.lua"
  local compat_opts = opts.compat_opts
  if opts.tag ~= nil then
    compat_opts = {}
    for k, v in pairs(opts.compat_opts or {}) do compat_opts[k] = v end
    compat_opts.tag = opts.tag
  end
  local timeout = opts.timeout_ms
  if timeout == nil then timeout = timelimit.DEFAULT_MS end
  if type(timeout) ~= "number" or timeout < 0 then
    error("load: timeout_ms: a number of milliseconds (0: no limit) expected", 2)
  end
  -- The driver's watchdog slots, which the time limit watches.
  local progress = ffi.new("int64_t[2]")
  local rt = driver.new({ output_names = { "default" }, dynamic_routes = true,
                          log_errors = false, print_stdout = true,
                          progress = progress })
  local ok, err = timelimit.call(timeout, nil, "loading the script", rt.add_pipeline, 0,
                                 opts.name or "test", { {
    path = name,
    src = src,
    params = to_json(opts.params, "params"),
    compat = opts.compat,
    call = opts.call,
    compat_opts = to_json(compat_opts, "compat_opts"),
  } })
  if not ok then return nil, err end
  return setmetatable({ rt = rt, path = name, opts = opts, progress = progress,
                        timeout = timeout }, Filter)
end

-- Loads the script file at `path`.
function M.load(path, opts)
  local src, err = read_file(path)
  if not src then return nil, path .. ": cannot read: " .. tostring(err) end
  return M.load_string(src, path, opts)
end

-- The route names of record i of b, in output order.
function Filter:route_names(b, i)
  local r, out = b.recs[i].routes, {}
  for k = 0, 63 do
    if bit.band(r, bit.lshift(1ULL, k)) ~= 0ULL then
      out[#out + 1] = self.rt.output_name(k) or ("#" .. k)
    end
  end
  return out
end

-- The result of a batch the script has run over (see the top).
function Filter:collect(b)
  local res = { kept = {}, routes = {}, lines = {}, dropped = {}, failed = {},
                errors = {}, all = {} }
  for i = 0, b.n - 1 do
    local r = b.recs[i]
    local line = batch.encode(b, i)
    local rec = assert(json.decode(line))
    local e = { record = rec }
    if bit.band(r.flags, batch.FAILED) ~= 0 then
      e.status = "failed"
      e.error = ffi.string(b.data + r.err_off, r.err_len)
      res.failed[#res.failed + 1] = rec
      res.errors[#res.errors + 1] = e.error
    elseif bit.band(r.flags, batch.DROPPED) ~= 0 then
      e.status = "dropped"
      res.dropped[#res.dropped + 1] = rec
    else
      e.status = "kept"
      e.routes = self:route_names(b, i)
      res.kept[#res.kept + 1] = rec
      res.routes[#res.routes + 1] = e.routes
      res.lines[#res.lines + 1] = line
    end
    res.all[#res.all + 1] = e
  end
  return res
end

-- Runs the script over batch b (an lg_batch_t *) in place and returns the
-- result. A failure of the driver itself raises.
function Filter:run_batch(b)
  timelimit.call(self.timeout, self.progress, "on this record", self.rt.run, 0, b)
  return self:collect(b)
end

function Filter:run_text(text, opts)
  opts = opts or {}
  local b, err = sample.frame(text, opts)
  if not b then error(err, 2) end
  return self:run_batch(b)
end

function Filter:run_file(path, opts)
  local b, err = sample.read(path, opts)
  if not b then error(err, 2) end
  return self:run_batch(b)
end

-- `rel` relative to the directory of the Lua file that calls here(), so a
-- spec finds the script next to it wherever it is run from:
-- testing.load(testing.here("nginx.lua")).
function M.here(rel)
  local src = debug.getinfo(2, "S").source
  local dir = src:sub(1, 1) == "@" and src:match("^@(.*[/\\])") or ""
  return dir .. (rel or "")
end

-- Records as JSON lines, for the "json" sample format.
function M.jsonl(records)
  local lines = {}
  for k, r in ipairs(records) do
    if type(r) == "string" then
      r = { body = r }
    elseif type(r) ~= "table" then
      error("record " .. k .. ": a body (string) or a record (table) expected, got a " .. type(r), 3)
    end
    local ok, s = pcall(json.encode, r)
    if not ok then error("record " .. k .. ": " .. tostring(s), 3) end
    lines[k] = s
  end
  return table.concat(lines, "\n")
end

function Filter:run(records, opts)
  if type(records) ~= "table" then error("run: a list of records expected", 2) end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.format = "json"
  local b, err = sample.frame(M.jsonl(records), o)
  if not b then error(err, 2) end
  return self:run_batch(b)
end

-- Runs one record (a body or a table) and returns its entry of res.all
-- (record, status, routes, error) and the whole result.
function Filter:run_one(r, opts)
  local res = self:run({ r }, opts)
  return res.all[1], res
end

return M
