-- The record API of user scripts: reading builtins and metadata, typed
-- field writes, removal, methods, ids, time.
local H = require("helper")

local META = {
  ["log.file.path"] = "/var/log/pods/default_web-1_0f/nginx/0.log",
  ["k8s.pod.name"] = "web-1",
  ["k8s.container.restart_count"] = 3,
}

-- Runs a script over one record and returns the decoded output, the raw
-- line, the batch and the failed count.
local function one(src, rec, opts)
  opts = opts or {}
  opts.batch = opts.batch or { meta = META, fingerprint = 0x1234abcd }
  local b, failed = H.run(src, { rec or { body = "GET /x 200", offset = 100,
    time_ns = 1714564800123456789LL, flags = 0x2 } }, opts)
  if failed > 0 then error(H.error(b, 0)) end
  local out, line = H.out(b, 0)
  return out, line, b, failed
end

describe("a record", function()
  it("reads body, time, log.iostream and metadata", function()
    local out = one([[
      function process(rec)
        rec.got_body = rec.body
        rec.got_time = rec.time
        rec.got_stream = rec["log.iostream"]
        rec.got_pod = rec["k8s.pod.name"]
        rec.got_path = rec["log.file.path"]
        rec.got_restarts = rec["k8s.container.restart_count"]
        rec.got_type = type(rec["k8s.container.restart_count"])
        rec.got_missing = rec.nope == nil
      end]])
    assert.equals("GET /x 200", out.got_body)
    assert.equals("2024-05-01T12:00:00.123456789Z", out.got_time)
    assert.equals("stdout", out.got_stream)
    assert.equals("web-1", out.got_pod)
    assert.equals("/var/log/pods/default_web-1_0f/nginx/0.log", out.got_path)
    assert.equals(3, out.got_restarts)
    assert.equals("number", out.got_type)
    assert.is_true(out.got_missing)
  end)

  it("reads stderr and no stream when the format has none", function()
    local b = H.run([[
      function process(rec) rec.s = rec["log.iostream"] or "none" end]],
      { { body = "a", flags = 0x3 }, { body = "b", flags = 0 } })
    assert.equals("stderr", H.out(b, 0).s)
    assert.equals("none", H.out(b, 1).s)
    assert.is_nil(H.out(b, 1)["log.iostream"])
  end)

  it("writes typed fields: strings, integers, floats, booleans, null", function()
    local out, line = one([[
      function process(rec)
        rec.s = "text"
        rec.i = 200
        rec.neg = -17
        rec.f = 1.5
        rec.t = true
        rec.fl = false
        rec.n = lugger.null
        rec.big = 2^60
        rec.inf = math.huge
      end]])
    assert.equals("text", out.s)
    assert.equals(200, out.i)
    assert.equals(-17, out.neg)
    assert.equals(1.5, out.f)
    assert.is_true(out.t)
    assert.is_false(out.fl)
    assert.equals(H.json.null, out.n)
    -- integers are written as integers, exactly, also beyond 2^53
    assert.truthy(line:find('"i":200,', 1, true))
    assert.truthy(line:find('"big":1152921504606846976,', 1, true))
    assert.truthy(line:find('"f":1.5,', 1, true))
    assert.truthy(line:find('"inf":null', 1, true))
  end)

  it("reads typed fields back with their Lua types", function()
    local out = one([[
      function process(rec)
        rec.i, rec.f, rec.t, rec.n, rec.s = 7, 0.25, true, lugger.null, "x"
        rec.types = type(rec.i) .. type(rec.f) .. type(rec.t) .. type(rec.s)
        rec.null_ok = rec.n == lugger.null
        rec.sum = rec.i + rec.f
      end]])
    assert.equals("numbernumberbooleanstring", out.types)
    assert.is_true(out.null_ok)
    assert.equals(7.25, out.sum)
  end)

  it("keeps tables as JSON: arrays, maps, nesting, empty arrays", function()
    local out, line = one([[
      function process(rec)
        rec.arr = { 1, "two", true }
        rec.map = { b = 1, a = { x = lugger.null } }
        rec.empty_map = {}
        rec.empty_arr = lugger.array()
        local back = rec.map
        rec.back_a_x = back.a.x == lugger.null
        rec.arr_len = #rec.arr
        local copy = rec.arr
        copy[4] = "four"        -- a copy: the field is unchanged ...
        rec.len_after = #rec.arr
        rec.arr2 = copy         -- ... until it is assigned back
      end]])
    assert.same({ 1, "two", true }, out.arr)
    assert.truthy(line:find('"map":{"a":{"x":null},"b":1}', 1, true))
    assert.truthy(line:find('"empty_map":{}', 1, true))
    assert.truthy(line:find('"empty_arr":[]', 1, true))
    assert.is_true(out.back_a_x)
    assert.equals(3, out.arr_len)
    assert.equals(3, out.len_after)
    assert.same({ 1, "two", true, "four" }, out.arr2)
  end)

  it("reads an integer beyond 2^53 as the nearest double", function()
    local _, line = one([[
      function process(rec)
        rec.big = 2^53 + 2
        rec.copy = rec.big   -- 2^53 + 2 is a double exactly
        rec.t = type(rec.big)
      end]])
    assert.truthy(line:find('"big":9007199254740994,"copy":9007199254740994,"t":"number"', 1, true))
  end)

  it("reads integer metadata beyond 2^53 as the nearest double", function()
    local out = one([[function process(rec) rec.v = rec.huge end]], nil,
      { batch = { meta = { huge = 9007199254740993 } } })
    assert.equals(2^53, out.v)
  end)

  it("replaces an existing field in place and keeps its position", function()
    local _, line = one([[
      function process(rec)
        rec.a = 1; rec.b = 2; rec.a = "one"
      end]])
    assert.truthy(line:find('"a":"one","b":2}', 1, true))
  end)

  it("removes fields, the body and metadata with nil", function()
    local out = one([[
      function process(rec)
        rec.x = 1
        rec.x = nil
        rec.body = nil
        rec["k8s.pod.name"] = nil
        rec.never_set = nil
        rec.body_after = rec.body == nil
      end]])
    assert.is_nil(out.x)
    assert.is_nil(out.body)
    assert.is_nil(out["k8s.pod.name"])
    assert.is_true(out.body_after)
    assert.equals("/var/log/pods/default_web-1_0f/nginx/0.log", out["log.file.path"])
  end)

  it("replaces the body and metadata values in their place", function()
    local _, line = one([[
      function process(rec)
        rec.body = "new body"
        rec["k8s.pod.name"] = "other"
        rec.got = rec.body .. "|" .. rec["k8s.pod.name"]
      end]])
    assert.truthy(line:find('"body":"new body"', 1, true))
    assert.truthy(line:find('"k8s.pod.name":"other"', 1, true))
    assert.truthy(line:find('"got":"new body|other"', 1, true))
  end)

  it("sets time from RFC 3339 text or nanoseconds", function()
    local b = H.run([[
      function process(rec)
        if rec.body == "text" then rec.time = "2024-05-01T14:00:00.5+02:00"
        elseif rec.body == "ns" then rec.time = 1714564800 * 1e9 + 512
        elseif rec.body == "gone" then rec.time = nil
        elseif rec.body == "back" then rec.time = nil; rec.time = 1000000000 end
        rec.t = rec.time
      end]], { "text", "ns", "gone", "back" })
    assert.equals("2024-05-01T12:00:00.500000000Z", H.out(b, 0).time)
    assert.equals("2024-05-01T12:00:00.500000000Z", H.out(b, 0).t)
    assert.equals("2024-05-01T12:00:00.000000512Z", H.out(b, 1).time)
    assert.is_nil(H.out(b, 2).time)
    assert.equals("1970-01-01T00:00:01.000000000Z", H.out(b, 3).time)
    assert.truthy(H.line(b, 3):find('^{"time":"1970%-01%-01T00:00:01'))
  end)

  it("fails a record that sets a time that is not one", function()
    local b, failed = H.run([[
      function process(rec) rec.time = "yesterday" end]], { "a" })
    assert.equals(1, failed)
    assert.truthy(H.error(b, 0):find("time: 'yesterday' is not an RFC 3339 time", 1, true))
  end)

  it("has methods that win over fields, and get/set reach any field", function()
    local out = one([[
      function process(rec)
        rec:set("drop", "a field named drop")
        rec.route = "a field named route"
        rec.kind = type(rec.drop)
        rec.via_get = rec:get("drop")
        rec.via_get2 = rec:get("route")
        rec:set("n", 5)
        rec.n2 = rec:get("n") * 2
      end]])
    assert.equals("a field named drop", out.drop)
    assert.equals("a field named route", out.route)
    assert.equals("function", out.kind)
    assert.equals("a field named drop", out.via_get)
    assert.equals("a field named route", out.via_get2)
    assert.equals(10, out.n2)
  end)

  it("has a stable id: fingerprint and offset", function()
    local out = one([[function process(rec) rec.rid = rec:id() end]])
    assert.equals("000000001234abcd:100", out.rid)
  end)

  it("fails the record on values that cannot be stored", function()
    local b, failed = H.run([[
      function process(rec)
        if rec.body == "f" then rec.x = print
        elseif rec.body == "k" then rec[{}] = 1
        elseif rec.body == "c" then local t = {} t.t = t rec.x = t end
      end]], { "f", "k", "c", "ok" })
    assert.equals(3, failed)
    assert.truthy(H.error(b, 0):find("field 'x': cannot store a function", 1, true))
    assert.truthy(H.error(b, 1):find("field names are strings", 1, true))
    assert.truthy(H.error(b, 2):find("nested too deeply", 1, true))
    assert.is_false(H.failed(b, 3))
  end)

  it("reads fields correctly after the batch's arena moved", function()
    local out = one([[
      function process(rec)
        rec.first = "keep me"
        local big = string.rep("x", 4096)
        for i = 1, 300 do rec["f" .. i] = big end   -- grows the arena by realloc
        rec.after = rec.first .. "|" .. #rec.f300 .. "|" .. rec.body
      end]])
    assert.equals("keep me|4096|GET /x 200", out.after)
  end)

  it("is protected: its metatable cannot be read or replaced", function()
    local out = one([[
      function process(rec)
        rec.mt = tostring(getmetatable(rec))
        rec.set_ok = pcall(setmetatable, rec, {})
        rec.str = tostring(rec)
      end]])
    assert.equals("lugger.record", out.mt)
    assert.is_false(out.set_ok)
    assert.equals("lugger.record", out.str)
  end)
end)
