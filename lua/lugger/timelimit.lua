-- lugger.timelimit: settings.script_timeout for scripts run outside the
-- collector, in lugger.testing (busted specs) and `lugger repl`.
--
-- The collector (and `lugger test`) have a watchdog thread that samples
-- each worker (src/pipeline/lg_watchdog.c); these hosts run the script on
-- their only thread, so a count hook checks the CPU time instead: every
-- CHECK_EVERY VM instructions it reads os.clock(), and when the record
-- being processed (the driver's progress slots) has not changed for
-- longer than the limit, it raises the collector's timeout error in the
-- next instruction of user code (never in lua/lugger/ code, whose
-- bookkeeping must not break half-way):
--   "<script>:<line>: script_timeout: exceeded the time limit of 1000 ms
--    of CPU time on this record"
-- The driver fails that record and goes on with the next one, as in the
-- collector; the sandbox's pcall, xpcall and coroutine.resume pass the
-- error on.
--
-- LuaJIT's compiled traces never run hooks, so the JIT is off while a
-- limited call runs (user code is then never compiled: results are the
-- same, only slower); the hook stands in for any other debug hook (a
-- coverage tool's) meanwhile, and is put back after. A long call into C
-- (string.rep of gigabytes, a pattern that backtracks for minutes) cannot
-- be interrupted.
local jit = require("jit")

local getinfo, gethook, sethook = debug.getinfo, debug.gethook, debug.sethook
local clock, find, format = os.clock, string.find, string.format
local pcall, error, select, unpack, tonumber = pcall, error, select, unpack, tonumber

local M = {}

-- settings.script_timeout's default, in milliseconds.
M.DEFAULT_MS = 1000

-- The tag of the collector's timeout errors (LG_LUA_TIMEOUT_TAG).
M.TAG = "script_timeout:"

-- Instructions between two looks at the clock: a look costs about as much
-- as a few hundred interpreted instructions.
local CHECK_EVERY = 10000

-- Chunks of the trusted runtime, where the hook never raises.
local function trusted(src)
  return src == nil or src == "=[C]" or find(src, "@lua/lugger/", 1, true) == 1
end

local function pack(...)
  return { n = select("#", ...), ... }
end

-- Calls fn(...) with a limit of `limit_ms` milliseconds of CPU time per
-- record and returns what it returns; its errors are raised again.
-- `progress`: the driver's watchdog slots (an int64_t[2] cdata: [0] the
-- record being processed, [1] the script), whose change restarts the
-- clock; nil for one limit over the whole call. `what` ends the error
-- text ("on this record", "loading the script"). A `limit_ms` of 0 or
-- nil calls fn with no limit (and the JIT as it is).
function M.call(limit_ms, progress, what, fn, ...)
  if not limit_ms or limit_ms <= 0 then return fn(...) end
  local limit = limit_ms / 1000
  local msg = format("%s exceeded the time limit of %d ms of CPU time %s",
                     M.TAG, limit_ms, what)
  local rec, script = -2, -2
  local start = clock()
  local function hook()
    if progress then
      local r, s = tonumber(progress[0]), tonumber(progress[1])
      if r ~= rec or s ~= script then
        rec, script, start = r, s, clock()
        return
      end
    end
    if clock() - start < limit then return end
    local info = getinfo(2, "Sl")
    if not info or trusted(info.source) then return end
    -- The driver goes on with the next record: a whole limit for it.
    start = clock()
    error(info.short_src .. ":" .. tostring(info.currentline) .. ": " .. msg, 0)
  end
  local ohook, omask, ocount = gethook()
  local jit_on = jit.status()
  jit.off()
  sethook(hook, "", CHECK_EVERY)
  local res = pack(pcall(fn, ...))
  sethook(ohook, omask or "", ocount or 0)
  if jit_on then jit.on() end
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

return M
