-- The sandbox: what a user script can and cannot reach.
local H = require("helper")

-- Runs `body` (a Lua expression list) in the sandbox inside process() and
-- returns the decoded output record, whose field `r` holds the result of
-- each check as a string.
local function probe(checks)
  local lines = { "local results = {}", "local function try(name, f)",
    "  local ok, v = pcall(f)",
    "  results[#results + 1] = name .. '=' .. (ok and ('ok:' .. tostring(v)) or ('error:' .. tostring(v)))",
    "end" }
  for name, code in pairs(checks) do
    lines[#lines + 1] = ("try(%q, function() %s end)"):format(name, code)
  end
  lines[#lines + 1] = "function process(rec) for _, r in ipairs(results) do local k, v = r:match('^([^=]+)=(.*)$') rec[k] = v end end"
  local b, failed = H.run(table.concat(lines, "\n"), { "x" })
  assert.equals(0, failed)
  return H.out(b, 0)
end

describe("the sandbox", function()
  it("has no ffi, io, debug, jit, package or dangerous os functions", function()
    local out = probe({
      ffi = "return ffi",
      io = "return io",
      debug = "return debug",
      jit = "return jit",
      package = "return package",
      os_execute = "return os.execute",
      os_exit = "return os.exit",
      os_getenv = "return os.getenv",
      os_remove = "return os.remove",
      os_time = "return type(os.time())",
      os_date = "return os.date('!%Y', 0)",
      g_ffi = "return _G.ffi",
    })
    for _, k in ipairs({ "ffi", "io", "debug", "jit", "package", "os_execute",
                         "os_exit", "os_getenv", "os_remove", "g_ffi" }) do
      assert.equals("ok:nil", out[k], k)
    end
    assert.equals("ok:number", out.os_time)
    assert.equals("ok:1970", out.os_date)
  end)

  it("has no raw access, environments, GC control or file loading", function()
    local out = probe({
      rawset = "return rawset", rawget = "return rawget",
      getfenv = "return getfenv", setfenv = "return setfenv",
      collectgarbage = "return collectgarbage", gcinfo = "return gcinfo",
      newproxy = "return newproxy", dofile = "return dofile",
      loadfile = "return loadfile", module = "return module",
    })
    for k, v in pairs(out) do
      if k ~= "time" and k ~= "body" then assert.equals("ok:nil", v, k) end
    end
  end)

  it("cannot require modules other than lugger", function()
    local out = probe({
      ffi = "return require('ffi')",
      io = "return require('io')",
      jit = "return require('jit.util')",
      driver = "return require('lugger.driver')",
      lugger = "return require('lugger') == lugger",
    })
    for _, k in ipairs({ "ffi", "io", "jit", "driver" }) do
      assert.truthy(out[k]:find("^error:.*scripts can only require 'lugger'"), k)
    end
    assert.equals("ok:true", out.lugger)
  end)

  it("cannot dump or load bytecode", function()
    local out = probe({
      dump = "return string.dump",
      method_dump = "return ('').dump",
      load_b = "return load('\\27LJ\\2\\0', 'x', 'b')",
      load_bt = "return load('\\27LJ\\2\\0', 'x', 'bt')",
      load_bin = "local f, e = load('\\27LJ\\2\\0') return e",
      loadstring_bin = "local f, e = loadstring('\\27LJ\\2\\0') return e",
      reader_bin = "local done local f, e = load(function() if not done then done = true return '\\27LJ\\2\\0' end end) return e",
      text_ok = "return load('return 1 + 1')()",
      text_env = "return load('return io')()",
    })
    assert.equals("ok:nil", out.dump)
    assert.equals("ok:nil", out.method_dump)
    assert.truthy(out.load_b:find("^error:.*only text chunks"))
    assert.truthy(out.load_bt:find("^error:.*only text chunks"))
    assert.truthy(out.load_bin:find("wrong mode", 1, true))
    assert.truthy(out.loadstring_bin:find("wrong mode", 1, true))
    assert.truthy(out.reader_bin:find("wrong mode", 1, true))
    assert.equals("ok:2", out.text_ok)
    assert.equals("ok:nil", out.text_env)
  end)

  it("removed string.dump from the real string table", function()
    assert.is_nil(string.dump)
    assert.is_nil(("").dump)
  end)

  it("protects the string metatable and the real string table", function()
    local out = probe({
      mt = "return type(getmetatable(''))",
      mt_index = "return getmetatable('').__index",
      set_mt = "return setmetatable('', {})",
      own_string = "string.upper = nil; return ('a'):upper()",
      own_string_rep = "string.rep = function() return 'evil' end; return ('a'):rep(2)",
    })
    assert.equals("ok:string", out.mt)
    assert.equals("ok:nil", out.mt_index)
    assert.truthy(out.set_mt:find("^error:"))
    assert.equals("ok:A", out.own_string)
    assert.equals("ok:aa", out.own_string_rep)
    assert.equals("aa", ("a"):rep(2))
  end)

  it("does not let getmetatable tricks reach a record's internals", function()
    local b, failed = H.run([[
      function process(rec)
        rec.mt = tostring(getmetatable(rec))
        rec.set = select(2, pcall(setmetatable, rec, nil))
        rec.rawget = tostring(rawget)
        rec.index = tostring(rec.__index)
        rec.null_mt = tostring(getmetatable(lugger.null))
        rec.null_set = select(2, pcall(function() lugger.null.x = 1 end))
      end]], { "x" })
    assert.equals(0, failed)
    local out = H.out(b, 0)
    assert.equals("lugger.record", out.mt)
    assert.truthy(out.set:find("protected metatable", 1, true))
    assert.equals("nil", out.rawget)
    assert.equals("nil", out.index)
    assert.equals("lugger.null", out.null_mt)
    assert.truthy(out.null_set:find("read-only", 1, true))
  end)

  it("keeps a tampered record proxy inside its batch", function()
    local b, failed = H.run([[
      function process(rec)
        if rec.body == "a" then rec[1] = 1e9 end
        if rec.body == "b" then rec[1] = -1 end
        if rec.body == "c" then rec[1] = "x" end
        local v = rec.body
      end]], { "a", "b", "c", "d" })
    assert.equals(3, failed)
    for i = 0, 2 do
      assert.truthy(H.error(b, i):find("field names are strings, not numbers", 1, true))
    end
    assert.is_false(H.failed(b, 3))
  end)

  it("never lets a numeric key point a record proxy at another record", function()
    -- rec[1] and rec[2] once were the proxy's own slots (index, epoch):
    -- writing them changed which record the next writes went to.
    local b, failed = H.run([[
      function process(rec)
        if rec.body == "b" then
          local ok = pcall(function() rec[1] = 0 end)
          rec.tampered = tostring(ok)
          rec.body = "b2"
          rec[2] = 0
        end
      end]], { "a", "b", "c" })
    assert.equals(1, failed)
    assert.equals("a", H.out(b, 0).body)
    assert.is_nil(H.out(b, 0).tampered)
    assert.truthy(H.error(b, 1):find("field names are strings, not numbers", 1, true))
    assert.equals("c", H.out(b, 2).body)
  end)

  it("refuses pairs and next on a record or a batch, with the script line", function()
    local b, failed = H.run([[
      function process(rec)
        if rec.body == "t" then
          local n = 0
          for _ in pairs({ a = 1, b = 2 }) do n = n + 1 end
          rec.n = n + (next({ x = 1 }) and 1 or 0)
          return
        end
        if rec.body == "n" then return next(rec) end
        for k, v in pairs(rec) do rec[k] = v end
      end]], { "t", "p", "n" })
    assert.equals(2, failed)
    assert.equals(3, H.out(b, 0).n)
    assert.truthy(H.error(b, 1):find(":9: pairs(rec): a record is not a Lua table", 1, true))
    assert.truthy(H.error(b, 2):find("next(rec): a record is not a Lua table", 1, true))
    b, failed = H.run([[
      function process_batch(batch)
        for _ in pairs(batch) do end
      end]], { "a" })
    assert.equals(1, failed)
    assert.truthy(H.error(b, 0):find(":2: pairs(batch): a batch is not a Lua table; "
                                     .. "loop over batch:records()", 1, true))
  end)

  it("gives scripts the lugger table", function()
    local out = probe({
      enc = "return lugger.json_encode({ a = { 1, 2 }, b = lugger.null })",
      dec = "return lugger.json_decode('{\"a\":[1,2]}').a[2]",
      dec_err = "return select(2, lugger.json_decode('{'))",
      enc_err = "return select(2, lugger.json_encode(print))",
      version = "return lugger.version",
      log = "lugger.log('hello from a spec', 'debug') return 'logged'",
      print = "print('hello', 'from print') return 'printed'",
    })
    assert.equals('ok:{"a":[1,2],"b":null}', out.enc)
    assert.equals("ok:2", out.dec)
    assert.truthy(out.dec_err:find("^ok:json: "))
    assert.truthy(out.enc_err:find("cannot encode a function", 1, true))
    assert.equals("ok:0.1.0", out.version)
    assert.equals("ok:logged", out.log)
    assert.equals("ok:printed", out.print)
  end)
  it("has no package.loadlib or C module loader", function()
    local out = probe({
      loadlib = "return package.loadlib('libc.so.6', 'system')",
      req_c = "return require('socket.core')",
      preload = "return require('lugger.sandbox')",
    })
    assert.truthy(out.loadlib:find("^error:.*package"), out.loadlib)
    assert.truthy(out.req_c:find("^error:.*scripts can only require 'lugger'"))
    assert.truthy(out.preload:find("^error:.*scripts can only require 'lugger'"))
  end)

  it("does not let metatable tricks or rawset change the record or the API", function()
    local b, failed = H.run([[
      local other
      function process(rec)
        rec.mt_set = select(2, pcall(function() getmetatable(rec).__index = {} end))
        rec.mt_new = select(2, pcall(function() getmetatable(rec).__newindex = nil end))
        rec.rawset_rec = select(2, pcall(function() rawset(rec, "x", 1) end))
        rec.rawset_api = select(2, pcall(function() rawset(lugger, "null", 1) end))
        rec.setmt_api = tostring(pcall(setmetatable, lugger.null, {}))
        rec.proxy_meta = select(2, pcall(function() return getmetatable(rec).__metatable end))
        -- A script's own lugger table is its own: changing it changes
        -- nothing for the runtime (records still encode null as null).
        lugger.null = "changed"
        rec.n = nil
        rec.still = "ok"
      end]], { "x" })
    assert.equals(0, failed)
    local out = H.out(b, 0)
    assert.truthy(out.mt_set:find("attempt to index", 1, true), out.mt_set)
    assert.truthy(out.mt_new:find("attempt to index", 1, true), out.mt_new)
    assert.truthy(out.rawset_rec:find("attempt to call", 1, true), out.rawset_rec)
    assert.truthy(out.rawset_api:find("attempt to call", 1, true), out.rawset_api)
    assert.equals("false", out.setmt_api)
    assert.equals("ok", out.still)
  end)

  it("turns a record kept in a coroutine across batches into an error", function()
    local rt, ok, err = H.runtime([[
      local co
      function process(rec)
        if co == nil then
          co = coroutine.wrap(function()
            local kept = rec
            coroutine.yield()
            coroutine.yield(kept.body)
          end)
          co()
          return
        end
        rec.from_old_batch = co()
      end]])
    assert(ok, err)
    local batch = require("lugger.batch")
    local b1 = batch.new({ "first" })
    assert.equals(0, rt.run(0, b1))
    local b2 = batch.new({ "second" })
    assert.equals(1, rt.run(0, b2))
    assert.truthy(H.error(b2, 0):find("record used after its batch is gone", 1, true),
      H.error(b2, 0))
    -- The runtime goes on; the script's coroutine died with the error.
    local b3 = batch.new({ "third" })
    assert.equals(1, rt.run(0, b3))
    assert.truthy(H.error(b3, 0):find("dead coroutine", 1, true), H.error(b3, 0))
  end)

  it("passes the watchdog's timeout error through pcall, xpcall and coroutine.resume", function()
    local b, failed = H.run([[
      function process(rec)
        local fake = "s.lua:1: script_timeout: no progress"
        if rec.body == "pcall" then pcall(error, fake, 0) end
        if rec.body == "xpcall" then
          xpcall(function() error(fake, 0) end, function() rec.handler_ran = true end)
        end
        if rec.body == "resume" then
          coroutine.resume(coroutine.create(function() error(fake, 0) end))
        end
        if rec.body == "other" then
          rec.caught = select(2, pcall(error, "an ordinary error", 0))
        end
      end]], { "pcall", "xpcall", "resume", "other" })
    assert.equals(3, failed)
    for i = 0, 2 do
      assert.truthy(H.error(b, i):find("script_timeout: no progress", 1, true), H.error(b, i))
    end
    assert.equals("an ordinary error", H.out(b, 3).caught)
  end)

  it("keeps loaded chunks from posing as the trusted runtime", function()
    local sandbox = require("lugger.sandbox")
    local env = sandbox.env("x.lua")
    local f = env.load("return 1", "@lua/lugger/driver.lua")
    assert.equals("=@lua/lugger/driver.lua", debug.getinfo(f, "S").source)
    local g = env.load("return 1", "@mine.lua")
    assert.equals("@mine.lua", debug.getinfo(g, "S").source)
  end)

  it("fails a record on unbounded recursion and goes on", function()
    local b, failed = H.run([[
      function process(rec)
        if rec.body == "deep" then
          local function f(n) return 1 + f(n + 1) end
          rec.depth = f(1)
        end
        rec.ok = true
      end]], { "a", "deep", "b" })
    assert.equals(1, failed)
    assert.truthy(H.error(b, 1):find("stack overflow", 1, true), H.error(b, 1))
    assert.is_true(H.out(b, 0).ok)
    assert.is_true(H.out(b, 2).ok)
  end)
end)
