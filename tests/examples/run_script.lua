-- run_script.lua - runs a user script over a sample log the way
-- `lugger test SCRIPT SAMPLE --format line` does, without the collector:
-- prints each kept record as a JSON line (no `time`; with "@routes" when
-- the script routed it). For checking golden files in a plain LuaJIT.
--
-- Usage:
--   luajit     tests/examples/run_script.lua SCRIPT SAMPLE
--   lugger lua tests/examples/run_script.lua SCRIPT SAMPLE
-- Exits 1 when the script fails to load or raises on a record.

local common = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local encode
function encode(v)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return ("%d"):format(v) end
    return ("%.17g"):format(v)
  end
  if t == "table" then
    local parts = {}
    for _, x in ipairs(v) do parts[#parts + 1] = encode(x) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  error("cannot encode a " .. t, 0)
end

if #arg ~= 2 then
  io.stderr:write("usage: run_script.lua SCRIPT SAMPLE\n")
  os.exit(2)
end
local ok, env = pcall(common.load_script, arg[1])
if not ok then
  io.stderr:write("run_script: " .. tostring(env) .. "\n")
  os.exit(1)
end
for i, line in ipairs(common.split_lines(common.read_file(arg[2]))) do
  local okp, st = pcall(common.process, env, line)
  if not okp then
    io.stderr:write(("run_script: %s line %d: %s\n"):format(arg[2], i, tostring(st)))
    os.exit(1)
  end
  if not st.dropped then
    local keys = {}
    for k in pairs(st.fields) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = quote(k) .. ":" .. encode(st.fields[k]) end
    if st.routes then parts[#parts + 1] = '"@routes":' .. encode(st.routes) end
    io.write("{", table.concat(parts, ","), "}\n")
  end
end
