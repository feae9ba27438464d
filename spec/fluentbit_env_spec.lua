-- What a Fluent Bit filter's environment holds (lugger.sandbox with
-- compat options, lugger.cjson): per-script string methods, os.getenv,
-- require of Lua source modules, cjson.
local H = require("helper")
local cjson_mod = require("lugger.cjson")

local function fb(src, recs, opts, path)
  return H.run({ { src = src, compat = "fluent-bit", call = "cb", compat_opts = opts,
                   path = path } }, recs)
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. d) == 0)
  return d
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

describe("a Fluent Bit filter's string extensions", function()
  it("work as methods in that script only, never in another or the host", function()
    local rt, ok, err = H.runtime({
      { src = [[
          function string.shout(s) return s:upper() .. "!" end
          function cb(tag, ts, r) r.a = r.log:shout(); return 2, ts, r end]],
        compat = "fluent-bit", call = "cb" },
      { src = [[
          function cb(tag, ts, r)
            r.b = tostring(pcall(function() return r.log:shout() end))
            return 2, ts, r
          end]], compat = "fluent-bit", call = "cb" },
    })
    assert(ok, err)
    local b = H.batch.new({ "hi" })
    assert.equals(0, rt.run(0, b))
    local o = H.out(b, 0)
    assert.equals("HI!", o.a)
    assert.equals("false", o.b)
    assert.is_nil(string.shout) -- luacheck: ignore 143
    assert.is_nil(("x").shout)
  end)

  it("are put back after a filter error", function()
    local b, failed = fb([[
      function string.boom(s) error("no") end
      function cb(tag, ts, r) return 2, ts, { log = r.log:boom() } end]], { "x" })
    assert.equals(1, failed)
    assert.is_true(H.failed(b, 0))
    assert.is_nil(("x").boom)
  end)
end)

describe("os.getenv in a Fluent Bit filter", function()
  it("reads the environment, or only the getenv option's names", function()
    local home = os.getenv("HOME")
    local b = fb([[function cb(tag, ts, r)
        r.home = os.getenv("HOME"); r.path_set = os.getenv("PATH") ~= nil
        return 2, ts, r end]], { "x" })
    assert.equals(home, H.out(b, 0).home)
    b = fb([[function cb(tag, ts, r)
        r.home = os.getenv("HOME") or "hidden"; r.path_set = os.getenv("PATH") ~= nil
        return 2, ts, r end]], { "x" }, '{"getenv":"HOME"}')
    assert.equals(home, H.out(b, 0).home)
    assert.is_false(H.out(b, 0).path_set)
  end)

  it("is not given to lugger scripts", function()
    local b = H.run("function process(rec) rec.g = type(os.getenv) end", { "x" })
    assert.equals("nil", H.out(b, 0).g)
  end)
end)

describe("require in a Fluent Bit filter", function()
  it("loads Lua source modules next to the script, once, into its sandbox", function()
    local d = tmpdir()
    write(d .. "/m.lua", "count = (count or 0) + 1\nreturn { io = type(io), ffi = type(ffi) }\n")
    local b, failed = fb([[
      local m = require("m"); local m2 = require("m")
      function cb(tag, ts, r)
        r.same = m == m2; r.count = count; r.io = m.io; r.ffi = m.ffi
        return 2, ts, r
      end]], { "x" }, nil, d .. "/f.lua")
    assert.equals(0, failed)
    assert.same({ body = "x", same = true, count = 1, io = "nil", ffi = "nil",
                  time = "1970-01-01T00:00:00.000000000Z" }, H.out(b, 0))
  end)

  it("refuses bytecode files and finds no C modules", function()
    local d = tmpdir()
    local f = assert(io.open(d .. "/bc.lua", "wb"))
    f:write("\27LJ\2junk")
    f:close()
    local _, ok, err = H.runtime({ { src = 'require("bc")\nfunction cb() end',
      compat = "fluent-bit", call = "cb", path = d .. "/f.lua" } })
    assert.is_nil(ok)
    assert.truthy(err:find("bytecode cannot be loaded", 1, true))
    _, ok, err = H.runtime({ { src = 'require("socket.core")\nfunction cb() end',
      compat = "fluent-bit", call = "cb", path = d .. "/f.lua" } })
    assert.is_nil(ok)
    assert.truthy(err:find("module 'socket.core' not found", 1, true))
    assert.truthy(err:find("no file '" .. d .. "/socket/core.lua'", 1, true))
  end)

  it("searches an edited package.path and package_path", function()
    local d = tmpdir()
    assert(os.execute("mkdir -p " .. d .. "/lib " .. d .. "/extra") == 0)
    write(d .. "/lib/a.lua", "return 'a'")
    write(d .. "/extra/b.lua", "return 'b'")
    local b, failed = fb([[
      package.path = package.path .. ";./lib/?.lua"
      local a, b = require("a"), require("b")
      function cb(tag, ts, r) r.v = a .. b; return 2, ts, r end]], { "x" },
      '{"package_path":"' .. d .. '/extra/?.lua"}', d .. "/f.lua")
    assert.equals(0, failed)
    assert.equals("ab", H.out(b, 0).v)
  end)
end)

describe("lugger.cjson", function()
  local cjson = cjson_mod.new()

  it("encodes as lua-cjson does by default", function()
    assert.equals('{"a":"\\/x","b":[1,2],"c":{},"d":[],"e":null}',
      cjson.encode({ a = "/x", b = { 1, 2 }, c = {}, d = cjson.empty_array, e = cjson.null }))
    assert.equals("[1,null,3]", cjson.encode({ 1, nil, 3 }))
    assert.equals("0.1", cjson.encode(0.1))
    assert.has_error(function() cjson.encode({ [1] = 1, [20] = 2 }) end,
      "Cannot serialise table: excessively sparse array")
    assert.has_error(function() cjson.encode(function() end) end)
    assert.has_error(function() cjson.encode(0 / 0) end)
  end)

  it("takes the common options", function()
    local c = cjson_mod.new()
    c.encode_escape_forward_slash(false)
    c.encode_empty_table_as_object(false)
    assert.equals('["/"]', c.encode({ "/" }))
    assert.equals("[]", c.encode({}))
    c.encode_sparse_array(true)
    assert.equals('{"1":1,"20":2}', c.encode({ [1] = 1, [20] = 2 }))
    assert.equals(3, c.encode_number_precision(3))
    assert.equals("3.14", c.encode(3.14159))
    c.decode_array_with_array_mt(true)
    assert.equals(c.array_mt, getmetatable(c.decode("[]")))
    -- Settings belong to one module table.
    assert.equals('"\\/"', cjson.encode("/"))
  end)

  it("decodes to plain tables with cjson.null", function()
    local v = cjson.decode('{"a":[1,"x",null],"b":{"c":true},"n":null}')
    assert.same({ 1, "x", cjson.null }, v.a)
    assert.is_nil(getmetatable(v.a))
    assert.is_true(v.b.c)
    assert.equals(cjson.null, v.n)
    assert.has_error(function() cjson.decode("{bad") end)
    local safe = cjson.safe
    local r, err = safe.decode("{bad")
    assert.is_nil(r)
    assert.truthy(err)
  end)
end)

describe("trusted code under a filter's string table", function()
  it("does not call a script's replacement of string functions", function()
    local d = tmpdir()
    write(d .. "/m.lua", "return 'module'")
    local b, failed = fb([[
      function string.gsub() error("user gsub called") end
      function string.sub() error("user sub called") end
      function string.find() error("user find called") end
      local m = require("m")
      function cb(tag, ts, r) r.m = m; return 2, ts, r end]], { "x" },
      '{"tag":"kube.*"}', d .. "/f.lua")
    assert.equals(0, failed)
    assert.equals("module", H.out(b, 0).m)
  end)

  it("reads only .lua files through require", function()
    local d = tmpdir()
    write(d .. "/secret", "root:x:0:0")
    local _, ok, err = H.runtime({ { src = 'package.path = "' .. d .. '/?"\nrequire("secret")\nfunction cb() end',
      compat = "fluent-bit", call = "cb", path = d .. "/f.lua" } })
    assert.is_nil(ok)
    assert.truthy(err:find("module 'secret' not found", 1, true))
    assert.falsy(err:find("root", 1, true))
  end)
end)
