-- The driver: keep / drop / route by return value and by methods, batch
-- mode, several scripts, init(params), per-record error isolation, use of
-- a record after its batch.
local H = require("helper")
local batch = H.batch

describe("process(rec)", function()
  it("keeps on nil and true, drops on false", function()
    local b, failed = H.run([[
      function process(rec)
        if rec.body == "drop" then return false end
        if rec.body == "true" then return true end
      end]], { "keep", "drop", "true" })
    assert.equals(0, failed)
    assert.is_false(H.dropped(b, 0))
    assert.is_true(H.dropped(b, 1))
    assert.is_false(H.dropped(b, 2))
    assert.is_false(H.routed(b, 0))
    assert.same({ 0 }, H.routes(b, 0))
  end)

  it("routes to a name or a list of names instead of the defaults", function()
    local b, failed = H.run([[
      function process(rec)
        if rec.body == "one" then return "errors" end
        if rec.body == "two" then return { "errors", "audit" } end
        if rec.body == "none" then return {} end
      end]], { "one", "two", "none", "keep" })
    assert.equals(0, failed)
    assert.same({ 1 }, H.routes(b, 0))
    assert.same({ 1, 2 }, H.routes(b, 1))
    assert.same({}, H.routes(b, 2))
    assert.is_true(H.routed(b, 2))
    assert.same({ 0 }, H.routes(b, 3))
    assert.is_false(H.routed(b, 3))
  end)

  it("fails the record for an unknown output name or a bad return value", function()
    local b, failed, _, paths = H.run([[
      function process(rec)
        if rec.body == "unknown" then return "nowhere" end
        if rec.body == "number" then return 42 end
        if rec.body == "list" then return { "errors", 7 } end
      end]], { "unknown", "number", "list", "fine" })
    assert.equals(3, failed)
    assert.truthy(H.error(b, 0):find(paths[1] .. ":1: unknown output 'nowhere'", 1, true))
    assert.truthy(H.error(b, 1):find("process returned a number", 1, true))
    assert.truthy(H.error(b, 2):find("output names are strings", 1, true))
    assert.is_false(H.failed(b, 3))
  end)

  it("supports rec:drop() and rec:route() too", function()
    local b = H.run([[
      function process(rec)
        if rec.body == "d" then rec:drop() end
        if rec.body == "r" then rec:route("audit", "errors") end
        if rec.body == "t" then rec:route({ "audit" }) end
      end]], { "d", "r", "t" })
    assert.is_true(H.dropped(b, 0))
    assert.same({ 1, 2 }, H.routes(b, 1))
    assert.same({ 2 }, H.routes(b, 2))
  end)

  it("registers unknown names with dynamic routes", function()
    local b, failed, rt = H.run([[
      function process(rec) return rec.body end]], { "x", "y", "x" },
      { outputs = { "default" }, dynamic = true })
    assert.equals(0, failed)
    assert.same({ 1 }, H.routes(b, 0))
    assert.same({ 2 }, H.routes(b, 1))
    assert.same({ 1 }, H.routes(b, 2))
    assert.equals("y", rt.output_name(2))
  end)
end)

describe("process_batch(batch)", function()
  it("iterates over records in order and drops and routes them", function()
    local b, failed = H.run([[
      local seen = {}
      function process_batch(batch)
        for rec in batch:records() do
          seen[#seen + 1] = rec.body
          if rec.body:find("DEBUG", 1, true) then rec:drop() end
          if rec.body:find("ERROR", 1, true) then rec:route("errors") end
          rec.n = #seen
        end
      end]], { "INFO a", "DEBUG b", "ERROR c", "INFO d" })
    assert.equals(0, failed)
    assert.is_true(H.dropped(b, 1))
    assert.same({ 1 }, H.routes(b, 2))
    assert.equals(4, H.out(b, 3).n)
  end)

  it("fails the last yielded record and resumes after it", function()
    local b, failed, _, paths = H.run([[
      local calls = 0
      function process_batch(batch)
        calls = calls + 1
        for rec in batch:records() do
          rec.call = calls
          if rec.body == "bad" then error("bad record") end
        end
      end]], { "a", "bad", "c", "bad", "e" })
    assert.equals(2, failed)
    assert.equals(1, H.out(b, 0).call)
    assert.truthy(H.error(b, 1):find(paths[1] .. ":6: bad record", 1, true))
    assert.equals(2, H.out(b, 2).call)
    assert.is_true(H.failed(b, 3))
    assert.equals(3, H.out(b, 4).call)
  end)

  it("fails every remaining record when it fails before yielding one", function()
    local b, failed = H.run([[
      function process_batch(batch) error("setup failed") end]], { "a", "b" })
    assert.equals(2, failed)
    assert.truthy(H.error(b, 0):find("setup failed", 1, true))
    assert.truthy(H.error(b, 1):find("setup failed", 1, true))
  end)
end)

describe("several scripts", function()
  it("run in order; a record dropped by one is not seen by the next", function()
    local b, failed = H.run({
      [[function process(rec)
          rec.first = true
          if rec.body == "drop" then return false end
        end]],
      [[function process(rec)
          rec.second = rec.first
          if rec.body == "drop" then error("saw a dropped record") end
          if rec.body == "route" then return "audit" end
        end]],
    }, { "a", "drop", "route" })
    assert.equals(0, failed)
    assert.is_true(H.out(b, 0).second)
    assert.is_true(H.dropped(b, 1))
    assert.is_nil(H.out(b, 1).second)
    assert.same({ 2 }, H.routes(b, 2))
  end)

  it("have their own environments", function()
    local b = H.run({
      [[x = 1; string.custom = "one"; function process(rec) rec.a = x end]],
      [[function process(rec) rec.b = tostring(x) .. tostring(string.custom) end]],
    }, { "r" })
    local out = H.out(b, 0)
    assert.equals(1, out.a)
    assert.equals("nilnil", out.b)
  end)

  it("keep module-level state across batches", function()
    local rt = H.runtime([[
      local count = 0
      function process(rec) count = count + 1; rec.count = count end]])
    local b1 = batch.new({ "a", "b" })
    local b2 = batch.new({ "c" })
    rt.run(0, b1)
    rt.run(0, b2)
    assert.equals(3, H.out(b2, 0).count)
  end)
end)

describe("init(params)", function()
  it("receives the pipeline's params decoded from JSON", function()
    local b = H.run({ { src = [[
      local prefix, n, list
      function init(params)
        prefix, n, list = params.prefix, params.n, params.list
      end
      function process(rec) rec.p = prefix .. n .. #list end]],
      params = '{"prefix":"x","n":2,"list":[1,2,3]}' } }, { "a" })
    assert.equals("x23", H.out(b, 0).p)
  end)

  it("gets an empty table without params", function()
    local b = H.run([[
      local t
      function init(params) t = type(params) .. tostring(next(params)) end
      function process(rec) rec.t = t end]], { "a" })
    assert.equals("tablenil", H.out(b, 0).t)
  end)

  it("rejects params that are not JSON, with or without init", function()
    for _, src in ipairs({ "function process(rec) end",
                           "function init(p) end\nfunction process(rec) end" }) do
      local _, ok, err, paths = H.runtime({ { src = src, params = "{bad" } })
      assert.is_nil(ok)
      assert.equals(paths[1] .. ": params: ", err:sub(1, #paths[1] + 10))
    end
  end)

  it("reports errors in init, in the main chunk and in syntax with script and line", function()
    local _, ok, err, paths = H.runtime("function init() error('bad params') end\nfunction process() end")
    assert.is_nil(ok)
    assert.equals(paths[1] .. ":1: bad params", err)
    _, ok, err, paths = H.runtime("local x = 1\nx.y = 2")
    assert.is_nil(ok)
    assert.truthy(err:find(paths[1] .. ":2: attempt to index", 1, true))
    _, ok, err, paths = H.runtime("function process(rec)\n  if then\nend")
    assert.is_nil(ok)
    assert.truthy(err:find(paths[1] .. ":2:", 1, true))
    _, ok, err = H.runtime("x = 1")
    assert.is_nil(ok)
    assert.truthy(err:find("defines neither process", 1, true))
    _, ok, err = H.runtime("function process() end function process_batch() end")
    assert.is_nil(ok)
    assert.truthy(err:find("defines both", 1, true))
  end)

  it("leaves the old pipeline running when a new one fails to load", function()
    local rt = H.runtime("function process(rec) rec.v = 1 end")
    local ok, err = rt.add_pipeline(0, "spec", { { path = "broken.lua", src = "function process(" } })
    assert.is_nil(ok)
    assert.truthy(err:find("broken.lua:1:", 1, true))
    local b = batch.new({ "a" })
    rt.run(0, b)
    assert.equals(1, H.out(b, 0).v)
  end)
end)

describe("script errors", function()
  it("fail only that record, with script, line, file and offset", function()
    local b, failed, _, paths = H.run([[
      function process(rec)
        rec.seen = true
        if rec.body == "boom" then
          error("it broke")
        end
        if rec.body == "nil" then
          local t = nil
          return t.x
        end
      end]], { "ok", "boom", "ok", "nil", "ok" },
      { batch = { meta = { ["log.file.path"] = "/var/log/app.log" } } })
    assert.equals(2, failed)
    for _, i in ipairs({ 0, 2, 4 }) do
      assert.is_false(H.failed(b, i))
      assert.is_true(H.out(b, i).seen)
    end
    assert.equals(paths[1] .. ":4: it broke (file /var/log/app.log offset 3)", H.error(b, 1))
    assert.equals(paths[1] .. ":8: attempt to index local 't' (a nil value)" ..
                  " (file /var/log/app.log offset 11)", H.error(b, 3))
    assert.equals(paths[1] .. ":4: it broke (file /var/log/app.log offset 3)",
                  H.out(b, 1)["lugger.error"])
  end)

  it("name the script line even for errors without a position", function()
    local b, _, _, paths = H.run([[
      function process(rec)
        if rec.body == "0" then error("no position", 0) end
        if rec.body == "t" then error({ code = 1 }) end
        if rec.body == "lvl" then
          local function check(v) error("bad value", 2) end
          check(1)
        end
      end]], { "0", "t", "lvl" })
    assert.equals(paths[1] .. ":2: no position (offset 0)", H.error(b, 0))
    -- A table raised shows its contents (it once showed "table: 0x7f...").
    assert.equals(paths[1] .. ':3: error object {"code":1} (offset 2)', H.error(b, 1))
    assert.equals(paths[1] .. ":6: bad value (offset 4)", H.error(b, 2))
  end)

  it("in a second script fail the record after the first changed it", function()
    local b, failed, _, paths = H.run({
      "function process(rec) rec.a = 1 end",
      "function process(rec) if rec.body == 'x' then error('second') end rec.b = 2 end",
    }, { "x", "y" })
    assert.equals(1, failed)
    assert.truthy(H.error(b, 0):find(paths[2] .. ":1: second", 1, true))
    assert.equals(2, H.out(b, 1).b)
  end)

  it("are counted by the runtime", function()
    local rt = H.runtime("function process(rec) error('x') end")
    rt.run(0, batch.new({ "a", "b", "c" }))
    assert.equals(3, rt.errors)
  end)
end)

describe("a record kept past its batch", function()
  it("raises an error instead of touching the batch", function()
    local rt, ok, err = H.runtime([[
      local kept, kept_batch
      function process(rec)
        if kept then
          local ok, e = pcall(function() return kept.body end)
          rec.stale_read = e
          ok, e = pcall(function() kept.x = 1 end)
          rec.stale_write = e
          ok, e = pcall(function() kept:drop() end)
          rec.stale_method = e
          ok, e = pcall(function() return kept:get("body") end)
          rec.stale_get = e
        end
        kept = rec
      end]])
    assert.is_true(ok, err)
    local b1 = batch.new({ "first" })
    rt.run(0, b1)
    batch.destroy(b1) -- freed: a stale access would be a use after free
    local b2 = batch.new({ "second" })
    rt.run(0, b2)
    local out = H.out(b2, 0)
    for _, k in ipairs({ "stale_read", "stale_write", "stale_method", "stale_get" }) do
      assert.equals("record used after its batch is gone", out[k])
    end
  end)

  it("in batch mode too, for records and for the batch's iterator", function()
    local rt = H.runtime([[
      local kept, iter, kept_batch
      function process_batch(batch)
        if kept then
          for rec in batch:records() do
            rec.e1 = select(2, pcall(function() return kept.body end))
            rec.e2 = select(2, pcall(iter, kept_batch, nil))
            rec.e3 = select(2, pcall(function() return batch.records(kept_batch) end))
          end
        end
        iter = batch:records()
        kept = iter(batch, nil)
        kept_batch = batch
      end]])
    local b1 = batch.new({ "a" })
    rt.run(0, b1)
    local b2 = batch.new({ "b" })
    rt.run(0, b2)
    local out = H.out(b2, 0)
    assert.equals("record used after its batch is gone", out.e1)
    assert.equals("record used after its batch is gone", out.e2)
    assert.equals("record used after its batch is gone", out.e3)
  end)
end)

describe("a pipeline", function()
  it("without scripts or never added leaves the batch alone", function()
    local rt = H.runtime({})
    local b = batch.new({ "a" })
    assert.equals(0, rt.run(0, b))
    assert.equals(0, rt.run(5, b))
    assert.equals(0, b.recs[0].flags)
    assert.equals(0, b.nfields)
  end)

  it("runs over an empty batch", function()
    local b, failed = H.run("function process(rec) error('never') end", {})
    assert.equals(0, failed)
    assert.equals(0, b.n)
  end)
end)
