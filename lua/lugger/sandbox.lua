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
local json = require("lugger.json")
local log = require("lugger.log")
local version = require("lugger.version")

local M = {}

-- string.dump turns functions into bytecode, and loading bytecode is the
-- classic escape from a Lua sandbox; no code in lugger needs it.
string.dump = nil
getmetatable("").__metatable = "string"

local real_load = load
local type, tostring, error, select, pairs, concat =
  type, tostring, error, select, pairs, table.concat
local find, pcall, xpcall, resume = string.find, pcall, xpcall, coroutine.resume

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

-- Returns a new environment for the script at `path` (used in log lines).
function M.env(path, component)
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
  function lugger.log(msg, level)
    level = level or "info"
    if not log.levels[level] then
      error("lugger.log: unknown level '" .. tostring(level) .. "'", 2)
    end
    logmsg(level, msg)
  end
  env.lugger = lugger

  function env.print(...)
    logmsg("info", ...)
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

  env._G = env
  return env
end

return M
