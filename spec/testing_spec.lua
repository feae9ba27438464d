-- lugger.testing (users' specs of their filters) and lugger.sample (sample
-- logs framed into batches through lg_ffi_sample_*), through the real C.
local testing = require("lugger.testing")
local sample = require("lugger.sample")
local batch = require("lugger.batch")
local json = require("lugger.json")

local PARSE = [[
function process(rec)
  local level, rest = rec.body:match("^(%u+) (.*)$")
  if not level then return end
  if level == "DEBUG" then return false end
  rec.level = level
  for k, v in rest:gmatch("(%w+)=(%S+)") do rec[k] = tonumber(v) or v end
  if level == "ERROR" then return { "errors", "audit" } end
  if level == "FAIL" then error("cannot parse " .. rest) end
end
]]

local function tmpfile(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

describe("lugger.testing", function()
  it("runs bodies and reports kept, dropped, failed records and routes", function()
    local f = assert(testing.load_string(PARSE, "parse.lua"))
    local res = f:run({ "INFO user=ann took=12", "DEBUG x=1", "ERROR code=500",
                        "FAIL here", "plain" })
    assert.equals(3, #res.kept)
    assert.equals("ann", res.kept[1].user)
    assert.equals(12, res.kept[1].took)
    assert.equals(500, res.kept[2].code)
    assert.same({ "default" }, res.routes[1])
    assert.same({ "errors", "audit" }, res.routes[2])
    assert.same({ "default" }, res.routes[3])
    assert.equals("plain", res.kept[3].body)
    assert.equals(1, #res.dropped)
    assert.equals("DEBUG x=1", res.dropped[1].body)
    assert.equals(1, #res.failed)
    assert.equals(1, #res.errors)
    assert.matches("^parse%.lua:8: .*cannot parse here", res.errors[1])
    assert.same({ "kept", "dropped", "kept", "failed", "kept" },
                { res.all[1].status, res.all[2].status, res.all[3].status,
                  res.all[4].status, res.all[5].status })
    assert.equals(res.errors[1], res.all[4].error)
    -- lines are the JSON that `lugger test` prints
    assert.same(res.kept[1], json.decode(res.lines[1]))
  end)

  it("takes records as tables: typed fields, time, stream and metadata keys", function()
    local f = assert(testing.load_string("function process(rec) rec.n = rec.count + 1 end", "t.lua"))
    local rec = f:run_one({ body = "hi", count = 41, time = "2024-05-01T12:00:00.5Z",
                            ["log.iostream"] = "stderr", ["k8s.pod.name"] = "web-1",
                            tags = { "a", "b" }, flag = true }).record
    assert.equals(42, rec.n)
    assert.equals("2024-05-01T12:00:00.500000000Z", rec.time)
    assert.equals("stderr", rec["log.iostream"])
    assert.equals("web-1", rec["k8s.pod.name"])
    assert.same({ "a", "b" }, rec.tags)
    assert.is_true(rec.flag)
  end)

  it("frames raw text in each format", function()
    local f = assert(testing.load_string("function process(rec) rec.len = #rec.body end", "t.lua"))
    local res = f:run_text("2024-05-01T12:00:01Z stderr P ERROR user=\n" ..
                           "2024-05-01T12:00:02Z stdout F other\n" ..
                           "2024-05-01T12:00:03Z stderr F eve\n", { format = "cri" })
    assert.equals(2, #res.kept)
    assert.equals("other", res.kept[1].body)
    assert.equals("ERROR user=eve", res.kept[2].body)
    assert.equals("2024-05-01T12:00:01.000000000Z", res.kept[2].time)
    assert.equals(14, res.kept[2].len)

    res = f:run_text('{"log":"hello\\n","stream":"stdout","time":"2024-05-01T12:00:00Z"}\n',
                     { format = "docker", path = "/var/log/x.log" })
    assert.equals("hello", res.kept[1].body)
    assert.equals("/var/log/x.log", res.kept[1]["log.file.path"])

    res = f:run_text("one\r\ntwo", { format = "line", now_ns = 1714564800000000000 })
    assert.same({ "one", "two" }, { res.kept[1].body, res.kept[2].body })
    assert.equals("2024-05-01T12:00:00.000000000Z", res.kept[1].time)

    assert.has_error(function() f:run_text("{}\nnot json\n", { format = "json", path = "s.jsonl" }) end,
                     "s.jsonl:2: invalid JSON at byte 1")
    assert.has_error(function() f:run_text("x", { format = "xml" }) end,
                     "unknown format 'xml' (line, cri, docker, json, auto)")
  end)

  it("reads sample files, whose path becomes log.file.path", function()
    local path = tmpfile("INFO a=1\nWARN b=2\n")
    local f = assert(testing.load_string(PARSE, "parse.lua"))
    local res = f:run_file(path, { format = "line" })
    os.remove(path)
    assert.equals(2, #res.kept)
    assert.equals(path, res.kept[2]["log.file.path"])
    assert.equals(2, res.kept[2].b)
    assert.has_error(function() f:run_file("/nonexistent/sample.log") end)
  end)

  it("runs the parsing helpers (tests/fixtures/scripts/helpers.lua)", function()
    local FIX = "tests/fixtures/scripts/"
    local f = assert(testing.load(FIX .. "helpers.lua"))
    local res = f:run_file(FIX .. "helpers.log", { format = "line" })
    assert.same({}, res.errors)
    assert.equals(6, #res.kept)
    local r = res.kept[1]
    assert.equals(200, r.status)
    assert.equals("alice", r.remote_user)
    assert.equals("2024-05-01T10:00:01.000000000Z", r.time)
    assert.matches('"req.id":18446744073709551615,', res.lines[2], 1, true)
    assert.equals(3.5, res.kept[2]["req.ms"])
    assert.equals('disk "almost" full', res.kept[3].msg)
    assert.equals("2024-05-01T12:00:03.250000000Z", res.kept[3].time)
    assert.equals("admin; ops", res.kept[4].role)
    assert.equals(42, res.kept[5].n)
    assert.equals("2024-05-01T12:00:05.000000000Z", res.kept[5].time)
    assert.equals(1714564806.789, res.kept[6].epoch_s)
    -- records as tables and bodies; an error in a helper names the line
    res = f:run({ { body = "kv: a: 1; b: 2", ["k8s.pod.name"] = "p" }, "json: [1]" })
    assert.equals("1", res.kept[1].a)
    assert.equals("p", res.kept[1]["k8s.pod.name"])
    assert.is_nil(res.kept[2].level)
    local bad = assert(testing.load_string("function process(rec)\n  rec:parse_kv(\"\", \"=\")\nend",
                                           "bad.lua"))
    res = bad:run({ "x" })
    assert.matches("^bad%.lua:2: rec:parse_kv: the separators are non%-empty strings", res.errors[1])
  end)

  it("passes params to init and reports load errors with script and line", function()
    local src = "local add\nfunction init(p) add = p.add end\nfunction process(rec) rec.x = add end\n"
    local f = assert(testing.load_string(src, "p.lua", { params = { add = 7 } }))
    assert.equals(7, f:run({ "a" }).kept[1].x)
    f = assert(testing.load_string(src, "p.lua", { params = '{"add":"s"}' }))
    assert.equals("s", f:run({ "a" }).kept[1].x)

    local g, err = testing.load_string("function process(rec)\n  if then end\nend\n", "bad.lua")
    assert.is_nil(g)
    assert.matches("^bad%.lua:2:", err)
    g, err = testing.load_string("function init() error('no way') end\nfunction process() end", "i.lua")
    assert.is_nil(g)
    assert.matches("^i%.lua:1: no way", err)
    g, err = testing.load("/nonexistent/f.lua")
    assert.is_nil(g)
    assert.equals("/nonexistent/f.lua: cannot read: No such file or directory", err)
  end)

  it("starts each load with fresh module state", function()
    local src = "local n = 0\nfunction process(rec) n = n + 1; rec.n = n end"
    local f = assert(testing.load_string(src, "n.lua"))
    assert.equals(2, f:run({ "a", "b" }).kept[2].n)
    assert.equals(3, f:run({ "c" }).kept[1].n) -- same filter: state kept
    f = assert(testing.load_string(src, "n.lua"))
    assert.equals(1, f:run({ "d" }).kept[1].n)
  end)

  it("runs scripts in the sandbox", function()
    local f = assert(testing.load_string("function process(rec) rec.x = io.open('/etc/passwd') end", "e.lua"))
    local res = f:run({ "a" })
    assert.equals(1, #res.failed)
    assert.matches("^e%.lua:1: ", res.errors[1])
  end)

  it("runs Fluent Bit filters unchanged", function()
    local src = [[
function cb(tag, ts, record)
  if record.log == "drop me" then return -1, ts, record end
  record.tag = tag
  record.log = record.log:upper()
  return 2, ts, record
end]]
    local f = assert(testing.load_string(src, "fb.lua", { compat = "fluent-bit", call = "cb",
                                                         tag = "kube.web" }))
    local res = f:run({ "hello", "drop me" })
    assert.equals(1, #res.kept)
    assert.equals("HELLO", res.kept[1].body)
    assert.equals("kube.web", res.kept[1].tag)
    assert.equals(1, #res.dropped)
    local g, err = testing.load_string(src, "fb.lua", { compat = "fluent-bit", call = "nope" })
    assert.is_nil(g)
    assert.matches("no such function", err)
  end)

  it("finds files next to the calling spec", function()
    assert.matches("spec/x%.lua$", testing.here("x.lua"))
  end)

  -- A stuck script fails its record after the time limit instead of
  -- hanging the spec; the next record goes on (it once hung for ever).
  describe("time limit", function()
    local SPIN = "function process(rec)\n" ..
                 "  if rec.body == \"spin\" then\n" ..
                 "    while true do end\n" ..
                 "  end\n" ..
                 "  rec.seen = true\n" ..
                 "end\n"

    it("fails the stuck record with the script and line, as run does (1000 ms)", function()
      local f = assert(testing.load_string(SPIN, "spin.lua"))
      local t0 = os.clock()
      local res = f:run({ "a", "spin", "b" })
      local took = os.clock() - t0
      assert.same({ "a", "b" }, { res.kept[1].body, res.kept[2].body })
      assert.is_true(res.kept[2].seen)
      assert.equals(1, #res.errors)
      assert.matches("^spin%.lua:3: script_timeout: exceeded the time limit of 1000 ms of "
                     .. "CPU time on this record", res.errors[1])
      assert.is_true(took >= 1.0 and took < 5, "took " .. took .. " s of CPU time")
    end)

    it("stops loops LuaJIT would compile, in pcall too, and per record", function()
      local jit_was = jit.status()
      local f = assert(testing.load_string(
        "function process(rec)\n" ..
        "  local i = 0\n" ..
        "  if rec.body == \"p\" then pcall(function() while true do i = i + 1 end end) end\n" ..
        "  while rec.body == \"j\" do i = i + 1 end\n" ..
        "end\n", "loop.lua", { timeout_ms = 100 }))
      local res = f:run({ "j", "ok", "p", "j" })
      assert.equals(1, #res.kept)
      assert.equals(3, #res.errors)
      assert.matches("^loop%.lua:4: script_timeout: exceeded the time limit of 100 ms", res.errors[1])
      assert.matches("^loop%.lua:3: script_timeout: ", res.errors[2])
      assert.matches("^loop%.lua:4: script_timeout: ", res.errors[3])
      assert.equals(jit_was, jit.status())
      assert.is_nil(debug.gethook())
    end)

    it("gives each record its own budget", function()
      -- 12 records of ~60 ms each: 0.72 s in all, none past 150 ms
      local f = assert(testing.load_string(
        "function process(rec)\n" ..
        "  local t = os.clock()\n" ..
        "  while os.clock() - t < 0.06 do end\n" ..
        "end\n", "slow.lua", { timeout_ms = 150 }))
      local bodies = {}
      for k = 1, 12 do bodies[k] = tostring(k) end
      local res = f:run(bodies)
      assert.same({}, res.errors)
      assert.equals(12, #res.kept)
    end)

    it("stops a stuck init and a stuck process_batch", function()
      local f, err = testing.load_string("while true do end\nfunction process() end\n",
                                         "init.lua", { timeout_ms = 100 })
      assert.is_nil(f)
      assert.matches("^init%.lua:1: script_timeout: exceeded the time limit of 100 ms of "
                     .. "CPU time loading the script", err)
      f = assert(testing.load_string(
        "function process_batch(b)\n  while true do end\nend\n", "batch.lua",
        { timeout_ms = 100 }))
      local res = f:run({ "a", "b" })
      assert.equals(2, #res.failed)
      assert.matches("^batch%.lua:2: script_timeout: ", res.errors[1])
    end)

    it("puts back a debug hook set before", function()
      local f = assert(testing.load_string("function process(rec) rec.x = 1 end", "x.lua"))
      local calls = 0
      local function mine() calls = calls + 1 end
      debug.sethook(mine, "", 1000000)
      local res = f:run({ "a" })
      local h, mask, count = debug.gethook()
      debug.sethook()
      assert.equals(mine, h)
      assert.same({ "", 1000000 }, { mask, count })
      assert.equals(1, res.kept[1].x)
    end)

    it("can be turned off, and refuses a bad value", function()
      local f = assert(testing.load_string("function process(rec) rec.x = 1 end", "x.lua",
                                           { timeout_ms = 0 }))
      assert.equals(1, f:run_one("a").record.x)
      assert.has_error(function()
        testing.load_string("function process() end", "x.lua", { timeout_ms = "1s" })
      end, "load: timeout_ms: a number of milliseconds (0: no limit) expected")
    end)
  end)
end)

describe("lugger.sample", function()
  it("copies a record with its fields, removed keys and stream", function()
    local src = assert(sample.frame(
      '{"body":"b","time":"2024-05-01T12:00:00Z","log.iostream":"stderr","n":5,"m":{"k":[1,2]},"z":null}\n',
      { format = "json", path = "p.jsonl" }))
    local dst = batch.new({})
    assert.equals(0, sample.copy(dst, src, 0))
    assert.equals(batch.encode(src, 0), batch.encode(dst, 0))
    assert.matches('"log.file.path":"p.jsonl"', batch.encode(dst, 0), 1, true)
    assert.equals(1, sample.copy(dst, src, 0))
    assert.has_error(function() sample.copy(dst, src, 1) end)
    -- a record without body: the removed key stays removed in the copy
    local nb = assert(sample.frame('{"x":1}', { format = "json" }))
    local d2 = batch.new({})
    sample.copy(d2, nb, 0)
    assert.equals(batch.encode(nb, 0), batch.encode(d2, 0))
    assert.is_nil(batch.encode(d2, 0):find('"body"', 1, true))
  end)

  it("names formats", function()
    assert.is_number(sample.format("cri"))
    assert.equals(-1, sample.format("json"))
    assert.is_nil(sample.format("yaml"))
  end)

  it("marks lines that are not in the format", function()
    local b = assert(sample.frame("not cri\n", { format = "cri" }))
    assert.equals(1, b.n)
    assert.matches('"lugger.parse_error":"cri: bad timestamp"', batch.encode(b, 0), 1, true)
  end)
end)
