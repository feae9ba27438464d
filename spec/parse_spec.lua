-- The parsing helpers (lugger.parse): lugger.regex, re:match, re:test,
-- lugger.parse_time, rec:parse_regex, parse_json, parse_logfmt, parse_kv,
-- parse_csv and set_time, run in the real sandbox and driver over C
-- batches; results read back as the records' JSON output lines.
-- luacheck: no max line length (whole log lines and patterns)
local H = require("helper")

-- Runs `src` over `bodies`; returns the batch and failed count.
local function run(src, bodies, opts)
  return H.run(src, bodies, opts)
end

-- Runs `src` over one body and returns its output record and JSON line.
local function one(src, body, opts)
  local b, failed = run(src, { body }, opts)
  if failed > 0 then error(H.error(b, 0), 2) end
  return H.out(b, 0)
end

-- The error text of a script failing on one body.
local function failure(src, body)
  local b, failed = run(src, { body or "x" })
  assert.equals(1, failed)
  return H.error(b, 0)
end

local NGINX = [==[
local RE = lugger.regex([=[^(?<remote_addr>\S+) \S+ (?:-|(?<remote_user>\S+)) \[(?<time_local>[^\]]+)\] "(?<method>\S+) (?<path>[^ "?]+)(?:\?(?<query>[^ "]*))? (?<protocol>[^"]*)" (?<status:int>\d+) (?<body_bytes_sent:int>\d+) "(?<referer>[^"]*)" "(?<user_agent>[^"]*)"]=])
function process(rec)
  rec.matched = rec:parse_regex(RE)
  if rec.matched then rec:set_time(rec.time_local, "nginx") end
end
]==]

local LINE = '203.0.113.7 - alice [01/May/2024:12:00:01 +0200] "GET /api/items?id=4 HTTP/1.1" 200 512 "-" "curl/8.5.0"'

describe("rec:parse_regex", function()
  it("sets named groups as fields, typed, and the time from the line", function()
    local r = one(NGINX, LINE)
    assert.is_true(r.matched)
    assert.equals("203.0.113.7", r.remote_addr)
    assert.equals("alice", r.remote_user)
    assert.equals("/api/items", r.path)
    assert.equals("id=4", r.query)
    assert.equals(200, r.status)
    assert.equals(512, r.body_bytes_sent)
    assert.equals("2024-05-01T10:00:01.000000000Z", r.time)
  end)

  it("leaves out groups that did not take part, and the record alone on no match", function()
    local r = one(NGINX, (LINE:gsub("alice", "-"):gsub("%?id=4", "")))
    assert.is_nil(r.remote_user)
    assert.is_nil(r.query)
    r = one(NGINX, "not an access log line")
    assert.is_false(r.matched)
    assert.is_nil(r.remote_addr)
    r = one(NGINX, "")
    assert.is_false(r.matched)
  end)

  it("parses another field, and returns false for a missing one", function()
    local r = one([[
      local RE = lugger.regex("(?<k>\\w+)=(?<v:int>\\d+)")
      function process(rec)
        rec.msg = "took=12"
        rec.a = rec:parse_regex(RE, "msg")
        rec.b = rec:parse_regex(RE, "nope")
      end]], "body")
    assert.equals("took", r.k)
    assert.equals(12, r.v)
    assert.is_true(r.a)
    assert.is_false(r.b)
  end)

  it("converts int, float and bool, keeping text that does not convert", function()
    local r, line = one([[
      local RE = lugger.regex("(?<a:int>\\S+) (?<b:float>\\S+) (?<c:bool>\\S+) (?<d>\\S+) (?<e:int>\\S+)",
                              { types = { d = "int" } })
      function process(rec) rec:parse_regex(RE) end]],
      "9223372036854775807 2.5e3 yes -17 12x")
    assert.truthy(line:find('"a":9223372036854775807', 1, true))
    assert.equals(2500, r.b)
    assert.is_true(r.c)
    assert.equals(-17, r.d)
    assert.equals("12x", r.e)
    r, line = one([[
      local RE = lugger.regex("(?<a:int>\\S+) (?<b:bool>\\S+)")
      function process(rec) rec:parse_regex(RE) end]], "-9223372036854775809 maybe")
    assert.equals(-9223372036854775809, r.a) -- beyond int64: read as a double,
    assert.truthy(line:find('"a":-9223372036854775809,', 1, true), line) -- output exactly
    assert.equals("maybe", r.b)
  end)

  it("handles invalid UTF-8 and huge input", function()
    local _, line = one([[
      local RE = lugger.regex("^(?<x>\\S+) (?<y>.*)$")
      function process(rec) rec:parse_regex(RE) end]], "a\xff\xfe b\xc3")
    -- kept as bytes; the encoder writes U+FFFD for them
    assert.truthy(line:find('"x":"a\xef\xbf\xbd\xef\xbf\xbd"', 1, true), line)
    local r
    local big = ("x"):rep(4 * 1024 * 1024)
    r = one([[
      local RE = lugger.regex("^(?<head>x{3})(?<rest>x*)(?<tail>y?)$")
      function process(rec) rec.ok = rec:parse_regex(RE) end]], big)
    assert.is_true(r.ok)
    assert.equals(#big - 3, #r.rest)
    -- UTF-8 mode with an invalid subject: no error, no character matched
    r = one([[
      local RE = lugger.regex("^(?<c>.)", "u")
      function process(rec) rec.ok = rec:parse_regex(RE) end]], "\xff")
    assert.is_false(r.ok)
  end)

  it("raises clear errors with the script line for bad patterns and arguments", function()
    assert.matches("spec_script_%d+%.lua:1: lugger.regex: .*missing closing parenthesis",
                   select(3, H.runtime('local RE = lugger.regex("(a")\nfunction process() end')))
    assert.matches("spec_script_%d+%.lua:1: lugger.regex: group 'a': unknown type 'integer'",
                   select(3, H.runtime('local RE = lugger.regex("(?<a:integer>x)")\nfunction process() end')))
    assert.matches("unknown flag 'q'",
                   select(3, H.runtime('local RE = lugger.regex("x", "q")\nfunction process() end')))
    assert.matches("no group named 'b'",
                   select(3, H.runtime('local RE = lugger.regex("(?<a>x)", {types={b="int"}})\nfunction process() end')))
    assert.matches("spec_script_%d+%.lua:2: rec:parse_regex: expected a pattern from lugger.regex, not a string",
                   failure('function process(rec)\n rec:parse_regex("x")\nend'))
  end)

  it("compiles a pattern once for the same text and flags", function()
    local r = one([[
      function process(rec)
        rec.same = lugger.regex("a+") == lugger.regex("a+")
        rec.other = lugger.regex("a+") ~= lugger.regex("a+", "i")
      end]], "x")
    assert.is_true(r.same)
    assert.is_true(r.other)
  end)
end)

describe("re:match and re:test", function()
  it("return captures like string.match", function()
    local r = one([[
      local RE = lugger.regex("(\\d+)-(x)?(\\w+)")
      local WHOLE = lugger.regex("b+", "i")
      function process(rec)
        local a, b, c = RE:match("id 42-abc")
        rec.a, rec.b, rec.c = a, b == nil, c
        rec.none = RE:match("nothing") == nil
        rec.whole = WHOLE:match("aBBc")
        rec.t1, rec.t2 = RE:test("1-x"), RE:test("")
      end]], "x")
    assert.equals("42", r.a)
    assert.is_true(r.b)
    assert.equals("abc", r.c)
    assert.is_true(r.none)
    assert.equals("BB", r.whole)
    assert.is_true(r.t1)
    assert.is_false(r.t2)
  end)

  it("keeps scripts away from the handle", function()
    local r = one([[
      local RE = lugger.regex("x")
      function process(rec)
        rec.n = 0
        for _ in pairs(RE) do rec.n = rec.n + 1 end
        rec.mt = getmetatable(RE)
        rec.set = pcall(function() RE.x = 1 end)
      end]], "x")
    assert.equals(0, r.n)
    assert.equals("lugger.regex", r.mt)
    assert.is_false(r.set)
  end)
end)

describe("lugger.parse_time and rec:set_time", function()
  local function t(s, fmt)
    local r = one(([[
      function process(rec)
        local ok, err = rec:set_time(%q, %q)
        rec.ok, rec.err = ok, err
      end]]):format(s, fmt), "x", { batch = nil })
    return r.ok and r.time or r.err
  end

  it("reads the named formats", function()
    assert.equals("2024-05-01T10:00:01.000000000Z", t("01/May/2024:12:00:01 +0200", "nginx"))
    assert.equals("2024-05-01T12:00:01.000000000Z", t("01/may/2024:12:00:01 +0000", "apache"))
    assert.equals("2024-05-01T12:00:00.123456789Z", t("2024-05-01T12:00:00.123456789Z", "rfc3339"))
    assert.equals("2024-05-01T00:00:00.000000000Z", t("2024-05-01", "iso8601"))
    assert.equals("2024-05-01T10:30:00.000000000Z", t("20240501T1230+02", "iso8601"))
    assert.equals("2024-05-01T12:00:00.500000000Z", t("2024-05-01 12:00:00,5", "iso8601"))
    assert.equals("2024-05-01T12:00:00.250000000Z", t("1714564800.25", "epoch"))
    assert.equals("2024-05-01T12:00:00.123000000Z", t("1714564800123", "epoch_ms"))
    assert.equals("2024-05-01T12:00:00.123456000Z", t("1714564800123456", "epoch_us"))
    assert.equals("1969-12-31T23:59:59.000000000Z", t("-1", "epoch"))
  end)

  it("reads strftime-style formats with fractions and zones", function()
    assert.equals("2024-05-01T12:00:00.123000000Z", t("2024-05-01 14:00:00.123 +02:00", "%Y-%m-%d %H:%M:%S.%f %z"))
    assert.equals("2024-05-01T13:05:00.000000000Z", t("Wed May  1 01:05:00 PM UTC 2024", "%a %b %e %I:%M:%S %p %Z %Y"))
    assert.equals("2024-02-29T00:00:00.000000000Z", t("2024 060", "%Y %j"))
    assert.equals("2024-05-01T12:00:00.000000000Z", t("05/01/24 12:00", "%D %R"))
    assert.equals("2024-05-01T12:00:07.000000000Z", t("1714564807", "%s"))
  end)

  it("gives syslog times a year: this one, or the last when that is ahead", function()
    local now = os.date("!*t")
    local r = t(os.date("!%b %e %H:%M:%S"), "syslog")
    assert.equals(tostring(now.year), r:sub(1, 4))
    local later = os.date("!%b %e %H:%M:%S", os.time() + 5 * 86400)
    assert.equals(tostring(now.year - 1), t(later, "syslog"):sub(1, 4))
  end)

  it("returns nil and a message for text not in the format", function()
    assert.equals("expected a month name at byte 4", t("01/Foo/2024:12:00:01 +0000", "nginx"))
    assert.equals("no such date", t("2023-02-29", "%Y-%m-%d"))
    assert.equals("unexpected text at byte 11", t("2024-05-01 junk", "%Y-%m-%d"))
    assert.matches("not an RFC 3339", t("", "rfc3339"))
    assert.matches("years 1678%-2262", t("99999999999", "epoch"))
    local r = one([[
      function process(rec)
        rec.a, rec.b = lugger.parse_time(nil, "nginx")
        rec.c = lugger.parse_time("1714564800", "epoch")
        local ok, err = rec:set_time(nil, "nginx")
        rec.d = err
      end]], "x")
    assert.is_nil(r.a)
    assert.equals("not a time: a nil", r.b)
    assert.equals(1714564800e9, r.c)
    assert.equals("not a time: a nil", r.d)
  end)

  it("raises for a bad format, at the script's line", function()
    assert.matches("spec_script_%d+%.lua:3: rec:set_time: unknown directive '%%Q' in format",
                   failure('function process(rec)\n\n rec:set_time("x", "%Y %Q")\nend'))
    assert.matches("spec_script_%d+%.lua:2: lugger.parse_time: unknown time format 'ngnix'",
                   failure('function process(rec)\n lugger.parse_time("x", "ngnix")\nend'))
    assert.matches("spec_script_%d+%.lua:2: lugger.parse_time: the format is a string",
                   failure('function process(rec)\n lugger.parse_time("x")\nend'))
  end)

  it("sets nanoseconds given as a number", function()
    local r = one('function process(rec) rec:set_time(1714564800e9) end', "x")
    assert.equals("2024-05-01T12:00:00.000000000Z", r.time)
  end)

  it("reads a number in the unit an epoch format names", function()
    -- A JSON "ts": 1714564800 read by parse_json is a number: with "epoch"
    -- it is seconds (it once was taken as nanoseconds: 1970-01-01).
    local r = one([[
      function process(rec)
        rec:parse_json()
        assert(rec:set_time(rec.ts, "epoch"))
        rec.ms = lugger.parse_time(1714564800250, "epoch_ms")
        rec.s = lugger.parse_time(-1.5, "epoch")
        rec.us = lugger.parse_time(1714564800250001, "epoch_us")
        rec.e1, rec.e2 = rec:set_time(rec.ts, "nginx")
        rec.e3, rec.e4 = lugger.parse_time(1e300, "epoch")
        rec.e5, rec.e6 = rec:set_time(0/0, "epoch_ms")
      end]], '{"ts":1714564800.25}')
    assert.equals("2024-05-01T12:00:00.250000000Z", r.time)
    assert.equals(1714564800250e6, r.ms)
    assert.equals(-1.5e9, r.s)
    assert.equals(1714564800250001e3, r.us)
    assert.is_nil(r.e1)
    assert.equals("not a time: a number (a number is a time only in the formats "
                  .. "epoch, epoch_ms, epoch_us and epoch_ns)", r.e2)
    assert.is_nil(r.e3)
    assert.equals("not a time: 1e+300 (epoch) is out of range", r.e4)
    assert.is_nil(r.e5)
    assert.matches("out of range", r.e6)
  end)
end)

describe("rec:parse_json", function()
  local PJ = [[
    function process(rec)
      local n, err = rec:parse_json(%s)
      rec.n, rec.err = n, err
    end]]
  local function pj(body, args)
    return one(PJ:format(args or ""), body)
  end

  it("sets members as fields: strings, numbers, booleans, null, nested maps", function()
    local r, line = pj('{"a":1,"s":"x\\u00e9\\"y\\ud83d\\ude00","c":{"d":[1,{"e":null}]},"t":true,"f":false,"z":null,"big":9223372036854775807,"neg":-9223372036854775808,"over":9223372036854775808,"fl":1.5e3}')
    assert.equals(10, r.n)
    assert.equals(1, r.a)
    assert.equals('xé"y😀', r.s)
    assert.same({ d = { 1, { e = H.json.null } } }, r.c)
    assert.is_true(r.t)
    assert.is_false(r.f)
    assert.truthy(line:find('"z":null', 1, true))
    assert.truthy(line:find('"big":9223372036854775807', 1, true))
    assert.truthy(line:find('"neg":-9223372036854775808', 1, true))
    assert.truthy(line:find('"over":9223372036854775808,', 1, true)) -- beyond int64: as written
    assert.equals(1500, r.fl)
  end)

  it("flattens nested objects with a separator, and prefixes keys", function()
    local r, line = pj('{"a":{"b":{"c":1},"e":{}},"l":[{"x":1}]}', '{ flatten = "_", prefix = "app." }')
    assert.equals(1, r["app.a_b_c"])
    assert.truthy(line:find('"app.a_e":{}', 1, true))
    assert.same({ { x = 1 } }, r["app.l"])
    r = pj('{"a":{"b":2}}', "{ flatten = true }")
    assert.equals(2, r["a.b"])
  end)

  it("leaves the record unchanged on invalid JSON and says where", function()
    local cases = {
      { '{"a":1,', "invalid JSON at byte 8: expected a key" },
      { '{"a":1} x', "invalid JSON at byte 9: unexpected text after the object" },
      { "[1,2]", "not a JSON object (starts with '[')" },
      { "", "no JSON: the text is empty" },
      { '{"a":"x\ty"}', "invalid JSON at byte 8: control character in a string" },
      { '{"a":01}', "invalid JSON at byte 7: expected ',' or '}'" },
      { '{"a":tru}', "invalid JSON at byte 6: expected a value" },
      { '{"a":"\\x"}', "invalid JSON at byte 7: bad escape" },
      { ('{"a":'):rep(300) .. "1" .. ("}"):rep(300), "nested deeper than 256 levels" },
    }
    for _, c in ipairs(cases) do
      local r = pj(c[1])
      assert.is_nil(r.n)
      assert.matches(c[2], r.err, 1, true)
      assert.is_nil(r.a)
    end
  end)

  it("skips a UTF-8 byte order mark at the start of the body or field", function()
    local BOM = "\239\187\191"
    local r = pj(BOM .. '{"a":1,"s":"x"}')
    assert.equals(2, r.n)
    assert.equals(1, r.a)
    assert.equals("x", r.s)
    r = pj(BOM .. ' \t{"a":2}')
    assert.equals(2, r.a)
    r = one([[
      function process(rec)
        rec.payload = "\239\187\191" .. '{"k":"v"}'
        rec.n, rec.err = rec:parse_json("payload")
      end]], "x")
    assert.equals(1, r.n)
    assert.equals("v", r.k)
    -- Only one mark, only at the start; positions count its 3 bytes.
    for _, c in ipairs({
      { BOM, "no JSON: the text is empty" },
      { BOM .. BOM .. "{}", "not a JSON object (starts with '?')" },
      { " " .. BOM .. "{}", "not a JSON object (starts with '?')" },
      { "\239\187{}", "not a JSON object (starts with '?')" },
      { BOM .. '{"a":1,', "invalid JSON at byte 11: expected a key" },
      { BOM .. '{"a":1}' .. BOM, "invalid JSON at byte 11: unexpected text after the object" },
    }) do
      r = pj(c[1])
      assert.is_nil(r.n)
      assert.equals(c[2], r.err)
      assert.is_nil(r.a)
    end
  end)

  it("reads another field, keeps invalid UTF-8 out of nested JSON, and takes huge input", function()
    local r = one([[
      function process(rec)
        rec.payload = '{"k":"v","m":{"x":"\255"}}'
        rec.n = rec:parse_json("payload")
        rec.none = select(2, rec:parse_json("nope"))
      end]], "x")
    assert.equals("v", r.k)
    assert.equals("\239\191\189", r.m.x)
    assert.equals("no string field 'nope'", r.none)
    local parts = {}
    for k = 1, 20000 do parts[k] = ('"k%d":"%s"'):format(k, ("v"):rep(50)) end
    r = pj("{" .. table.concat(parts, ",") .. "}")
    assert.equals(20000, r.n)
    assert.equals(("v"):rep(50), r.k20000)
  end)

  it("takes an RFC 3339 time as the record's time", function()
    local r = pj('{"time":"2024-05-01T12:00:00+02:00","msg":"hi"}')
    assert.equals("2024-05-01T10:00:00.000000000Z", r.time)
    r = pj('{"time":"yesterday"}')
    assert.equals("yesterday", r.time)
  end)
end)

describe("rec:parse_logfmt, rec:parse_kv, rec:parse_csv", function()
  it("parses logfmt", function()
    local r = one('function process(rec) rec.n = rec:parse_logfmt() end',
                  'level=info msg="hello \\"world\\"" took=12ms flag empty= =junk "x" k=v=w')
    assert.equals(6, r.n)
    assert.equals("info", r.level)
    assert.equals('hello "world"', r.msg)
    assert.equals("12ms", r.took)
    assert.is_true(r.flag)
    assert.equals("", r.empty)
    assert.equals("v=w", r.k)
    r = one('function process(rec) rec.n = rec:parse_logfmt() end', "")
    assert.equals(0, r.n)
  end)

  it("skip a UTF-8 byte order mark at the start of the text; regexes see it", function()
    local BOM = "\239\187\191"
    local r = one('function process(rec) rec.n = rec:parse_logfmt() end', BOM .. "level=info msg=hi")
    assert.equals(2, r.n)
    assert.equals("info", r.level)
    r = one('function process(rec) rec.n = rec:parse_kv(" ", "=") end', BOM .. "  a=1 b=2")
    assert.equals(2, r.n)
    assert.equals("1", r.a)
    r = one('local C = { "x:int", "y" }\nfunction process(rec) rec.n = rec:parse_csv(C) end', BOM .. "5,z")
    assert.equals(2, r.n)
    assert.equals(5, r.x)
    r = one('local C = { "x" }\nfunction process(rec) rec.n = rec:parse_csv(C) end', BOM)
    assert.equals(0, r.n)
    r = one([[
      local RE = lugger.regex("^(?<first>\\S+)")
      function process(rec) rec:parse_regex(RE) end]], BOM .. "a b")
    assert.equals(BOM .. "a", r.first)
  end)

  it("parses key/value pairs with any separators", function()
    local r = one('function process(rec) rec.n = rec:parse_kv("; ", ": ") end',
                  'user: alice; role: "admin; ops" ; bad;  id: 7')
    assert.equals(3, r.n)
    assert.equals("alice", r.user)
    assert.equals("admin; ops", r.role)
    assert.equals("7", r.id)
    r = one([[function process(rec)
      rec.src = "a=1  b='x y'"
      rec.n = rec:parse_kv("src", " ", "=")
      rec.m = rec:parse_kv()
    end]], "c=3")
    assert.equals("1", r.a)
    assert.equals("x y", r.b)
    assert.equals("3", r.c)
    assert.matches("separators are non%-empty strings",
                   failure('function process(rec) rec:parse_kv("", "=") end'))
  end)

  it("parses CSV with quotes, typed columns and skipped ones", function()
    local r = one([[
      local COLS = { "ts", false, "user", "n:int", "ok:bool" }
      function process(rec) rec.k = rec:parse_csv(COLS) end]],
      '2024-05-01,skip,"smith, ""j""",42,true,extra')
    assert.equals(4, r.k)
    assert.equals("2024-05-01", r.ts)
    assert.equals('smith, "j"', r.user)
    assert.equals(42, r.n)
    assert.is_true(r.ok)
    r = one('function process(rec) rec.k = rec:parse_csv({"a","b","c"}, "|") end', "x||")
    assert.equals(3, r.k)
    assert.equals("", r.c)
    r = one('function process(rec) rec.k, rec.e = rec:parse_csv({"a","b"}) end', '"open,x')
    assert.is_nil(r.k)
    assert.equals("unterminated quote in column 1", r.e)
    assert.is_nil(r.a)
    assert.matches("spec_script_%d+%.lua:1: rec:parse_csv: column 'a': unknown type 'x'",
                   failure('function process(rec) rec:parse_csv({"a:x"}) end'))
    assert.matches("spec_script_%d+%.lua:1: rec:parse_csv: the separator is one byte",
                   failure('function process(rec) rec:parse_csv({"a"}, ";;") end'))
  end)
end)

describe("the parsers on empty keys and values", function()
  it("set empty names and values", function()
    local r, line = one('function process(rec) rec.n = rec:parse_json() end', '{"":"","e":"\\u0000"}')
    assert.equals(2, r.n)
    assert.truthy(line:find('"":""', 1, true))
    assert.equals("\0", r.e)
    r = one('function process(rec) rec.n = rec:parse_logfmt() end', 'a="" b=""')
    assert.equals(2, r.n)
    assert.equals("", r.a)
  end)
end)

describe("the regex group time", function()
  it("sets the record's time in its format, and says when it cannot", function()
    local src = [=[
      local RE = lugger.regex([==[^\[(?<time_local>(?<time:nginx>[^\]]*))\] (?<msg>.*)$]==])
      local ISO = lugger.regex("^(?<time>\\S+)", { types = { time = "%Y-%m-%d" } })
      function process(rec)
        local ok, err = rec:parse_regex(RE)
        rec.ok, rec.err = ok, err
        if rec.msg == "iso" then rec:parse_regex(ISO, "time_local") end
      end]=]
    local b = run(src, { { body = "[01/May/2024:12:00:01 +0200] hi", time_ns = 5 },
                         { body = "[yesterday] hi", time_ns = 5 },
                         { body = "[2024-05-02] iso", time_ns = 5 } })
    local r = H.out(b, 0)
    assert.equals("2024-05-01T10:00:01.000000000Z", r.time)
    assert.equals("01/May/2024:12:00:01 +0200", r.time_local)
    assert.is_true(r.ok)
    r = H.out(b, 1)
    assert.equals("1970-01-01T00:00:00.000000005Z", r.time)
    assert.is_true(r.ok)
    assert.equals("time: expected a day (1-31) at byte 1", r.err)
    assert.equals("hi", r.msg)
    assert.equals("2024-05-02T00:00:00.000000000Z", H.out(b, 2).time)
    assert.matches("spec_script_%d+%.lua:1: lugger.regex: types: group 'time': unknown directive '%%Q'",
                   select(3, H.runtime('local RE = lugger.regex("(?<time>x)", {types={time="%Q"}})\nfunction process() end')))
    assert.matches("lugger.regex: types: the pattern has no group named 'time'",
                   select(3, H.runtime('local RE = lugger.regex("(?<t>x)", {types={time="epoch"}})\nfunction process() end')))
  end)
end)
