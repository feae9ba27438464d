-- lugger.sandbox: the environment user scripts run in.
--
-- An allow-list (after Kong's sandbox): each script gets its own env
-- table with copies of the safe parts of the standard library, so a script
-- can change its own `string` or `math` without touching another's or the
-- runtime's. Not reachable: ffi, io, os (except time, clock, date,
-- difftime), debug, jit, package, dofile/loadfile, bytecode (load accepts
-- text only), string.dump (also removed from the real string table, which
-- ("").dump reaches), rawget/rawset/rawlen, getfenv/setfenv, newproxy,
-- collectgarbage/gcinfo, module, and require of anything but "lugger".
-- The string metatable is protected (getmetatable("") returns "string").
--
-- What scripts get besides the standard library is the `lugger` table:
--   lugger.null           JSON null (a field set to it encodes as null)
--   lugger.array(t)       marks t (default {}) as a JSON array, for []
--   lugger.json_encode(v) -> text, or nil and a message
--   lugger.json_decode(s) -> value, or nil and a message
--   lugger.log(msg [, level])  a line in lugger's log (level "debug",
--                         "info" (default), "warn" or "error"), prefixed
--                         with the script's path; print() does the same
--   lugger.version        "0.1.0"
--   lugger.regex, lugger.parse_time  (lugger.parse)
--
-- print() writes to lugger's log (`lugger run`); to standard output with
-- opts.print_stdout (`lugger repl`, lugger.testing); to standard error,
-- each line prefixed with "[<script>:<line>] ", with opts.print_stderr
-- (`lugger test`, whose standard output is the records).
--
-- Fluent Bit filters (opts.compat, lugger.fluentbit's options) get what
-- published filters expect, still inside the sandbox:
--   os.getenv(name)   every variable of lugger's environment, or only the
--                     names of the getenv option: filters read settings a
--                     DaemonSet passes in its env (CLUSTER_NAME, NODE_NAME),
--                     and the scripts come from the same operator who
--                     writes that environment; the option narrows it where
--                     the environment holds secrets the filter should not
--                     see
--   package           path (editable: "<script dir>/?.lua;<script
--                     dir>/?/init.lua", then the package_path option),
--                     cpath (""), loaded, preload, searchers-free require
--   require(name)     package.loaded, package.preload, "cjson" and
--                     "cjson.safe" (lugger.cjson), the standard library
--                     tables, then Lua source files on package.path; a
--                     template starting with "./" or "../" is relative to
--                     the script's directory. Text chunks only, loaded into this
--                     script's environment; no C modules
--   string methods    functions a script adds to `string` work as methods
--                     ("x"):rtrim() while that script runs (M.use_strings)
local json = require("lugger.json")
local log = require("lugger.log")
local version = require("lugger.version")
local parse = require("lugger.parse")

local M = {}

-- string.dump turns functions into bytecode, and loading bytecode is the
-- classic escape from a Lua sandbox; no code in lugger needs it.
string.dump = nil -- luacheck: ignore 122
-- Kept before the metatable is protected: M.use_strings points its
-- __index at a script's own string table while that script runs.
local string_mt = getmetatable("")
local real_string = string
string_mt.__metatable = "string"

-- Makes method calls on strings (s:upper()) look up `t` (a script's
-- `string` table), or the real string table when t is nil. The driver
-- sets it around a Fluent Bit filter's calls and puts it back after, so
-- one script's string extensions never reach another script or the host.
function M.use_strings(t)
  string_mt.__index = t or real_string
end

local real_load = load
local type, tostring, error, select, pairs, concat =
  type, tostring, error, select, pairs, table.concat
local find, pcall, xpcall, resume = string.find, pcall, xpcall, coroutine.resume
local getinfo = debug.getinfo
-- Trusted code calls these, never string methods: while a filter runs,
-- method calls on strings reach that script's own string table.
local gsub, ssub, gmatch, byte = string.gsub, string.sub, string.gmatch, string.byte

-- The watchdog interrupts a looping script with an error whose text holds
-- this tag (LG_LUA_TIMEOUT_TAG in lg_lua.h). Scripts may catch their own
-- errors, but not that one: the pcall, xpcall and coroutine.resume they
-- get pass it on, so it reaches the driver and fails the record.
local TIMEOUT_TAG = "script_timeout:"

local function is_timeout(e)
  return type(e) == "string" and find(e, TIMEOUT_TAG, 1, true) ~= nil
end

local function pass_timeout(ok, ...)
  if not ok and is_timeout((...)) then error((...), 0) end
  return ok, ...
end

local function safe_pcall(f, ...)
  return pass_timeout(pcall(f, ...))
end

local function safe_xpcall(f, handler, ...)
  return pass_timeout(xpcall(f, function(e)
    if is_timeout(e) then return e end
    return handler(e)
  end, ...))
end

local function safe_resume(co, ...)
  return pass_timeout(resume(co, ...))
end

-- pairs and next on a record or batch proxy would list the proxy's own
-- slots, not the fields (they live in C): a loop that copies or renames
-- "every field" would silently see nothing useful. Say so instead (level
-- 0: the driver names the script line, tail calls included).
local getmetatable, next = getmetatable, next
local function not_a_table(fname, t)
  local mt = getmetatable(t)
  if mt == "lugger.record" then
    error(fname .. "(rec): a record is not a Lua table and its fields cannot be listed;"
          .. " read and write them by name (rec.x, rec[\"k8s.pod.name\"], rec:get(k))", 0)
  elseif mt == "lugger.batch" then
    error(fname .. "(batch): a batch is not a Lua table; loop over batch:records()", 0)
  end
end

local function safe_pairs(t)
  not_a_table("pairs", t)
  return pairs(t)
end

local function safe_next(t, k)
  not_a_table("next", t)
  return next(t, k)
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local safe_globals = {
  "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall",
  "rawequal", "select", "setmetatable", "tonumber", "tostring", "type",
  "unpack", "xpcall", "_VERSION",
}

-- "<script>:<line>" of the innermost script frame that called print()
-- (pcall(print, x) puts the sandbox's pcall in between; a call in tail
-- position leaves no frame, so its caller's line is named).
local function print_where()
  for level = 3, 50 do
    local info = getinfo(level, "Sl")
    if not info then break end
    if info.currentline > 0 and find(info.source, "@lua/lugger/", 1, true) ~= 1 then
      return info.short_src .. ":" .. info.currentline
    end
  end
  return "?"
end

-- Returns a new environment for the script at `path` (used in log lines).
-- opts (optional): print_stdout, print_stderr (see above); compat, the Fluent Bit
-- options (lugger.fluentbit.options) for a Fluent Bit filter; on_chunk,
-- called with the chunk name ("@path") of each module file it loads.
function M.env(path, component, opts)
  opts = opts or {}
  component = component or "script"
  local env = {}
  for _, k in ipairs(safe_globals) do env[k] = _G[k] end
  env.string = copy(string)
  env.table = copy(table)
  env.math = copy(math)
  env.bit = copy(bit)
  env.coroutine = copy(coroutine)
  env.coroutine.resume = safe_resume
  env.pcall, env.xpcall = safe_pcall, safe_xpcall
  env.pairs, env.next = safe_pairs, safe_next
  env.os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }

  local function logmsg(level, ...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    log.write(level, component, path .. ": " .. concat(parts, "\t"))
  end

  local lugger = {
    null = json.null,
    array = json.array,
    version = version.text,
  }
  function lugger.json_encode(v)
    local ok, s = pcall(json.encode, v)
    if ok then return s end
    return nil, tostring(s)
  end
  lugger.json_decode = json.decode
  lugger.regex, lugger.parse_time = parse.regex, parse.parse_time
  function lugger.log(msg, level)
    level = level or "info"
    if not log.levels[level] then
      error("lugger.log: unknown level '" .. tostring(level) .. "'", 2)
    end
    logmsg(level, msg)
  end
  env.lugger = lugger

  if opts.print_stdout then
    function env.print(...)
      local n = select("#", ...)
      local parts = {}
      for i = 1, n do parts[i] = tostring((select(i, ...))) end
      io.stdout:write(concat(parts, "\t"), "\n")
    end
  elseif opts.print_stderr then
    -- `lugger test`: standard output carries the records (piped to jq),
    -- so print() goes to standard error, each line marked with where it
    -- was printed from, like the script's error lines there.
    function env.print(...)
      local n = select("#", ...)
      local parts = {}
      for i = 1, n do parts[i] = tostring((select(i, ...))) end
      local prefix = "[" .. print_where() .. "] "
      local text = gsub(concat(parts, "\t"), "\n", function() return "\n" .. prefix end)
      io.stderr:write(prefix, text, "\n")
    end
  else
    function env.print(...)
      logmsg("info", ...)
    end
  end

  -- Text chunks only, in this script's environment unless given another.
  -- A script cannot pass code it loads off as lugger's own runtime
  -- ("@lua/lugger/..."), which the watchdog never interrupts.
  local function chunk_name(name)
    if type(name) == "string" and (find(name, "@lua/lugger/", 1, true) == 1
        or name == "=lg_lua_create" or name == "=[C]") then
      return "=" .. name
    end
    return name
  end
  function env.load(chunk, name, mode, e)
    if mode ~= nil and mode ~= "t" then
      error("load: only text chunks can be loaded in scripts", 2)
    end
    return real_load(chunk, chunk_name(name), "t", e or env)
  end
  function env.loadstring(s, name)
    return real_load(s, chunk_name(name), "t", env)
  end

  local modules = {
    lugger = lugger, string = env.string, table = env.table,
    math = env.math, bit = env.bit, coroutine = env.coroutine,
  }
  function env.require(name)
    local m = modules[name]
    if m == nil then
      error("require '" .. tostring(name) .. "': scripts can only require 'lugger'", 2)
    end
    return m
  end
  if opts.compat then M.add_compat(env, path, modules, opts) end

  env._G = env
  return env
end

local function file_exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

-- The Fluent Bit additions to a script's env (see the header).
function M.add_compat(env, path, modules, opts)
  local o = opts.compat
  local allow = o.getenv
  local getenv = os.getenv
  env.os.getenv = function(name)
    if type(name) ~= "string" then
      error("bad argument #1 to 'getenv' (string expected, got " .. type(name) .. ")", 2)
    end
    if allow and not allow[name] then return nil end
    return getenv(name)
  end

  local dir = string.match(path, "^(.*)/[^/]*$") or "."
  local cjson = require("lugger.cjson").new()
  modules.cjson = cjson
  modules["cjson.safe"] = cjson.safe
  modules.os = env.os
  local loaded = {}
  for k, v in pairs(modules) do loaded[k] = v end
  local package = {
    path = dir .. "/?.lua;" .. dir .. "/?/init.lua" ..
      (o.package_path and (";" .. o.package_path) or ""),
    cpath = "",
    loaded = loaded,
    preload = {},
    config = "/\n;\n?\n!\n-\n",
  }
  env.package = package
  loaded.package = package

  local loading = {}
  local function search(name)
    local tried = {}
    local file = gsub(name, "%.", "/")
    for template in gmatch(tostring(package.path), "[^;]+") do
      local p = gsub(template, "%?", file)
      -- "./x" and "../x" are the script's neighbours: a filter's own
      -- directory stands where Fluent Bit's working directory would.
      if ssub(p, 1, 2) == "./" then
        p = dir .. ssub(p, 2)
      elseif ssub(p, 1, 3) == "../" then
        p = dir .. "/" .. p
      end
      -- Only Lua source files: a template cannot make require read any
      -- other file (its error messages would show bits of it).
      if ssub(p, -4) == ".lua" and file_exists(p) then return p end
      tried[#tried + 1] = "\n\tno file '" .. p .. "'"
    end
    return nil, concat(tried)
  end

  function env.require(name)
    if type(name) ~= "string" then
      error("bad argument #1 to 'require' (string expected, got " .. type(name) .. ")", 2)
    end
    local m = loaded[name]
    if m ~= nil then return m end
    if loading[name] then
      error("loop or previous error loading module '" .. name .. "'", 2)
    end
    local pre = package.preload[name]
    if type(pre) == "function" then
      loading[name] = true
      local ok, r = pcall(pre, name)
      loading[name] = nil
      if not ok then error(r, 0) end
      if r == nil then r = true end
      if loaded[name] == nil then loaded[name] = r end
      return loaded[name]
    end
    local p, tried = search(name)
    if not p then
      error("module '" .. name .. "' not found:\n\tno field package.preload['" ..
            name .. "']" .. tried .. "\n\t(lugger loads Lua source modules only)", 2)
    end
    local f = io.open(p, "rb")
    local src = f and f:read("*a")
    if f then f:close() end
    if not src then error("module '" .. name .. "': cannot read " .. p, 2) end
    if byte(src, 1) == 27 then
      error("module '" .. name .. "' (" .. p .. "): bytecode cannot be loaded in scripts", 2)
    end
    local chunk, err = real_load(src, "@" .. p, "t", env)
    if not chunk then error("error loading module '" .. name .. "' from file '" .. p .. "':\n\t" .. err, 2) end
    if opts.on_chunk then opts.on_chunk("@" .. p) end
    loading[name] = true
    local ok, r = pcall(chunk, name, p)
    loading[name] = nil
    if not ok then error(r, 0) end
    if r == nil then r = true end
    if loaded[name] == nil then loaded[name] = r end
    return loaded[name]
  end
end

return M
