-- Fluent Bit Lua filters (lugger.fluentbit): return codes, the record
-- table, splitting with lg_ffi_batch_insert (order, offsets, routes, the
-- records after the split), options, errors.
local H = require("helper")

local function fb(src, recs, opts, batch_opts)
  return H.run({ { src = src, compat = "fluent-bit", call = "cb", compat_opts = opts } },
               recs, { batch = batch_opts })
end

describe("a Fluent Bit filter", function()
  it("drops on -1, keeps on 0, replaces on 1 and 2", function()
    local b, failed = fb([[
      function cb(tag, ts, r)
        if r.log == "drop" then return -1, ts, r end
        if r.log == "zero" then r.x = 1; return 0, ts, r end
        if r.log == "one" then return 1, 10.5, { log = "new", tag = tag } end
        return 2, 99, { log = r.log, path = r["log.file.path"] }
      end]], { { body = "drop" }, { body = "zero" }, { body = "one" },
               { body = "two", time_ns = 5 } },
      '{"tag":"k8s"}', { meta = { ["log.file.path"] = "/a.log" } })
    assert.equals(0, failed)
    assert.is_true(H.dropped(b, 0))
    assert.same({ time = "1970-01-01T00:00:00.000000000Z", body = "zero",
                  ["log.file.path"] = "/a.log" }, H.out(b, 1))
    -- lugger's metadata is not in the table, and stays on the record.
    assert.same({ time = "1970-01-01T00:00:10.500000000Z", body = "new", tag = "k8s",
                  ["log.file.path"] = "/a.log" }, H.out(b, 2))
    assert.same({ time = "1970-01-01T00:00:00.000000005Z", body = "two",
                  ["log.file.path"] = "/a.log" }, H.out(b, 3))
    assert.is_nil(H.out(b, 3).path) -- not in the table
  end)

  it("splits a record in place, sharing its offsets and routes", function()
    local b, failed = fb([[
      function cb(tag, ts, r)
        if r.log == "ab" then return 2, ts, { { log = "a" }, { log = "b", k = "v" } } end
        return 0, ts, r
      end]], { { body = "x", offset = 0, end_offset = 2 },
               { body = "ab", offset = 2, end_offset = 5, routes = 6 },
               { body = "y", offset = 5, end_offset = 7 } })
    assert.equals(0, failed)
    assert.equals(4, b.n)
    local bodies = {}
    for i = 0, 3 do bodies[i + 1] = H.out(b, i).body end
    assert.same({ "x", "a", "b", "y" }, bodies)
    assert.equals(2, tonumber(b.recs[2].offset))
    assert.equals(5, tonumber(b.recs[2].end_offset))
    assert.same({ 1, 2 }, H.routes(b, 2))
    assert.equals("v", H.out(b, 2).k)
    assert.equals(7, tonumber(b.recs[3].end_offset))
  end)

  it("runs later scripts of the pipeline over the split records", function()
    local rt = H.runtime({
      { src = "function cb(t, ts, r) return 2, ts, { {log='1'}, {log='2'}, {log='3'} } end",
        compat = "fluent-bit", call = "cb" },
      "function process(rec) rec.seen = true end" })
    local b = H.batch.new({ "x", "y" })
    assert.equals(0, rt.run(0, b))
    assert.equals(6, b.n)
    for i = 0, 5 do assert.is_true(H.out(b, i).seen) end
  end)

  it("applies time_as_table, type_int_key, type_array_key, enable_flb_null", function()
    local b, failed = fb([[
      function cb(tag, ts, r)
        r.sec, r.nsec = ts.sec, ts.nsec
        r.n = "42"; r.m = 7.9; r.list = {}; r.wasnull = (r.z == flb_null)
        return 1, { sec = ts.sec + 1, nsec = 5 }, r
      end]], { { body = "a", time_ns = 2000000003 } },
      '{"time_as_table":"true","type_int_key":"n m","type_array_key":"list","enable_flb_null":true}')
    assert.equals(0, failed)
    local o, line = H.out(b, 0)
    assert.equals("1970-01-01T00:00:03.000000005Z", o.time)
    assert.equals(2, o.sec); assert.equals(3, o.nsec)
    -- type_int_key truncates numbers only (Fluent Bit checks LUA_TNUMBER).
    assert.equals("42", o.n); assert.equals(7, o.m)
    assert.truthy(line:find('"list":[]', 1, true))
    assert.is_false(o.wasnull) -- no z at all
  end)

  it("fails one record on an error or a bad code and goes on", function()
    local b, failed = fb([[
      function cb(tag, ts, r)
        if r.log == "err" then error("boom") end
        if r.log == "bad" then return "x", ts, r end
        return 0, ts, r
      end]], { "ok", "err", "bad", "ok2" })
    assert.equals(2, failed)
    assert.is_true(H.failed(b, 1)); assert.is_true(H.failed(b, 2))
    assert.truthy(H.error(b, 1):find(":2: boom", 1, true))
    assert.truthy(H.error(b, 2):find("as the code", 1, true))
    assert.is_false(H.failed(b, 3))
  end)

  it("refuses a missing call function and unknown options", function()
    local _, ok, err = H.runtime({ { src = "x = 1", compat = "fluent-bit", call = "cb" } })
    assert.is_nil(ok); assert.truthy(err:find("no such function", 1, true))
    _, ok, err = H.runtime({ { src = "function cb() end", compat = "fluent-bit",
                               call = "cb", compat_opts = '{"nope":1}' } })
    assert.is_nil(ok); assert.truthy(err:find("unknown Fluent Bit option 'nope'", 1, true))
  end)
end)
