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
  function env.load(chunk, name, mode, e)
    if mode ~= nil and mode ~= "t" then
      error("load: only text chunks can be loaded in scripts", 2)
    end
    return real_load(chunk, name, "t", e or env)
  end
  function env.loadstring(s, name)
    return real_load(s, name, "t", env)
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
