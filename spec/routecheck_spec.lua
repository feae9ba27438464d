-- lugger.routecheck: constant route names a script uses that are no
-- output, as `lugger check` reports them (rt.unknown_routes).
local H = require("helper")

local function unknown(src, outputs)
  local rt, ok, err = H.runtime(src, { outputs = outputs or { "out", "errors" } })
  assert(ok, err)
  local out = {}
  for line in rt.unknown_routes(0):gmatch("[^\n]+") do
    out[#out + 1] = line:gsub("^[^:]*:", "")
  end
  return out
end

describe("lugger.routecheck", function()
  it("finds returned names, lists and rec:route arguments that are no output", function()
    assert.same({
      "3: routes to 'errros', which is not an output (outputs: out, errors)",
      "4: routes to 'audit', which is not an output (outputs: out, errors)",
      "5: routes to 'nope', which is not an output (outputs: out, errors)",
      "6: routes to 'zz', which is not an output (outputs: out, errors)",
    }, unknown([[
local function pick(x) return x end
function process(rec)
  if rec.a then return "errros" end
  if rec.b then return { "out", "audit" } end
  if rec.c then rec:route("errors", "nope") return end
  if rec.d then rec:route{ "out", "zz" } return end
  if rec.e then rec:route(pick("inner")) return end
  if rec.f then return "errors" end
  if rec.g then return rec.level end
  local s = "not a route"
  rec.s = s
  return true
end]]))
  end)

  it("looks at rec:route in process_batch and its closures", function()
    assert.same({ "4: routes to 'eror', which is not an output (outputs: out, errors)" },
      unknown([[
function process_batch(batch)
  for rec in batch:records() do
    local f = function() rec:route("errors") end
    if rec.x then rec:route("eror") else f() end
  end
end]]))
  end)

  it("finds nothing when every constant route is an output", function()
    assert.same({}, unknown([[
function process(rec)
  if rec.x then rec:route("out", "errors") end
  return rec.y and "errors" or nil
end]]))
  end)
end)
