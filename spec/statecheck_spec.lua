-- lugger.statecheck: the writes to module-level state a script's process
-- makes, as `lugger check` reports them on a stateless pipeline.
local H = require("helper")

local function writes(src)
  local rt, ok, err = H.runtime(src)
  assert(ok, err)
  local text = rt.state_writes(0)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    out[#out + 1] = line:gsub("^[^:]*:", "")
  end
  return out
end

describe("lugger.statecheck", function()
  it("finds module-level locals, globals and module tables process writes", function()
    assert.same({
      "5: stores into the module-level table 'seen'",
      "6: assigns the global 'last_body'",
      "9: assigns the module-level local 'n'",
      "15: assigns the module-level local 'n'",
    }, writes([[
local n = 0
local seen = {}
local KEYS = { "a", "b" }
local MAX = 10
local function remember(k) seen[k] = true end
function helper(rec) last_body = rec.body end
function init(p) n = tonumber(p.start) or 0; cfg = p; seen.x = 1 end
function process(rec)
  n = n + 1
  rec.n = math.min(n, MAX)
  remember(rec.body)
  helper(rec)
  for _, k in ipairs(KEYS) do rec[k] = 1 end
  local cache = {}; cache[1] = 2
  local f = function() n = n + 2 end
  f()
  local m = 0
  local g = function() m = m + 1 end
  g()
end]]))
  end)

  it("finds nothing in a script that keeps no state", function()
    assert.same({}, writes([[
local RE = lugger.regex("(?<a>\\w+)")
local LEVELS = { debug = true }
local function norm(s) return s:lower() end
function process(rec)
  rec:parse_regex(RE)
  local t = {}
  t.x = norm(rec.body)
  rec.t = t
  if LEVELS[rec.a] then return false end
end]]))
  end)

  it("looks at process_batch too", function()
    assert.same({ "4: assigns the module-level local 'prev'" }, writes([[
local prev
function process_batch(batch)
  for rec in batch:records() do
    rec.prev, prev = prev, rec.body
  end
end]]))
  end)
end)
