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

  it("fails one record on an error and goes on; reads codes as Fluent Bit", function()
    local b, failed = fb([[
      function cb(tag, ts, r)
        if r.log == "err" then error("boom") end
        if r.log == "bad" then return "x", ts, { log = "changed" } end
        if r.log == "seven" then return 7, ts, { log = "changed" } end
        if r.log == "text" then return "-1", ts, r end
        if r.log == "float" then return 2.9, ts, { log = "two" } end
        return nil
      end]], { "ok", "err", "bad", "seven", "text", "float" })
    assert.equals(1, failed)
    assert.is_true(H.failed(b, 1))
    assert.truthy(H.error(b, 1):find(":2: boom", 1, true))
    assert.equals("ok", H.out(b, 0).body)     -- nil code: 0, kept
    assert.equals("bad", H.out(b, 2).body)    -- "x": 0, kept unchanged
    assert.equals("seven", H.out(b, 3).body)  -- unknown code: kept, logged
    assert.is_true(H.dropped(b, 4))           -- "-1" is -1
    assert.equals("two", H.out(b, 5).body)    -- 2.9 is 2
  end)

  it("takes code 1's timestamp as Fluent Bit does", function()
    local b = fb([[
      function cb(tag, ts, r)
        if r.log == "text" then return 1, "12.5", r end
        if r.log == "table" then return 1, { sec = 3 }, r end
        return 1, nil, r
      end]], { { body = "text", time_ns = 7 }, { body = "table", time_ns = 7 },
               { body = "nil", time_ns = 7 } })
    assert.equals("1970-01-01T00:00:12.500000000Z", H.out(b, 0).time)
    assert.equals("1970-01-01T00:00:00.000000000Z", H.out(b, 1).time)
    assert.equals("1970-01-01T00:00:00.000000000Z", H.out(b, 2).time)
    b = fb([[
      function cb(tag, ts, r)
        if r.log == "num" then return 1, 99, r end
        return 1, { sec = 3, nsec = 2.7 }, r
      end]], { { body = "num", time_ns = 7 }, { body = "table", time_ns = 7 } },
      '{"time_as_table":true}')
    assert.equals("1970-01-01T00:00:00.000000007Z", H.out(b, 0).time) -- kept
    assert.equals("1970-01-01T00:00:03.000000002Z", H.out(b, 1).time)
  end)

  it("refuses a missing call function and unknown options", function()
    local _, ok, err = H.runtime({ { src = "x = 1", compat = "fluent-bit", call = "cb" } })
    assert.is_nil(ok); assert.truthy(err:find("no such function", 1, true))
    _, ok, err = H.runtime({ { src = "function cb() end", compat = "fluent-bit",
                               call = "cb", compat_opts = '{"nope":1}' } })
    assert.is_nil(ok); assert.truthy(err:find("unknown Fluent Bit option 'nope'", 1, true))
  end)
end)

describe("a Fluent Bit filter's tag", function()
  it("expands '*' to the record's file path with dots, as tail's Tag kube.* does", function()
    local b, failed = fb([[
      function cb(tag, ts, r)
        local pod, ns, c, id =
          tag:match("^kube%.var%.log%.containers%.([^_]+)_([^_]+)_(.+)%-(%x+)%.log$")
        r.pod, r.ns, r.c, r.id = pod, ns, c, id
        return 2, ts, r
      end]], { "x" }, '{"tag":"kube.*"}',
      { meta = { ["log.file.path"] = "/var/log/containers/web-1_shop_nginx-0a1b2c.log" } })
    assert.equals(0, failed)
    local o = H.out(b, 0)
    assert.same({ "web-1", "shop", "nginx", "0a1b2c" }, { o.pod, o.ns, o.c, o.id })
  end)
end)

describe("a Fluent Bit filter's record table", function()
  it("holds log, stream, time and _p by format, and the kubernetes map", function()
    local b, failed = fb([[
      function cb(tag, ts, r)
        local keys = {}
        for k in pairs(r) do keys[#keys + 1] = k end
        table.sort(keys)
        return 2, ts, { seen = table.concat(keys, " "), log = r.log, k = r.kubernetes,
                        t = r.time }
      end]], {
        { body = "cri", time_ns = 1714564800123456000, flags = H.batch.HAS_STREAM + H.batch.FMT_CRI },
        { body = "dock", time_ns = 1714564800000000000,
          flags = H.batch.HAS_STREAM + H.batch.STDERR + H.batch.FMT_DOCKER },
        { body = "plain" } }, nil,
      { meta = { ["log.file.path"] = "/var/log/pods/shop_web-1_u1/nginx/0.log",
                 ["k8s.pod.name"] = "web-1", ["k8s.namespace.name"] = "shop",
                 ["k8s.pod.uid"] = "u1", ["k8s.container.name"] = "nginx",
                 ["k8s.node.name"] = "node-a", ["container.id"] = "cid",
                 ["container.image.name"] = "nginx", ["container.image.tag"] = "1.25",
                 ["k8s.pod.label.app"] = "web", ["k8s.pod.annotation.team"] = "a",
                 ["k8s.container.restart_count"] = 0 },
        hidden = { image = "nginx:1.25", image_id = "docker-pullable://nginx@sha256:ab" } })
    assert.equals(0, failed)
    local kube = { pod_name = "web-1", namespace_name = "shop", pod_id = "u1",
                   container_name = "nginx", host = "node-a", docker_id = "cid",
                   container_image = "nginx:1.25", labels = { app = "web" },
                   container_hash = "nginx@sha256:ab",
                   annotations = { team = "a" } }
    local o = H.out(b, 0)
    assert.equals("_p kubernetes log stream time", o.seen)
    assert.equals("2024-05-01T12:00:00.123456Z", o.t)
    assert.same(kube, o.k)
    assert.equals("web-1", o["k8s.pod.name"])
    o = H.out(b, 1)
    assert.equals("kubernetes log stream time", o.seen)
    assert.equals("dock", o.body) -- the "\n" the filter saw is not kept
    assert.equals("2024-05-01T12:00:00Z", o.t)
    assert.equals("stderr", o["log.iostream"])
    assert.equals("kubernetes log", H.out(b, 2).seen)
  end)
end)
