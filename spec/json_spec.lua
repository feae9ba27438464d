-- lugger.json: the encoder and decoder behind table fields, init(params)
-- and lugger.json_encode / json_decode.
local json = require("lugger.json")

describe("json.encode", function()
  it("writes scalars", function()
    assert.equals('"a"', json.encode("a"))
    assert.equals("1", json.encode(1))
    assert.equals("-3", json.encode(-3))
    assert.equals("0.1", json.encode(0.1))
    assert.equals("1e+300", json.encode(1e300))
    assert.equals("0.30000000000000004", json.encode(0.1 + 0.2))
    assert.equals("true", json.encode(true))
    assert.equals("null", json.encode(json.null))
    assert.equals("null", json.encode(0 / 0))
    assert.equals("null", json.encode(math.huge))
  end)

  it("escapes strings as the record encoder does", function()
    assert.equals('"a\\"b\\\\c\\n\\u0001"', json.encode('a"b\\c\n\1'))
    assert.equals('"é"', json.encode("é"))
    assert.equals('"\239\191\189x"', json.encode("\255x")) -- invalid UTF-8 -> U+FFFD
  end)

  it("tells arrays from objects, sorting object keys", function()
    assert.equals("[1,2,3]", json.encode({ 1, 2, 3 }))
    assert.equals('{"a":1,"b":[true]}', json.encode({ b = { true }, a = 1 }))
    assert.equals("{}", json.encode({}))
    assert.equals("[]", json.encode(json.array()))
    assert.equals('{"1":"a","3":"c"}', json.encode({ [1] = "a", [3] = "c" }))
  end)

  it("rejects what JSON cannot hold", function()
    assert.has_error(function() json.encode(print) end, "json: cannot encode a function")
    local t = {}
    t.self = t
    assert.has_error(function() json.encode(t) end)
    assert.has_error(function() json.encode({ [true] = 1 }) end)
  end)
end)

describe("json.decode", function()
  it("reads values", function()
    assert.same({ a = { 1, 2.5, "x" }, b = true, c = false }, json.decode('{"a":[1,2.5,"x"],"b":true,"c":false}'))
    assert.equals(json.null, json.decode("null"))
    assert.equals(-1.5e3, json.decode(" -1.5e3 "))
    assert.equals("a\"b\\/\n\t", json.decode('"a\\"b\\\\\\/\\n\\t"'))
  end)

  it("reads \\u escapes, surrogate pairs included", function()
    assert.equals("é", json.decode('"\\u00e9"'))
    assert.equals("😀", json.decode('"\\ud83d\\ude00"'))
    assert.equals("\239\191\189", json.decode('"\\ud83d"'))
  end)

  it("marks arrays so that empty ones encode back as []", function()
    local v = json.decode('{"a":[],"o":{}}')
    assert.equals("lugger.array", getmetatable(v.a))
    assert.equals('{"a":[],"o":{}}', json.encode(v))
  end)

  it("returns nil and a message for bad input", function()
    for _, bad in ipairs({ "", "{", "[1,]", '{"a" 1}', "tru", '"abc', "1 2", "nul", '"\1"', "{'a':1}" }) do
      local v, err = json.decode(bad)
      assert.is_nil(v, bad)
      assert.truthy(err:find("^json: "), bad)
    end
    local v, err = json.decode(5)
    assert.is_nil(v)
    assert.truthy(err:find("expected a string"))
  end)

  it("limits nesting", function()
    local v, err = json.decode(("["):rep(200) .. ("]"):rep(200))
    assert.is_nil(v)
    assert.truthy(err:find("nested too deeply", 1, true))
  end)
end)
