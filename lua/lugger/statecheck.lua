-- lugger.statecheck: where a script keeps state from one record to the
-- next, found in its bytecode (jit.util), for `lugger check` on a pipeline
-- that says `stateless = true`. Such a pipeline spreads one file's
-- batches over every worker, each with its own Lua state, so a counter, a
-- dedupe set or a "previous line" kept at module level sees only some of
-- the records, silently.
--
-- What is found, in process/process_batch (or a Fluent Bit filter's call
-- function), the closures they create, and the script's functions they
-- call (module-level locals and globals that hold a function of the
-- script; `init` is left out, it runs once per worker by design):
--   * an assignment to a module-level local (`count = count + 1`),
--   * an assignment to a global (`last = rec.body`),
--   * a store into a table held by a module-level local (`seen[k] = true`).
-- Not found: state changed through a call (`table.insert(buf, x)`), or
-- through a table reached another way. A cache that every worker may fill
-- on its own (a lazily compiled pattern) is found too; the caller reports
-- warnings, not errors, for that reason.
local bit = require("bit")
local util = require("jit.util")

local band, rshift = bit.band, bit.rshift
local funcbc, funcuvname, funcinfo, funck = util.funcbc, util.funcuvname, util.funcinfo,
  util.funck

local M = {}

-- Operand modes in jit.util.funcbc's second result (lj_bc.h, BCMode):
-- m = ma + mb * 8 + mc * 128.
local DST, BASE, VAR, RBASE, UV = 1, 2, 3, 4, 5

-- The opcodes of GSET and GGET, from probes: GSET has the operand modes
-- of ISEQS, GGET those of KSTR, and opcode numbers are the LuaJIT
-- build's own.
local GSET = band(funcbc(loadstring("return function(v) lugger_probe = v end")(), 1), 0xff)
local GGET = band(funcbc(loadstring("return function() return lugger_probe end")(), 1), 0xff)

-- Scans proto `f` (a function or a jit.util proto). `mod[i]` is the name
-- of upvalue i (0-based) when it is a module-level local. Calls
-- found(line, text) for each write to state, and visit(name) for each
-- global it reads (a function it may call).
local function scan(f, mod, found, visit)
  -- A linear pass, blind to jumps: good enough to see which slots a
  -- store's table came from, as the compiler keeps such a slot until the
  -- store.
  local from_uv = {} -- slot -> module-level local whose value it holds
  local pc = 1
  while true do
    local ins, m = funcbc(f, pc)
    if not ins then break end
    local op = band(ins, 0xff)
    local a = band(rshift(ins, 8), 0xff)
    local ma, mb, mc = band(m, 7), band(rshift(m, 3), 15), band(rshift(m, 7), 15)
    if op == GSET then
      local name = funck(f, -rshift(ins, 16) - 1)
      found(funcinfo(f, pc).currentline, "assigns the global '" .. tostring(name) .. "'")
    elseif ma == UV then -- USETV/S/N/P
      if mod[a] then
        found(funcinfo(f, pc).currentline, "assigns the module-level local '" .. mod[a] .. "'")
      end
    elseif ma == VAR and mb == VAR then -- TSETV/S/B: A = value, B = table
      local t = from_uv[rshift(ins, 24)]
      if t then
        found(funcinfo(f, pc).currentline, "stores into the module-level table '" .. t .. "'")
      end
    end
    if ma == DST then
      from_uv[a] = nil
      if mc == UV and mb == 0 then -- UGET
        from_uv[a] = mod[rshift(ins, 16)]
      elseif op == GGET and visit then -- a global the function may call
        visit(funck(f, -rshift(ins, 16) - 1))
      end
    elseif ma == BASE or ma == RBASE then
      -- Calls and loops write slots from A up: forget them.
      for s in pairs(from_uv) do
        if s >= a then from_uv[s] = nil end
      end
    end
    pc = pc + 1
  end
  -- Closures made inside: their upvalues that the enclosing function also
  -- has as module-level ones are module-level (Lua passes an outer local
  -- down through every function in between).
  local names = {}
  for _, name in pairs(mod) do names[name] = true end
  for n = -1, -1000000, -1 do
    local k = funck(f, n)
    if k == nil then break end
    if type(k) == "proto" then
      local kmod = {}
      for i = 0, 255 do
        local name = funcuvname(k, i)
        if name == nil then break end
        if names[name] then kmod[i] = name end
      end
      scan(k, kmod, found, nil)
    end
  end
end

-- Returns a list of "<chunk>:<line>: <what>" for the writes to state that
-- function `fn` and the script's functions it reaches make. `env` is the
-- script's environment (for its global functions), `chunk` its chunk
-- name ("@path"), `skip` a function to leave out (init).
function M.find(fn, env, chunk, skip)
  local out, seen_line, done = {}, {}, {}
  local short = chunk:gsub("^@", "")
  local function ours(v)
    if type(v) ~= "function" or v == skip or done[v] then return false end
    local info = debug.getinfo(v, "S")
    return info.what == "Lua" and info.source == chunk
  end
  local queue = { fn }
  done[fn] = true
  local function visit(name)
    local v = env and rawget(env, name)
    if ours(v) then
      done[v] = true
      queue[#queue + 1] = v
    end
  end
  local function found(line, text)
    local key = line .. text
    if seen_line[key] then return end
    seen_line[key] = true
    out[#out + 1] = { line = line, text = short .. ":" .. tostring(line) .. ": " .. text }
  end
  local qi = 1
  while queue[qi] do
    local f = queue[qi]
    qi = qi + 1
    local mod = {}
    for i = 1, 255 do
      local name, v = debug.getupvalue(f, i)
      if name == nil then break end
      mod[i - 1] = name
      if ours(v) then
        done[v] = true
        queue[#queue + 1] = v
      end
    end
    scan(f, mod, found, visit)
  end
  table.sort(out, function(x, y)
    if x.line ~= y.line then return x.line < y.line end
    return x.text < y.text
  end)
  for k, v in ipairs(out) do out[k] = v.text end
  return out
end

return M
