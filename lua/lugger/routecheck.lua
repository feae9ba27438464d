-- lugger.routecheck: the output names a script routes to as constants,
-- found in its bytecode (jit.util), so that `lugger check` can name a
-- route to an output the config does not have. At run time such a route
-- fails every record that takes it (dead-letter output); `lugger test`
-- cannot see it, as it has no config and takes any name.
--
-- What is found, with the line: `return "name"` and `return { "a", "b" }`
-- in process itself, and `rec:route("a", ...)` / `rec:route{ "a" }` with
-- constant names in process or process_batch and the closures they make.
-- Names computed at run time (`return rec.level`) are not seen.
local bit = require("bit")
local util = require("jit.util")

local band, rshift = bit.band, bit.rshift
local funcbc, funcinfo, funck = util.funcbc, util.funcinfo, util.funck

local M = {}

-- Operand modes (lj_bc.h BCMode), as in lugger.statecheck.
local DST, BASE, RBASE = 1, 2, 4

-- Opcodes from probes (their numbers are the LuaJIT build's own):
-- KSTR and RET1 from `return "x"`, TDUP from `return { "x" }`, TGETS from
-- `r.route`, CALL from `f()`.
local function ops_of(src)
  local f, out, modes = loadstring(src)(), {}, {}
  for pc = 1, 8 do
    local ins, m = funcbc(f, pc)
    if not ins then break end
    out[pc], modes[pc] = band(ins, 0xff), band(m, 7)
  end
  return out, modes
end
local KSTR, RET1 = unpack((ops_of('return function() return "x" end')))
local TDUP = ops_of('return function() return { "x" } end')[1]
local TGETS = ops_of("return function(r) return r.route end")[1]
local CALL
do -- `f()` is a MOV of f to the call's base, then the CALL (mode base)
  local ops, modes = ops_of("return function(f) f() end")
  for i = 1, #ops do
    if modes[i] == BASE then CALL = ops[i] break end
  end
end

-- The strings of a constant table's array part: a list of route names.
local function names_of(t)
  if type(t) ~= "table" then return nil end
  local out = {}
  for i = 1, #t do
    if type(t[i]) ~= "string" then return nil end
    out[i] = t[i]
  end
  return out
end

-- Scans proto f; `returns`: whether its `return` values are routes (f is
-- process). Calls found(line, name) for each constant route name.
local function scan(f, returns, found)
  local const = {}  -- slot -> { names, pc } of the constant last put there
  local calls = {}  -- slot -> pc of `x.route` loaded there (a method call)
  local pc = 1
  while true do
    local ins, m = funcbc(f, pc)
    if not ins then break end
    local op = band(ins, 0xff)
    local a = band(rshift(ins, 8), 0xff)
    local d = rshift(ins, 16)
    local ma = band(m, 7)
    local line = funcinfo(f, pc).currentline
    if op == KSTR then
      const[a], calls[a] = { { funck(f, -d - 1) }, pc }, nil
    elseif op == TDUP then
      const[a], calls[a] = { names_of(funck(f, -d - 1)), pc }, nil
    elseif op == TGETS and funck(f, -band(rshift(ins, 16), 0xff) - 1) == "route" then
      const[a], calls[a] = nil, pc
    elseif op == RET1 and returns and const[a] and const[a][1] then
      for _, n in ipairs(const[a][1]) do found(line, n) end
    elseif op == CALL and calls[a] then
      -- The arguments: constants put in the slots above the method since
      -- it was looked up (slot a+1.. hold self and the arguments).
      for s, c in pairs(const) do
        if s > a and c[2] > calls[a] and c[1] then
          for _, n in ipairs(c[1]) do found(line, n) end
        end
      end
      calls[a] = nil
    elseif ma == DST then
      const[a], calls[a] = nil, nil
    end
    if ma == BASE or ma == RBASE then
      for s in pairs(const) do
        if s >= a then const[s] = nil end
      end
      for s in pairs(calls) do
        if s > a then calls[s] = nil end
      end
    end
    pc = pc + 1
  end
  for n = -1, -1000000, -1 do
    local k = funck(f, n)
    if k == nil then break end
    if type(k) == "proto" then scan(k, false, found) end
  end
end

-- Returns a list of { line =, name = } for the constant route names of
-- `fn` (process when `is_process`, else process_batch), in line order.
function M.find(fn, is_process)
  local out, seen = {}, {}
  scan(fn, is_process, function(line, name)
    local key = line .. "\0" .. name
    if seen[key] then return end
    seen[key] = true
    out[#out + 1] = { line = line, name = name }
  end)
  table.sort(out, function(x, y)
    if x.line ~= y.line then return x.line < y.line end
    return x.name < y.name
  end)
  return out
end

return M
