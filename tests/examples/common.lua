-- common.lua - helpers shared by the example harnesses in tests/examples/.
--
-- Loaded with dofile() by csv_check.lua and nginx_check.lua. It splits a
-- file into records the way `format = "line"` framing does (records end at
-- LF, one CR before the LF is removed, a last line without LF is a record).
--
-- Scripts run inside the host (`lugger lua FILE ARGS`) through
-- lugger.testing: the real sandbox, driver and record, so the C helpers
-- of the examples (lugger.regex, rec:parse_regex) work. Under a plain
-- `luajit` (no lugger modules) the harness stands in for the collector:
-- it loads the script as text into an allow-list environment like the
-- sandbox of DESIGN.md "Lua scripts" and hands it record proxies whose
-- fields are read and written as rec.x; a script that uses the C helpers
-- cannot run there.

local M = {}

-- Returns the whole content of `path`, or raises an error naming it.
function M.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("cannot open " .. tostring(err), 0) end
  local s = f:read("*a")
  f:close()
  return s
end

-- Splits `data` into records like the "line" framing: LF ends a record, a
-- CR right before that LF is not part of it, and bytes after the last LF
-- form a last record (the collector would deliver it at flush time).
function M.split_lines(data)
  local lines, pos, n = {}, 1, #data
  while pos <= n do
    local lf = data:find("\n", pos, true)
    local stop = lf and lf - 1 or n
    local line = data:sub(pos, stop)
    if lf and line:sub(-1) == "\r" then line = line:sub(1, -2) end
    lines[#lines + 1] = line
    pos = stop + 2
  end
  return lines
end

-- The allow-list environment a user script sees: base functions, string,
-- table, math and the harmless part of os. Tables are copied so a script
-- that writes string.foo does not change the harness's own string table.
-- No io, require, load*, dofile, debug, jit, ffi or string.dump: a parser
-- that needs them would not load in the collector either.
function M.sandbox_env()
  local function copy(t, except)
    local c = {}
    for k, v in pairs(t) do
      if not (except and except[k]) then c[k] = v end
    end
    return c
  end
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next,
    pairs = pairs, pcall = pcall, select = select, tonumber = tonumber,
    tostring = tostring, type = type, unpack = unpack, xpcall = xpcall,
    rawequal = rawequal, rawget = rawget, rawset = rawset,
    setmetatable = setmetatable, getmetatable = getmetatable,
    string = copy(string, { dump = true }),
    table = copy(table),
    math = copy(math),
    os = { time = os.time, date = os.date, clock = os.clock },
  }
  env._G = env
  return env
end

-- A record proxy: rec.x reads field x, rec.x = v writes it, rec.x = nil
-- removes it; the methods get, set, drop and route win over fields of the
-- same name, as in the collector. Returns the proxy and its state (the
-- fields table, and the verdict set by drop/route).
function M.new_record(body)
  local state = { fields = { body = body }, dropped = false, routes = nil }
  local methods = {
    get = function(_, k) return state.fields[k] end,
    set = function(_, k, v) state.fields[k] = v end,
    drop = function() state.dropped = true end,
    route = function(_, ...) state.routes = { ... } end,
  }
  local rec = setmetatable({}, {
    __index = function(_, k)
      local m = methods[k]
      if m ~= nil then return m end
      return state.fields[k]
    end,
    __newindex = function(_, k, v) state.fields[k] = v end,
  })
  return rec, state
end

local has_lugger, testing = pcall(require, "lugger.testing")

-- Inside the host: the script as a lugger.testing filter. Fields of a
-- processed record are its output minus `time` and `log.file.path`, which
-- the collector sets (the examples' goldens check `time`).
local Hosted = {}
Hosted.__index = Hosted

function Hosted:process(body)
  local res = self.f:run({ body })
  local e = res.all[1]
  if e.status == "failed" then error(e.error, 0) end
  local fields = {}
  for k, v in pairs(e.record) do
    if k ~= "time" and k ~= "log.file.path" then fields[k] = v end
  end
  local routes = e.routes
  if routes and #routes == 1 and routes[1] == "default" then routes = nil end
  return { fields = fields, dropped = e.status == "dropped", routes = routes,
           time = e.record.time }
end

-- Loads the script at `path` as text into a fresh sandbox environment and
-- runs its init(params) when it has one. Returns the environment (or,
-- inside the host, a filter); raises an error naming the script when it
-- fails to load or has no process().
function M.load_script(path, params)
  if has_lugger then
    local f, err = testing.load(path, { params = params or {} })
    if not f then error(err, 0) end
    return setmetatable({ f = f }, Hosted)
  end
  local src = M.read_file(path)
  local env = M.sandbox_env()
  local chunk, err = load(src, "@" .. path, "t", env)
  if not chunk then error(err, 0) end
  chunk()
  if type(env.process) ~= "function" then
    error(path .. ": defines no function process(rec)", 0)
  end
  if type(env.init) == "function" then env.init(params or {}) end
  return env
end

-- Runs env.process over one record. Returns the state of the record after
-- the call, with `dropped` and `routes` set from the return value as the
-- contract says: nothing or true keeps, false drops, a name or a list of
-- names routes.
function M.process(env, body)
  if getmetatable(env) == Hosted then return env:process(body) end
  local rec, state = M.new_record(body)
  local ret = env.process(rec)
  if ret == false then
    state.dropped = true
  elseif type(ret) == "string" then
    state.routes = { ret }
  elseif type(ret) == "table" then
    state.routes = ret
  end
  return state
end

-- The directory of the running harness (from arg[0]), ending in "/".
function M.script_dir()
  local a0 = arg and arg[0] or ""
  return a0:match("^(.*/)") or "./"
end

return M
