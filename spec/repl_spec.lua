-- lugger.repl: the commands of `lugger repl`, driven without a terminal.
-- Paths are relative to the source tree (CTest runs specs from there).
local repl = require("lugger.repl")

local FIX = "tests/fixtures/scripts/"

local function session(opts)
  local o = { script = FIX .. "parse.lua", sample = FIX .. "sample.cri" }
  for k, v in pairs(opts or {}) do o[k] = v end
  local s, msg = repl.new(o)
  assert.is_not_nil(s, msg)
  return s, msg
end

-- eval that must succeed; returns its text.
local function ok(s, line)
  local text, good, quit = s:eval(line)
  assert.is_true(good, line .. " -> " .. tostring(text))
  assert.is_false(quit)
  return text
end

local function fails(s, line)
  local text, good = s:eval(line)
  assert.is_false(good, line .. " should fail, got " .. tostring(text))
  return text
end

local function tmpfile(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

describe("lugger.repl", function()
  it("shows the current record and the script's result", function()
    local s = session()
    local text = ok(s, ":show")
    assert.equals(table.concat({
      "record 1/2 (tests/fixtures/scripts/sample.cri offset 0)",
      '{"time":"2024-05-01T12:00:00.000000001Z","body":"INFO user=dan","log.iostream":"stdout","log.file.path":"tests/fixtures/scripts/sample.cri"}',
      "-> kept, routes: default",
      '{"time":"2024-05-01T12:00:00.000000001Z","body":"INFO user=dan","log.iostream":"stdout","log.file.path":"tests/fixtures/scripts/sample.cri","level":"INFO","user":"dan"}',
    }, "\n"), text)
    text = ok(s, ":next")
    assert.matches("^record 2/2 %(tests/fixtures/scripts/sample.cri offset 54%)\n", text)
    assert.matches("\n%-> kept, routes: errors, audit\n", text)
    assert.matches('"code":503}$', text)
  end)

  it("evaluates Lua expressions and statements against the record", function()
    local s = session()
    assert.equals('"INFO user=dan"', ok(s, "rec.body"))
    assert.equals('"INFO"', ok(s, "rec.level")) -- set by the script
    ok(s, ":next")
    assert.equals("504", ok(s, "rec.code + 1"))
    assert.equals('"stderr"', ok(s, 'rec["log.iostream"]'))
    assert.equals("", ok(s, "rec.x = {1, 2}"))
    assert.equals("[1,2]", ok(s, "rec.x"))
    assert.matches('"x":%[1,2%]}$', ok(s, ":show"))
    assert.equals("", ok(s, "y = rec.code * 2"))
    assert.equals("1006\ttrue\tnil", ok(s, "y, y > 1000, nil"))
    assert.equals("a\tb\n3", ok(s, "print('a', 'b') return 3"))
    assert.equals("nil", ok(s, "rec.nothing"))
    assert.matches('^{"time":', ok(s, "rec"))
    assert.equals("null", ok(s, "lugger.null"))
    assert.equals("1.5", ok(s, "1.5"))
  end)

  it("reports Lua errors and keeps the sandbox", function()
    local s = session()
    assert.matches("^error: repl:1: ", fails(s, "rec.body +"))
    assert.matches("^error: repl:1: attempt to perform arithmetic", fails(s, "rec.nothing + 1"))
    assert.matches("^error: repl:1: attempt to index global 'io'", fails(s, "io.open('/etc/passwd')"))
    assert.matches("attempt to call field 'execute'", fails(s, "os.execute('true')"))
    assert.matches("time: 'x' is not an RFC 3339 time", fails(s, "rec.time = 'x'"))
  end)

  it("stops a Lua line stuck in a loop after line_timeout_ms of CPU time", function()
    local s = session({ line_timeout_ms = 50 })
    local want = "^error: repl:1: script_timeout: exceeded the time limit of 50 ms "
                 .. "of CPU time on this line$"
    assert.matches(want, fails(s, "n = 0 while true do n = n + 1 end"))
    assert.matches(want, fails(s, "pcall(function() while true do end end)"))
    assert.equals("true\t\"dan\"", ok(s, "n > 0, rec.user"))
    assert.equals("6", ok(s, "local t = 0 for i = 1, 3 do t = t + i end return t"))
    local bad, err = repl.new({ line_timeout_ms = -1 })
    assert.is_nil(bad)
    assert.matches("line_timeout_ms", err)
  end)

  it("moves between records and refuses to go past the ends", function()
    local s = session()
    assert.matches("^error: no record 0 %(the sample has 2%)", fails(s, ":prev"))
    ok(s, ":n")
    assert.matches("^error: no record 3", fails(s, ":next"))
    assert.matches("^record 1/2", ok(s, ":goto 1"))
    assert.matches("^record 2/2", ok(s, ":next 1"))
    assert.matches("^record 1/2", ok(s, ":p"))
    assert.matches("takes a number", fails(s, ":next x"))
    -- a record kept from an earlier one is stale, not a crash
    ok(s, "old = rec")
    ok(s, ":next")
    assert.matches("record used after its batch is gone", fails(s, "old.body"))
    assert.equals('"ERROR user=eve code=503"', ok(s, "rec.body"))
  end)

  it("shows drops and script errors; a script error counts as a failure", function()
    local s = session({ sample = FIX .. "sample.log", format = "line" })
    local text = ok(s, ":next")
    assert.matches("\n%-> dropped\n", text)
    local e = session({ script = FIX .. "error.lua", sample = FIX .. "errors.log", format = "line" })
    local found = false
    for _ = 1, 5 do
      local t, good = e:eval(":show")
      if not good then
        assert.matches("\n%-> error: [^\n]*error%.lua:%d+: ", t)
        found = true
        break
      end
      e:eval(":next")
    end
    assert.is_true(found, "no failing record in errors.log")
    -- a drop from a Lua line shows at once
    ok(s, ":goto 1")
    ok(s, "rec:drop()")
    assert.matches("\n%-> dropped\n", ok(s, ":show"))
    ok(s, "rec:route('elsewhere')")
  end)

  it("adds lines with :line, framed in the session's format", function()
    local s = session()
    local text = ok(s, ":line 2024-05-01T12:00:05Z stdout F WARN user=zed")
    assert.matches("^record 3/3 %(:line%)\n", text)
    assert.equals('"zed"', ok(s, "rec.user"))
    assert.equals('"2024-05-01T12:00:05.000000000Z"', ok(s, "rec.time"))
    local n = session({ script = false, sample = false })
    assert.matches("^record 1/1 %(no sample%)\n{", ok(n, ":show"))
    assert.matches("%(no script: :load FILE%)", ok(n, ":show"))
    -- the empty stand-in record gives way to the first line added
    assert.matches("^record 1/1 %(:line%)\n{[^\n]*\"body\":\"hello\"}", ok(n, ":line hello"))
    assert.matches("^record 2/2", ok(n, ":line again"))
  end)

  it("loads and reloads scripts; a broken one leaves the old in place", function()
    local path = tmpfile("function process(rec) rec.v = 1 end\n")
    local s = session({ script = path })
    assert.equals("1", ok(s, "rec.v"))
    local text = fails(s, ":load " .. FIX .. "broken.lua")
    assert.matches("^error: [^\n]*broken%.lua:%d+: ", text)
    assert.equals("1", ok(s, "rec.v"))
    local f = assert(io.open(path, "wb"))
    f:write("function process(rec) rec.v = 2 end\n")
    f:close()
    assert.matches("^loaded " .. path:gsub("%p", "%%%0") .. "\nrecord 1/2", ok(s, ":reload"))
    assert.equals("2", ok(s, "rec.v"))
    f = assert(io.open(path, "wb"))
    f:write("function process(rec)\n  rec.v = = 3\nend\n")
    f:close()
    assert.matches(":2: ", fails(s, ":reload"))
    assert.equals("2", ok(s, "rec.v"))
    os.remove(path)
    assert.matches("takes a script path", fails(s, ":load"))
  end)

  it("reports a script that does not load at the start, and a bad sample", function()
    local s, msg = session({ script = FIX .. "broken.lua" })
    assert.matches("^error: [^\n]*broken%.lua:%d+:", msg)
    assert.matches("%(no script", ok(s, ":show"))
    local none, err = repl.new({ sample = "/nonexistent.log" })
    assert.is_nil(none)
    assert.matches("nonexistent", err)
    none, err = repl.new({ format = "yaml" })
    assert.is_nil(none)
    assert.matches("unknown format", err)
  end)

  it("has help, quit and completion", function()
    local s = session()
    local help = ok(s, ":help")
    for _, c in ipairs(repl.commands) do
      assert.is_truthy(help:find(c[1], 1, true), c[1])
    end
    assert.matches("unknown command :nope", fails(s, ":nope"))
    local _, good, quit = s:eval(":quit")
    assert.is_true(good)
    assert.is_true(quit)
    _, _, quit = s:eval(":q")
    assert.is_true(quit)
    assert.same({ ":next" }, s:complete(":ne"))
    assert.same({ ":load" }, s:complete(":lo"))
    assert.same({}, s:complete("rec"))
    assert.equals("", ok(s, "   "))
  end)
end)
