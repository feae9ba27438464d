-- lugger.repl: the commands of `lugger repl`, apart from the terminal.
--
-- src/cmd/lg_cmd_repl.c reads lines (libedit in a terminal, plain reads from a
-- pipe) and hands each to session:eval(line), which returns the text to
-- print, whether the line succeeded, and whether to quit. A busted spec
-- drives a session the same way, without a terminal.
--
-- A session holds the sample's records (framed as `lugger test` frames
-- them), the current record, and the script (lugger.testing). Moving to a
-- record copies it into a batch of its own and runs the script over it;
-- `rec` in a Lua line is that record after the script, so `rec.status`
-- shows what the script set and `rec.x = 1` changes it (until the next
-- move). Lua lines run in a sandbox environment like a script's
-- (lugger.sandbox), kept across lines, so `x = rec.status` then `x + 1`
-- works. Each line is first tried as an expression (`return <line>`),
-- then as a statement. A line has a time limit of its own (opts.line_timeout_ms,
-- lugger.timelimit): from a pipe nothing else could stop a loop.
local ffi = require("ffi")
local bit = require("bit")
local batch = require("lugger.batch")
local json = require("lugger.json")
local record = require("lugger.record")
local sandbox = require("lugger.sandbox")
local sample = require("lugger.sample")
local testing = require("lugger.testing")
local timelimit = require("lugger.timelimit")

local M = {}

-- Commands, for :help and for completion in the terminal.
M.commands = {
  { ":next", "[N]", "go N records forward (default 1) and run the script" },
  { ":prev", "[N]", "go N records back" },
  { ":goto", "N", "go to record N (from 1)" },
  { ":show", "", "show the current record and the script's result again" },
  { ":line", "TEXT", "add TEXT as a sample line (framed as --format says) and go to it" },
  { ":load", "FILE", "load FILE as the script (the old one stays if it fails)" },
  { ":reload", "", "read the script and the sample again" },
  { ":help", "", "this list" },
  { ":quit", "", "leave (also :q, :exit, Ctrl-D)" },
}

local aliases = { [":n"] = ":next", [":p"] = ":prev", [":q"] = ":quit",
                  [":exit"] = ":quit", [":h"] = ":help", [":?"] = ":help",
                  [":r"] = ":reload", [":s"] = ":show" }

local Session = {}
Session.__index = Session

-- Creates a session. opts:
--   script       path of the script to load (optional)
--   sample       path of the sample file (optional; without one the
--                session starts with one empty record)
--   format       sample format (default "auto")
--   params, compat, call, compat_opts, tag: as for lugger.testing.load
--   line_timeout_ms  the time limit of a Lua line, in milliseconds of CPU
--                time (default 1000, settings.script_timeout's default; 0:
--                none, for a terminal, where Ctrl-C stops a line). A line
--                over it fails with "repl:<line>: script_timeout: exceeded
--                the time limit of <N> ms of CPU time on this line".
-- Returns the session and a message for the start (a script that does
-- not load is reported there, and :reload tries again), or nil and an
-- error when the sample cannot be read or an option is wrong.
function M.new(opts)
  opts = opts or {}
  local fmt, ferr = sample.format(opts.format)
  if not fmt then return nil, ferr end
  local line_limit = opts.line_timeout_ms
  if line_limit == nil then line_limit = timelimit.DEFAULT_MS end
  if type(line_limit) ~= "number" or line_limit < 0 then
    return nil, "line_timeout_ms: a number of milliseconds (0: no limit) expected"
  end
  local self = setmetatable({
    opts = opts,
    format = opts.format or "auto",
    script = opts.script,
    extra = {},         -- lines added with :line
    i = 0,              -- current record (0-based)
    line_limit = line_limit,
    env = sandbox.env("repl", "repl"),
    printed = {},
  }, Session)
  -- print() in a Lua line shows its text among the results (in a script
  -- it writes to lugger's log, as in the collector).
  self.env.print = function(...)
    local parts = {}
    for k = 1, select("#", ...) do parts[k] = tostring((select(k, ...))) end
    self.printed[#self.printed + 1] = table.concat(parts, "\t")
  end
  local ok, err = self:read_sample()
  if not ok then return nil, err end
  local msg
  if self.script then
    ok, err = self:load_script(self.script)
    if not ok then msg = "error: " .. err end
  end
  -- A route name set from a Lua line that the script never used gets an
  -- index of its own, counted down from 63.
  local own_routes, next_route = {}, 63
  self.route_name = function(k)
    return own_routes[k] or (self.filter and self.filter.rt.output_name(k))
  end
  self.view = record.new(function(name)
    for k = 0, 63 do
      if self.route_name(k) == name then return k end
    end
    if next_route < 0 then return nil, "too many outputs" end
    own_routes[next_route] = name
    next_route = next_route - 1
    return next_route + 1
  end)
  self:select(0)
  return self, msg
end

-- Reads the sample (or makes the one empty record) into self.src.
function Session:read_sample()
  local b, err
  if self.opts.sample then
    b, err = sample.read(self.opts.sample, { format = self.format })
  else
    b, err = sample.frame(#self.extra > 0 and "" or "\n", { format = "line" })
  end
  if not b then return nil, err end
  for _, line in ipairs(self.extra) do
    local lb, lerr = sample.frame(line .. "\n", { format = self.format })
    if not lb then return nil, lerr end
    for k = 0, lb.n - 1 do sample.copy(b, lb, k) end
  end
  if b.n == 0 then
    return nil, (self.opts.sample or "sample") .. ": no records"
  end
  self.src = b
  return true
end

-- Loads the script at path; on failure the old one stays.
function Session:load_script(path)
  local o = self.opts
  local f, err = testing.load(path, { params = o.params, compat = o.compat,
    call = o.call, compat_opts = o.compat_opts, tag = o.tag })
  if not f then return nil, err end
  self.filter, self.script = f, path
  return true
end

-- Makes record i (0-based) of the sample current: a copy of it in a batch
-- of its own, run through the script.
function Session:select(i)
  self.view.finish()  -- `rec` values kept from the last record go stale
  self.i = i
  local w = batch.new({})
  sample.copy(w, self.src, i)
  self.input = batch.encode(w, 0)
  self.work = w
  self.result = self.filter and self.filter:run_batch(w) or nil
  -- A record proxy for Lua lines: the view's own loop hands one out; it
  -- skips dropped and failed records, so their flags are lifted meanwhile.
  self.view.begin(w)
  local flags = w.recs[0].flags
  w.recs[0].flags = bit.band(flags, bit.bnot(batch.DROPPED + batch.FAILED))
  local proxy
  self.view.run_process(function(r) proxy = r end, 0)
  w.recs[0].flags = flags
  self.rec = proxy
end

-- "<JSON line>" of record k of the current batch as it is now.
function Session:encode(k)
  return batch.encode(self.work, k)
end

-- The text that shows the current record and the script's result.
function Session:show()
  local w = self.work
  local r0 = self.src.recs[self.i]
  local where = self.opts.sample and (self.opts.sample .. " offset " .. tostring(tonumber(r0.offset)))
    or "no sample"
  if self.i >= self.src.n - #self.extra and #self.extra > 0 then
    where = ":line"
  end
  local out = { ("record %d/%d (%s)"):format(self.i + 1, self.src.n, where), self.input }
  if not self.filter then
    out[#out + 1] = "(no script: :load FILE)"
    return table.concat(out, "\n")
  end
  if w.n > 1 then
    out[#out + 1] = ("-> %s made %d records"):format(self.script, w.n)
  end
  for k = 0, w.n - 1 do
    local r = w.recs[k]
    if bit.band(r.flags, batch.FAILED) ~= 0 then
      out[#out + 1] = "-> error: " .. ffi.string(w.data + r.err_off, r.err_len)
    elseif bit.band(r.flags, batch.DROPPED) ~= 0 then
      out[#out + 1] = "-> dropped"
      out[#out + 1] = self:encode(k)
    else
      local names = {}
      local routes = r.routes
      for b = 0, 63 do
        if bit.band(routes, bit.lshift(1ULL, b)) ~= 0ULL then
          names[#names + 1] = self.route_name(b) or ("#" .. b)
        end
      end
      out[#out + 1] = "-> kept, routes: " .. (#names > 0 and table.concat(names, ", ") or "(none)")
      out[#out + 1] = self:encode(k)
    end
  end
  return table.concat(out, "\n")
end

-- Whether the current record failed in the script.
function Session:failed()
  local w = self.work
  for k = 0, w.n - 1 do
    if bit.band(w.recs[k].flags, batch.FAILED) ~= 0 then return true end
  end
  return false
end

-- Shows the current record; a script error on it counts as a failure.
function Session:show_result()
  return self:show(), not self:failed()
end

-- One value of a Lua line's results, as shown.
function Session:format_value(v)
  local t = type(v)
  if t == "string" then
    return json.encode(v)
  elseif v == json.null then
    return "null"
  elseif t == "table" then
    if getmetatable(v) == "lugger.record" then
      if v == self.rec then return self:encode(0) end
      return "lugger.record"
    end
    local ok, s = pcall(json.encode, v)
    return ok and s or tostring(v)
  elseif t == "number" and v == math.floor(v) and v >= -2 ^ 53 and v <= 2 ^ 53 then
    return ("%d"):format(v)
  end
  return tostring(v)
end

local function error_text(e)
  if type(e) == "string" then return e end
  local ok, s = pcall(tostring, e)
  return ok and s or ("error object of type " .. type(e))
end

local function pack(...)
  return { n = select("#", ...), ... }
end

-- Runs a Lua line against the current record.
function Session:lua(line)
  local fn, err = load("return " .. line, "=repl", "t", self.env)
  if not fn then
    fn, err = load(line, "=repl", "t", self.env)
  end
  if not fn then return "error: " .. err, false end
  self.env.rec = self.rec
  self.printed = {}
  local res = pack(pcall(timelimit.call, self.line_limit, nil, "on this line", fn))
  local parts = self.printed
  if not res[1] then
    parts[#parts + 1] = "error: " .. error_text(res[2])
    return table.concat(parts, "\n"), false
  end
  local values = {}
  for k = 2, res.n do
    values[#values + 1] = self:format_value(res[k])
  end
  if #values > 0 then parts[#parts + 1] = table.concat(values, "\t") end
  return table.concat(parts, "\n"), true
end

function Session:help()
  local out = { "Commands:" }
  for _, c in ipairs(M.commands) do
    out[#out + 1] = ("  %-14s %s"):format(c[1] .. (c[2] ~= "" and " " .. c[2] or ""), c[3])
  end
  out[#out + 1] = "Anything else is Lua, run in the script sandbox with `rec` the current"
  out[#out + 1] = "record after the script: rec.body, rec.status + 1, rec.x = 1,"
  out[#out + 1] = "rec[\"k8s.pod.name\"], rec:get(k)."
  return table.concat(out, "\n")
end

-- Moves to record `to` (0-based) when it exists.
function Session:move(to)
  if to < 0 or to >= self.src.n then
    return ("error: no record %d (the sample has %d)"):format(to + 1, self.src.n), false
  end
  self:select(to)
  return self:show_result()
end

local function count(arg, default)
  if arg == "" then return default end
  local n = tonumber(arg)
  if not n or n ~= math.floor(n) then return nil end
  return n
end

-- Runs one line. Returns the text to print ("" for none), true when it
-- succeeded, and true when the session should end.
function Session:eval(line)
  line = line:gsub("^%s+", ""):gsub("%s+$", "")
  if line == "" then return "", true, false end
  if line:sub(1, 1) ~= ":" then
    local text, ok = self:lua(line)
    return text, ok, false
  end
  local cmd, arg = line:match("^(%S+)%s*(.*)$")
  cmd = aliases[cmd] or cmd
  if cmd == ":quit" then
    return "", true, true
  elseif cmd == ":help" then
    return self:help(), true, false
  elseif cmd == ":show" then
    local text, ok = self:show_result()
    return text, ok, false
  elseif cmd == ":next" or cmd == ":prev" then
    local n = count(arg, 1)
    if not n then return "error: " .. cmd .. " takes a number", false, false end
    local text, ok = self:move(self.i + (cmd == ":next" and n or -n))
    return text, ok, false
  elseif cmd == ":goto" then
    local n = count(arg, nil)
    if not n then return "error: :goto takes a record number", false, false end
    local text, ok = self:move(n - 1)
    return text, ok, false
  elseif cmd == ":line" then
    if arg == "" then return "error: :line takes the text of a log line", false, false end
    self.extra[#self.extra + 1] = arg
    local ok, err = self:read_sample()
    if not ok then
      self.extra[#self.extra] = nil
      return "error: " .. err, false, false
    end
    local text
    text, ok = self:move(self.src.n - 1)
    return text, ok, false
  elseif cmd == ":load" or cmd == ":reload" then
    local path = cmd == ":load" and arg or self.script
    if cmd == ":load" and arg == "" then
      return "error: :load takes a script path", false, false
    end
    local msgs, ok = {}, true
    if cmd == ":reload" then
      local sok, serr = self:read_sample()
      if not sok then
        msgs[#msgs + 1] = "error: " .. serr
        ok = false
      end
    end
    if path then
      local lok, lerr = self:load_script(path)
      if lok then
        msgs[#msgs + 1] = "loaded " .. path
      else
        msgs[#msgs + 1] = "error: " .. lerr
        ok = false
      end
    end
    self:select(math.min(self.i, self.src.n - 1))
    local text, sok = self:show_result()
    msgs[#msgs + 1] = text
    return table.concat(msgs, "\n"), ok and sok, false
  end
  return "error: unknown command " .. cmd .. " (:help lists them)", false, false
end

-- Names that complete `text` at the start of a line (commands).
function Session:complete(text)
  local out = {}
  if text:sub(1, 1) == ":" then
    for _, c in ipairs(M.commands) do
      if c[1]:sub(1, #text) == text then out[#out + 1] = c[1] end
    end
  end
  return out
end

return M
