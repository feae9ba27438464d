-- Edge cases of every parsing helper (lugger.parse), helper by helper:
-- empty input, text that does not match, invalid UTF-8, 1 MiB input,
-- 64-bit integers (exact in the output, past 2^53 too), and mistakes in
-- the script (bad patterns, formats, options, argument types), which
-- must fail the record with an error that names the script and its line.
-- Run in the real sandbox and driver over C batches, read back as the
-- records' JSON output lines (spec/parse_spec.lua has the main cases).
-- luacheck: no max line length (whole log lines and patterns)
local H = require("helper")

local MiB = 1024 * 1024

-- Runs `src` over one body; returns the output record and its JSON line.
local function one(src, body)
  local b, failed = H.run(src, { body })
  if failed > 0 then error(H.error(b, 0), 2) end
  return H.out(b, 0)
end

-- The error text of `src` failing its one record.
local function failure(src, body)
  local b, failed, _, paths = H.run(src, { body or "x" })
  assert.equals(1, failed)
  return H.error(b, 0), paths[1]
end

-- Asserts that `src` fails its record at line `line` of the script with a
-- message holding `text` (plain), and no position inside the runtime.
local function fails_at(line, text, src, body)
  local err, path = failure(src, body)
  local prefix = path .. ":" .. line .. ": "
  assert.equals(prefix, err:sub(1, #prefix), err)
  assert.truthy(err:find(text, 1, true), err)
  assert.is_nil(err:find("lua/lugger/", 1, true), err)
end

-- Asserts that loading `src` fails at line `line` with `text`.
local function load_fails_at(line, text, src)
  local _, ok, err, paths = H.runtime(src)
  assert.is_nil(ok)
  local prefix = paths[1] .. ":" .. line .. ": "
  assert.equals(prefix, err:sub(1, #prefix), err)
  assert.truthy(err:find(text, 1, true), err)
end

-- The JSON output must stay valid whatever bytes went in.
local function valid_json(line)
  assert.truthy(H.json.decode(line), line)
end

describe("lugger.regex, re:match, re:test, rec:parse_regex", function()
  it("take empty input", function()
    local r = one([[
      local RE = lugger.regex("^(?<a>x*)$")
      local ANY = lugger.regex("(y?)")
      function process(rec)
        rec.ok = rec:parse_regex(RE)
        rec.m = ANY:match("")
        rec.t = ANY:test("")
      end]], "")
    assert.is_true(r.ok)
    assert.equals("", r.a) -- a group that matched nothing is an empty field
    assert.equals("", r.m)
    assert.is_true(r.t)
  end)

  it("leave the record alone when nothing matches", function()
    local r, line = one([[
      local RE = lugger.regex("^(?<status:int>\\d{3}) (?<time:nginx>\\S+)$")
      function process(rec)
        rec.ok = rec:parse_regex(RE)
        rec.m = RE:match("nothing")
      end]], "no digits here")
    assert.is_false(r.ok)
    assert.is_nil(r.status)
    assert.is_nil(r.m)
    assert.equals("no digits here", r.body)
    assert.equals('{"time":', line:sub(1, 8))
  end)

  it("keep invalid UTF-8 as bytes, in Lua and (as U+FFFD) in the output", function()
    local r, line = one([[
      local RE = lugger.regex("^(?<k>\\S+)=(?<v>\\S+)$")
      function process(rec)
        rec.ok = rec:parse_regex(RE)
        local k, v = RE:match(rec.body)
        rec.raw = (k == "\255\254" and v == "a\192") and "same bytes" or "changed"
        rec.len = #rec.v
      end]], "\255\254=a\192")
    assert.is_true(r.ok)
    assert.equals("same bytes", r.raw)
    assert.equals(2, r.len)
    assert.equals("\239\191\189\239\191\189", r.k)
    valid_json(line)
  end)

  it("match and capture 1 MiB", function()
    local body = "id=" .. ("z"):rep(MiB) .. " end"
    local r = one([[
      local RE = lugger.regex("^id=(?<id>\\S+) (?<tail>\\w+)$")
      function process(rec)
        rec.ok = rec:parse_regex(RE)
        local id = RE:match(rec.body)
        rec.mlen = #id
      end]], body)
    assert.is_true(r.ok)
    assert.equals(MiB, #r.id)
    assert.equals(MiB, r.mlen)
    assert.equals("end", r.tail)
  end)

  it("keep 64-bit integers exact, past 2^53 and past int64", function()
    local _, line = one([[
      local RE = lugger.regex("(?<a:int>\\S+) (?<b:int>\\S+) (?<c:int>\\S+) (?<d:int>\\S+) (?<e:int>\\S+) (?<f:int>\\S+)")
      function process(rec)
        rec:parse_regex(RE)
        rec.a_in_lua = rec.a
      end]],
      "9007199254740993 -9223372036854775808 18446744073709551615 +000123456789012345678901234567890 -99999999999999999999 1.5e3")
    assert.truthy(line:find('"a":9007199254740993,', 1, true), line)
    assert.truthy(line:find('"b":-9223372036854775808,', 1, true), line)
    assert.truthy(line:find('"c":18446744073709551615,', 1, true), line)
    assert.truthy(line:find('"d":123456789012345678901234567890,', 1, true), line)
    assert.truthy(line:find('"e":-99999999999999999999,', 1, true), line)
    assert.truthy(line:find('"f":1500,', 1, true), line)
    -- read in Lua: a number, the nearest double (lua/README.md "Values")
    assert.truthy(line:find('"a_in_lua":9007199254740992', 1, true), line)
    local r = one([[
      local RE = lugger.regex("(?<big:int>\\d+)")
      function process(rec)
        rec:parse_regex(RE)
        rec.t = type(rec.big)
      end]], "18446744073709551616")
    assert.equals("number", r.t)
  end)

  it("keep numbers beyond a double's range as their text (JSON has no inf)", function()
    local r, line = one([[
      local RE = lugger.regex("(?<a:float>\\S+) (?<b:float>\\S+) (?<c:int>\\S+) (?<d:float>\\S+)")
      function process(rec) rec:parse_regex(RE) end]], "1e400 -1e400 1e999 1.5e308")
    assert.equals("1e400", r.a)
    assert.equals("-1e400", r.b)
    assert.equals("1e999", r.c)
    assert.equals(1.5e308, r.d)
    assert.is_nil(line:find("null", 1, true), line)
  end)

  it("re:match returns exactly one value per group, for 1 to 12 groups", function()
    local r = one([[
      function process(rec)
        local got = {}
        for n = 1, 12 do
          local RE = lugger.regex("^" .. ("(\\d)"):rep(n) .. "$")
          local t = { RE:match(("123456789abc"):sub(1, n):gsub("%a", "0")) }
          got[n] = select("#", RE:match(("7"):rep(n))) .. ":" .. table.concat(t)
        end
        rec.got = got
        local a, b, c, d, e, f, g, h, i, j = lugger.regex("^(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)?$"):match("abcdefghi")
        rec.ten = table.concat({ a, b, c, d, e, f, g, h, i }) .. tostring(j)
      end]], "x")
    local want = {}
    for n = 1, 12 do want[n] = n .. ":" .. ("123456789000"):sub(1, n) end
    assert.same(want, r.got)
    assert.equals("abcdefghinil", r.ten)
  end)

  it("re:match tells an empty capture from a group that did not take part", function()
    local r = one([[
      function process(rec)
        local RE = lugger.regex("^(a*)(b)?(c*)(d)?$")
        local a, b, c, d = RE:match("")
        rec.got = table.concat({ tostring(a), tostring(b), tostring(c), tostring(d) }, ",")
        local t = {}
        for k = 1, 200 do
          local x, y, z = RE:match(k % 2 == 0 and "bcc" or "a")
          t[#t + 1] = ("%s|%s|%s"):format(x, tostring(y), z)
        end
        rec.loop = t[1] .. " " .. t[2] .. " " .. t[199] .. " " .. t[200]
      end]], "x")
    assert.equals(",nil,,nil", r.got)
    assert.equals("a|nil| |b|cc a|nil| |b|cc", r.loop)
  end)

  it("re:match returns one value per group for 31 to 150 groups (written out up to 40)", function()
    local r = one([[
      function process(rec)
        local got = {}
        for _, n in ipairs({ 31, 32, 39, 40, 41, 99, 150 }) do
          -- n groups: every other one does not take part
          local RE = lugger.regex("^" .. ("(\\w)(z)?"):rep(n / 2) .. ("(\\w)"):rep(n % 2) .. "$")
          local s = ("abcdefghijklmnopqrstuvwxy"):rep(4):sub(1, math.ceil(n / 2))
          local t = { RE:match(s) }
          local ok = select("#", RE:match(s)) == n
          for k = 1, n do
            if k % 2 == 1 then
              ok = ok and t[k] == s:sub((k + 1) / 2, (k + 1) / 2)
            else
              ok = ok and t[k] == nil
            end
          end
          got[#got + 1] = n .. ":" .. tostring(ok)
        end
        rec.got = table.concat(got, " ")
      end]], "x")
    assert.equals("31:true 32:true 39:true 40:true 41:true 99:true 150:true", r.got)
  end)

  it("raise at the script's line for bad patterns, options and arguments", function()
    load_fails_at(2, "lugger.regex: the pattern is a string, not a number", "\nlocal RE = lugger.regex(42)\nfunction process() end")
    load_fails_at(1, "lugger.regex: options are a string of flags or a table, not a number", 'local RE = lugger.regex("x", 5)\nfunction process() end')
    load_fails_at(1, "lugger.regex: flags is a string", 'local RE = lugger.regex("x", { flags = 1 })\nfunction process() end')
    load_fails_at(1, "lugger.regex: types maps group names to type names", 'local RE = lugger.regex("(?<a>x)", { types = { a = 1 } })\nfunction process() end')
    load_fails_at(1, "lugger.regex: quantifier does not follow a repeatable item at offset 0", 'local RE = lugger.regex("*x")\nfunction process() end')
    load_fails_at(1, "unknown time format 'ngnix'", 'local RE = lugger.regex("(?<time:ngnix>x)")\nfunction process() end')
    fails_at(3, "re:match: expected a string, not a nil", 'local RE = lugger.regex("x")\nfunction process(rec)\n  RE:match(rec.nope)\nend')
    fails_at(2, "re:test: expected a string, not a table", 'local RE = lugger.regex("x")\nfunction process(rec) RE:test({}) end')
    fails_at(2, "re:match: expected a pattern from lugger.regex, not a string", 'local RE = lugger.regex("x")\nfunction process(rec) RE.match("x", "x") end')
    fails_at(3, "rec:parse_regex: the field name is a string, not a number", 'local RE = lugger.regex("x")\nfunction process(rec)\n  rec:parse_regex(RE, 5)\nend')
    fails_at(2, "a lugger.regex is read-only", 'local RE = lugger.regex("x")\nfunction process(rec) RE.flags = "i" end')
  end)

  it("fail the record, naming the line, when PCRE2 gives up backtracking", function()
    local body = ("a"):rep(5000) .. "b"
    local SRC = 'local RE = lugger.regex("^(?<x>(a+)+)$")\nfunction process(rec)\n  %s\nend'
    for _, call in ipairs({ "rec:parse_regex(RE)", "RE:match(rec.body)", "RE:test(rec.body)" }) do
      local t0 = os.clock()
      fails_at(3, "PCRE2 gave up at its match limit: the pattern backtracks too much", SRC:format(call), body)
      assert.truthy(os.clock() - t0 < 5)
    end
  end)

  it("name the script when a helper is tail-called (no frame of its own)", function()
    -- The calling frame is gone: the line where process is defined.
    fails_at(2, "rec:parse_regex: expected a pattern from lugger.regex, not a nil", '\nfunction process(rec)\n  return rec:parse_regex(nil)\nend')
    fails_at(1, "rec:parse_json: flatten is true or a separator string", 'function process(rec)\n  return rec:parse_json({ flatten = 3 })\nend')
  end)
end)

describe("lugger.regex's cache of compiled patterns", function()
  it("keeps no pattern alive that nothing else holds (its PCRE2 code is freed)", function()
    -- A script compiling a pattern from each record's text kept every one
    -- (~2 KiB of C memory per record, outside script_memory).
    local parse = require("lugger.parse")
    local seen = setmetatable({}, { __mode = "k" })
    local held = parse.regex("^held")
    for i = 1, 2000 do seen[parse.regex("^x" .. i .. "(\\d+)")] = true end
    collectgarbage()
    collectgarbage()
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equals(0, n)
    assert.equals(held, parse.regex("^held")) -- held: still the same object
    assert.is_true(held:test("held"))
  end)
end)

describe("rec:parse_json", function()
  local PJ = 'function process(rec) rec.n, rec.err = rec:parse_json(%s) end'

  it("says so for empty, blank and non-object input", function()
    for body, msg in pairs({ [""] = "no JSON: the text is empty", ["  \t"] = "no JSON: the text is empty",
                             ["null"] = "not a JSON object (starts with 'n')",
                             ['"s"'] = "not a JSON object (starts with '\"')",
                             ["\255{}"] = "not a JSON object (starts with '?')" }) do
      local r = one(PJ:format(""), body)
      assert.is_nil(r.n)
      assert.equals(msg, r.err)
    end
    assert.equals(0, one(PJ:format(""), " {} ").n)
  end)

  it("keeps invalid UTF-8 in keys and values as bytes, the output valid", function()
    local r, line = one([[
      function process(rec)
        rec.n = rec:parse_json()
        rec.same = rec.v == "a\255b" and rec["\254"] == 1
      end]], '{"v":"a\255b","\254":1,"w":"\192\128"}')
    assert.equals(3, r.n)
    assert.is_true(r.same)
    valid_json(line)
  end)

  it("decodes lone surrogates to U+FFFD and keeps \\u0000, the output valid", function()
    local r, line = one([[
      function process(rec)
        rec.n = rec:parse_json()
        rec.lens = #rec.a .. "," .. #rec.b .. "," .. #rec.c .. "," .. #rec.d
      end]], '{"a":"\\ud800","b":"x\\udc00","c":"\\ud83d\\ude00","d":"\\ud83dx\\u0000"}')
    assert.equals(4, r.n)
    assert.equals("\239\191\189", r.a)
    assert.equals("x\239\191\189", r.b)
    assert.equals("\240\159\152\128", r.c) -- a pair: one character
    assert.equals("\239\191\189x\0", r.d)
    assert.equals("3,4,4,5", r.lens)
    valid_json(line)
  end)

  it("takes a 1 MiB value and 1 MiB of nesting-free keys", function()
    local r = one(PJ:format(""), '{"big":"' .. ("q"):rep(MiB) .. '","x":1}')
    assert.equals(2, r.n)
    assert.equals(MiB, #r.big)
    local parts = {}
    for k = 1, 70000 do parts[k] = ('"key%05d":%d'):format(k, k) end
    local body = "{" .. table.concat(parts, ",") .. "}"
    assert.is_true(#body > MiB)
    r = one(PJ:format(""), body)
    assert.equals(70000, r.n)
    assert.equals(70000, r.key70000)
  end)

  it("lets the last of duplicate keys win, also among 40,000 keys given twice", function()
    local _, line = one(PJ:format(""), '{"a":1,"b":2,"a":"x","b":{"c":3}}')
    assert.truthy(line:find('"a":"x","b":{"c":3}', 1, true), line)
    local parts = {}
    for k = 1, 40000 do parts[k] = ('"k%d":%d'):format(k, k) end
    for k = 1, 40000 do parts[40000 + k] = ('"k%d":%d'):format(k, -k) end
    local t0 = os.clock()
    local r, big = one(PJ:format(""), "{" .. table.concat(parts, ",") .. "}")
    assert.equals(80000, r.n) -- members read
    assert.equals(1, select(2, big:gsub('"k1":', ""))) -- one field per key
    assert.equals(-1, r.k1)
    assert.equals(-40000, r.k40000)
    assert.truthy(os.clock() - t0 < 10, "40,000 duplicate keys took " .. (os.clock() - t0) .. " s")
  end)

  it("keeps 64-bit integers exact, and larger ones as written", function()
    local _, line = one([[
      function process(rec)
        rec:parse_json()
        rec.lua_a = rec.a
        rec.lua_t = type(rec.over)
      end]], '{"a":9007199254740993,"b":-9007199254740993,"m":{"x":18446744073709551615},"over":123456789012345678901234567890}')
    assert.truthy(line:find('"a":9007199254740993,', 1, true), line)
    assert.truthy(line:find('"b":-9007199254740993,', 1, true), line)
    assert.truthy(line:find('"m":{"x":18446744073709551615}', 1, true), line)
    assert.truthy(line:find('"over":123456789012345678901234567890,', 1, true), line)
    assert.truthy(line:find('"lua_a":9007199254740992', 1, true), line)
    assert.truthy(line:find('"lua_t":"number"', 1, true), line)
    _, line = one('function process(rec) rec:parse_json({ flatten = true }) end', '{"m":{"x":18446744073709551615}}')
    assert.truthy(line:find('"m.x":18446744073709551615', 1, true), line)
  end)

  it("raises at the script's line for bad options and arguments", function()
    fails_at(2, "rec:parse_json: options are a table, not a string", 'function process(rec)\n  rec:parse_json("body", "flat")\nend')
    fails_at(1, "rec:parse_json: flatten is true or a separator string", 'function process(rec) rec:parse_json({ flatten = 1 }) end')
    fails_at(1, "rec:parse_json: prefix is a string", 'function process(rec) rec:parse_json({ prefix = 2 }) end')
    fails_at(1, "rec:parse_json: the field name is a string, not a number", 'function process(rec) rec:parse_json(5) end')
  end)
end)

describe("rec:parse_logfmt", function()
  local LF = 'function process(rec) rec.n = rec:parse_logfmt(%s) end'

  it("sets nothing for empty or pair-less text, or a missing field", function()
    assert.equals(0, one(LF:format(""), "").n)
    assert.equals(0, one(LF:format(""), "   ").n)
    assert.equals(0, one(LF:format(""), '=x "quoted words" =').n)
    assert.equals(0, one(LF:format('"nope"'), "a=1").n)
  end)

  it("keeps invalid UTF-8 as bytes", function()
    local r, line = one([[
      function process(rec)
        rec.n = rec:parse_logfmt()
        rec.same = rec.k == "\255" and rec["\254"] == "v w"
      end]], 'k=\255 \254="v w"')
    assert.equals(2, r.n)
    assert.is_true(r.same)
    valid_json(line)
  end)

  it("keeps NUL bytes in keys and values", function()
    local r, line = one([[
      function process(rec)
        rec.n = rec:parse_logfmt()
        rec.same = rec.a == "x\0y" and rec.b == "q\0 r" and rec["k\0"] == "1"
      end]], 'a=x\0y b="q\0 r" k\0=1')
    assert.equals(3, r.n)
    assert.is_true(r.same)
    valid_json(line)
    r = one([[
      function process(rec)
        rec.n = rec:parse_kv(";", "=")
        rec.same = rec.a == "\0" and rec["\0"] == "b"
      end]], 'a=\0;\0=b')
    assert.equals(2, r.n)
    assert.is_true(r.same)
  end)

  it("decodes \\uXXXX escapes in quoted values to UTF-8, and keeps bad ones as written", function()
    -- Each value is compared in Lua (rec.ok_<k>) so that NUL and
    -- control bytes need no escaping here; the output must stay JSON.
    local cases = {
      { [[\u00e9]], "\195\169" },                       -- 2 bytes
      { [[\u20AC]], "\226\130\172" },                   -- 3 bytes, upper-case hex
      { [[\ud83d\ude00]], "\240\159\152\128" },         -- a surrogate pair: 4 bytes
      { [[\u001b[31m]], "\027[31m" },                   -- a control character, as Go writes it
      { [[a\u0000b]], "a\0b" },                         -- NUL
      { [[\u0022 \u005c]], '" \\' },                    -- a quote and a backslash
      { [[x\u12]], [[x\u12]] },                         -- truncated by the closing quote
      { [[x\u12zz]], [[x\u12zz]] },                     -- not hex
      { [[\ud83d]], [[\ud83d]] },                       -- a lone high surrogate
      { [[\ud83dx\ude00]], [[\ud83dx\ude00]] },         -- high, then not a \u: both lone
      { [[\ud83d\u0041]], [[\ud83dA]] },                -- high, then no low surrogate
      { [[\ude00]], [[\ude00]] },                       -- a lone low surrogate
      { [[\\u0041]], [[\u0041]] },                      -- an escaped backslash, then text
      { [[\u00e9\n\t\"\\\q]], "\195\169\n\t\"\\\\q" },  -- with the other escapes
    }
    local body, checks = {}, {}
    for k, c in ipairs(cases) do
      body[k] = ("v%d=\"%s\""):format(k, c[1])
      checks[k] = ("rec.ok_%d = rec.v%d == %q"):format(k, k, c[2])
    end
    local r, line = one("function process(rec)\n rec.n = rec:parse_logfmt()\n"
                        .. table.concat(checks, "\n") .. "\nend", table.concat(body, " "))
    assert.equals(#cases, r.n)
    for k, c in ipairs(cases) do
      assert.is_true(r["ok_" .. k], ("case %d: %s -> %q, got %q"):format(k, c[1], c[2], tostring(r["v" .. k])))
    end
    valid_json(line)
    -- A \u cut off by the end of an unclosed value, and a bare value
    -- (escapes are decoded in quoted values only).
    r = one([[
      function process(rec)
        rec.n = rec:parse_logfmt()
        rec.same = rec.a == "x\\u00e9" and rec.b == "\\u00"
      end]], [[a=x\u00e9 b="\u00]])
    assert.equals(2, r.n)
    assert.is_true(r.same)
    r = one([[
      function process(rec)
        rec.n = rec:parse_logfmt()
        rec.same = rec.c == "\\"
      end]], [[c="\]])
    assert.is_true(r.same)
  end)

  it("takes a 1 MiB quoted value and 1 MiB of pairs", function()
    local r = one(LF:format(""), 'a=1 big="' .. ("x\\\""):rep(350000) .. '" z=2')
    assert.equals(3, r.n)
    assert.equals(700000, #r.big)
    assert.equals('x"', r.big:sub(1, 2))
    assert.equals("2", r.z)
    local parts = {}
    for k = 1, 80000 do parts[k] = ("k%05d=%d"):format(k, k) end
    r = one(LF:format(""), table.concat(parts, " "))
    assert.equals(80000, r.n)
    assert.equals("80000", r.k80000)
  end)

  it("keeps 64-bit integers as their exact text", function()
    local _, line = one(LF:format(""), "id=18446744073709551615 m=9007199254740993")
    assert.truthy(line:find('"id":"18446744073709551615"', 1, true), line)
    assert.truthy(line:find('"m":"9007199254740993"', 1, true), line)
  end)

  it("raises at the script's line for a bad argument", function()
    fails_at(2, "rec:parse_logfmt: the field name is a string, not a table", 'function process(rec)\n  rec:parse_logfmt({})\nend')
  end)
end)

describe("rec:parse_kv", function()
  local KV = 'function process(rec) rec.n = rec:parse_kv(%s) end'

  it("sets nothing for empty or pair-less text", function()
    assert.equals(0, one(KV:format('"; ", "="'), "").n)
    assert.equals(0, one(KV:format('"; ", "="'), "no pairs; at all; =x").n)
    assert.equals(0, one(KV:format('"nope"'), "a=1").n)
  end)

  it("keeps invalid UTF-8 as bytes", function()
    local r, line = one([[
      function process(rec)
        rec.n = rec:parse_kv("&", "=")
        rec.same = rec.a == "\255\254" and rec["\192"] == "1"
      end]], "a=\255\254&\192=1")
    assert.equals(2, r.n)
    assert.is_true(r.same)
    valid_json(line)
  end)

  it("takes a 1 MiB value", function()
    local r = one(KV:format('"&", "="'), "a=1&big=" .. ("y"):rep(MiB) .. "&z=2")
    assert.equals(3, r.n)
    assert.equals(MiB, #r.big)
    assert.equals("2", r.z)
  end)

  it("keeps 64-bit integers as their exact text", function()
    local _, line = one(KV:format(""), "id=18446744073709551615")
    assert.truthy(line:find('"id":"18446744073709551615"', 1, true), line)
  end)

  it("raises at the script's line for bad separators and arguments", function()
    fails_at(2, "rec:parse_kv: the separators are non-empty strings", 'function process(rec)\n  rec:parse_kv("body", "", "=")\nend')
    fails_at(1, "rec:parse_kv: the separators are non-empty strings", 'function process(rec) rec:parse_kv(" ", 5) end')
    fails_at(1, "rec:parse_kv: the field name is a string, not a number", 'function process(rec) rec:parse_kv(5, " ", "=") end')
  end)
end)

describe("rec:parse_csv", function()
  it("sets nothing for empty text or a missing field", function()
    local r = one('function process(rec) rec.n = rec:parse_csv({ "a", "b" }) end', "")
    assert.equals(0, r.n)
    assert.is_nil(r.a)
    r = one('function process(rec) rec.n = rec:parse_csv({ "a" }, ",", "nope") end', "x")
    assert.equals(0, r.n)
  end)

  it("says where quoting is broken", function()
    local r = one('function process(rec) rec.n, rec.err = rec:parse_csv({ "a", "b" }) end', 'x,"y"z')
    assert.is_nil(r.n)
    assert.truthy(r.err:find("column 2", 1, true), r.err)
  end)

  it("keeps invalid UTF-8 as bytes", function()
    local r, line = one([[
      local COLS = { "a", "b" }
      function process(rec)
        rec.n = rec:parse_csv(COLS)
        rec.same = rec.a == "\255" and rec.b == "x,\254"
      end]], '\255,"x,\254"')
    assert.equals(2, r.n)
    assert.is_true(r.same)
    valid_json(line)
  end)

  it("takes a 1 MiB quoted column", function()
    local r = one('local C = { "a", "big", "z" }\nfunction process(rec) rec.n = rec:parse_csv(C) end',
                  '1,"' .. ('w""'):rep(350000) .. '",2')
    assert.equals(3, r.n)
    assert.equals(700000, #r.big)
    assert.equals('w"', r.big:sub(1, 2))
  end)

  it("keeps numbers beyond a double's range as their text", function()
    local r = one('local C = { "a:float", "b:int" } function process(rec) rec:parse_csv(C) end', "1e400,-1e400")
    assert.equals("1e400", r.a)
    assert.equals("-1e400", r.b)
  end)

  it("keeps 64-bit integer columns exact", function()
    local _, line = one('local C = { "a:int", "b:int", "c:int" }\nfunction process(rec) rec:parse_csv(C) end',
                        "9007199254740993,-9223372036854775808,18446744073709551615")
    assert.truthy(line:find('"a":9007199254740993,', 1, true), line)
    assert.truthy(line:find('"b":-9223372036854775808,', 1, true), line)
    assert.truthy(line:find('"c":18446744073709551615', 1, true), line)
  end)

  it("raises at the script's line for bad columns and separators", function()
    fails_at(2, "rec:parse_csv: columns is a list of names, not a string", 'function process(rec)\n  rec:parse_csv("a,b")\nend')
    fails_at(1, "rec:parse_csv: column 2 is a number", 'function process(rec) rec:parse_csv({ "a", 7 }) end')
    fails_at(1, "rec:parse_csv: a column name holds a NUL byte", 'function process(rec) rec:parse_csv({ "a\\0b" }) end')
    fails_at(1, "rec:parse_csv: the separator is one byte other than '\"'", 'function process(rec) rec:parse_csv({ "a" }, \'"\') end')
    fails_at(1, "rec:parse_csv: the field name is a string, not a number", 'function process(rec) rec:parse_csv({ "a" }, ",", 5) end')
  end)
end)

describe("lugger.parse_time and rec:set_time", function()
  local NAMES = { "rfc3339", "iso8601", "nginx", "apache", "syslog", "epoch", "epoch_ms",
                  "epoch_us", "epoch_ns", "%Y-%m-%d %H:%M:%S %z" }

  -- {parse_time's result or message, set_time's, the record's time after}
  local function both(s, fmt)
    local r = one(([[
      function process(rec)
        local v, err = lugger.parse_time(%q, %q)
        rec.p = v or err
        local ok, serr = rec:set_time(%q, %q)
        rec.s = ok or serr
      end]]):format(s, fmt, s, fmt), "x")
    return r.p, r.s, r.time
  end

  it("return nil and a message for empty, blank and non-time text in every format", function()
    local before = H.out(H.run("function process() end", { "x" }), 0).time
    for _, fmt in ipairs(NAMES) do
      for _, s in ipairs({ "", " ", "garbage", "\255\254\253", "2024-05-01T12:00:00Z trailing" }) do
        local p, st, t = both(s, fmt)
        assert.equals("string", type(p), fmt .. " " .. s)
        assert.equals(p, st)
        assert.is_nil(p:find("\255", 1, true)) -- the message quotes no raw bytes
        assert.equals(#before, #t) -- the record's time (when it was read) is left
      end
    end
  end)

  it("say at which byte a 1 MiB text stops being a time", function()
    local p, s = both("2024-05-01T12:00:00Z" .. (" "):rep(MiB), "%Y-%m-%dT%H:%M:%SZ")
    assert.equals("unexpected text at byte 21", p)
    assert.equals(p, s)
    p = both(("9"):rep(MiB), "epoch")
    assert.truthy(#p < 200, p)
    p = both(("1"):rep(MiB), "%Y")
    assert.truthy(#p < 200, p)
  end)

  it("give a format without a year the syslog rule's year", function()
    local now = os.time()
    local this = os.date("!*t", now).year
    local ahead = now + 5 * 86400
    local text = os.date("!%b %d %H:%M:%S", ahead)
    -- 5 days ahead in this year: last year's; past the new year: this
    -- year's date, which is then behind
    local want = os.date("!*t", ahead).year == this and this - 1 or this
    local p, s, t = both(text, "%b %d %H:%M:%S")
    assert.equals("number", type(p))
    assert.is_true(s)
    assert.equals(tostring(want), t:sub(1, 4))
    t = select(3, both(os.date("!%m-%d %H:%M", now), "%m-%d %H:%M"))
    assert.equals(tostring(this), t:sub(1, 4))
  end)

  it("keep nanoseconds past 2^53 exact in rec:set_time", function()
    local p, s, t = both("1714564800123456789", "epoch_ns")
    assert.is_true(s)
    assert.equals("2024-05-01T12:00:00.123456789Z", t)
    assert.truthy(math.abs(p - 1714564800123456789) <= 256) -- a double: ~256 ns apart
    local _, s2, t2 = both("2262-04-11T23:47:16.854775807Z", "rfc3339")
    assert.is_true(s2)
    assert.equals("2262-04-11T23:47:16.854775807Z", t2) -- the last int64 nanosecond
    p, s = both("2262-04-11T23:47:16.854775808Z", "rfc3339")
    assert.equals("string", type(p))
    assert.equals(p, s)
    local r = one("function process(rec) rec:set_time(-2^63) end", "x")
    assert.equals("1677-09-21T00:12:43.145224192Z", r.time)
  end)

  it("reject days a month does not have, in every format with a date", function()
    local cases = {
      { "2024-02-30T00:00:00Z", "rfc3339" }, { "2023-02-29T00:00:00Z", "rfc3339" },
      { "2024-04-31T00:00:00+02:00", "rfc3339" }, { "2024-02-30T00:00:00Z", "iso8601" },
      { "30/Feb/2024:00:00:00 +0000", "nginx" }, { "2023-02-29", "%Y-%m-%d" },
    }
    for _, c in ipairs(cases) do
      local p, s = both(c[1], c[2])
      assert.equals("string", type(p), c[1] .. " " .. c[2])
      assert.equals(p, s)
    end
    local _, s, t = both("2024-02-29T00:00:00Z", "rfc3339")
    assert.is_true(s)
    assert.equals("2024-02-29T00:00:00.000000000Z", t)
    -- rec.time = text, and a JSON body's "time" (then kept as a field)
    local b, failed = H.run('function process(rec) rec.time = "2024-02-30T00:00:00Z" end', { "x" })
    assert.equals(1, failed)
    assert.truthy(H.error(b, 0):find("is not an RFC 3339 time", 1, true))
    local r = one("function process(rec) rec.n = rec:parse_json() end", '{"time":"2023-02-29T00:00:00Z"}')
    assert.equals("2023-02-29T00:00:00Z", r.time)
  end)

  it("read the int64 ends of the epoch formats, and negative %s with a fraction", function()
    local _, s, t = both("-9223372036854775808", "epoch_ns")
    assert.is_true(s)
    assert.equals("1677-09-21T00:12:43.145224192Z", t)
    _, s, t = both("-1.5", "%s.%f")
    assert.is_true(s)
    assert.equals("1969-12-31T23:59:58.500000000Z", t)
    local p = both("-9223372036854775809", "epoch_ns")
    assert.equals("string", type(p))
  end)

  it("truncate fractions of 10 to 30 digits to nanoseconds (RFC 3339: any number)", function()
    for _, fmt in ipairs({ "rfc3339", "iso8601", "%Y-%m-%dT%H:%M:%S.%f%z" }) do
      for nd = 10, 30 do
        local frac = ("123456789" .. ("9"):rep(30)):sub(1, nd)
        local p, s, t = both("2024-05-01T12:00:00." .. frac .. "Z", fmt)
        assert.equals("number", type(p), fmt .. " " .. nd .. ": " .. tostring(p))
        assert.is_true(s)
        assert.equals("2024-05-01T12:00:00.123456789Z", t)
      end
      -- .9999999999 is not rounded into the next second
      local _, _, t = both("2024-12-31T23:59:59.99999999999999999999+00:00", fmt)
      assert.equals("2024-12-31T23:59:59.999999999Z", t)
      for _, bad in ipairs({ "2024-05-01T12:00:00.12345678901x", "2024-05-01T12:00:00.1234567890123Z0",
                             "2024-05-01T12:00:00.Z", "2024-05-01T12:00:00.", "2024-05-01T12:00:00.+00:00" }) do
        local p, s = both(bad, fmt)
        assert.equals("string", type(p), fmt .. " " .. bad)
        assert.equals(p, s)
      end
    end
  end)

  it("raise at the script's line for bad formats and arguments", function()
    fails_at(2, "lugger.parse_time: the format is a string", 'function process(rec)\n  lugger.parse_time("x", 5)\nend')
    fails_at(1, "lugger.parse_time: unknown directive '%Q' in format", 'function process(rec) lugger.parse_time("x", "%Y %Q") end')
    fails_at(1, "rec:set_time: the format is a string", 'function process(rec) rec:set_time("x", {}) end')
    fails_at(1, "rec:set_time: unknown time format 'rfc3389'", 'function process(rec) rec:set_time("x", "rfc3389") end')
    fails_at(1, "rec:set_time: 9.2233720368548e+18 is not a number of nanoseconds", 'function process(rec) rec:set_time(2^63) end')
    fails_at(1, "rec:set_time: nan is not a number of nanoseconds", 'function process(rec) rec:set_time(0/0) end')
  end)
end)
