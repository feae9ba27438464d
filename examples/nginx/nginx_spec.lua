-- A busted spec for nginx.lua, written with lugger.testing: the script runs
-- in lugger's own sandbox and driver, as in the collector. Run it with
--
--   lugger lua --busted examples/nginx/nginx_spec.lua
--
-- (busted comes from Debian's lua-busted package). Copy this file next to
-- your own filter and change the records and expectations.
local testing = require("lugger.testing")

local SCRIPT = testing.here("nginx.lua")

local GET = '203.0.113.7 - alice [01/May/2024:12:00:01 +0000] "GET /api/items?id=4 HTTP/1.1" 200 512 "-" "curl/8.5.0"'
local PROBE = '10.0.0.1 - - [01/May/2024:12:00:02 +0000] "GET /healthz HTTP/1.1" 200 2 "-" "kube-probe/1.29"'
local FAIL = '10.0.0.2 - - [01/May/2024:12:00:03 +0000] "POST /api/orders HTTP/2.0" 503 0 "-" "Go-http-client/1.1"'

describe("nginx.lua", function()
  it("parses a combined-format line into typed fields", function()
    local f = assert(testing.load(SCRIPT))
    local res = f:run({ GET })
    assert.equals(1, #res.kept)
    local rec = res.kept[1]
    assert.equals("203.0.113.7", rec.remote_addr)
    assert.equals("alice", rec.remote_user)
    assert.equals("GET", rec.method)
    assert.equals("/api/items", rec.path)
    assert.equals("id=4", rec.query)
    assert.equals(200, rec.status)
    assert.equals(512, rec.body_bytes_sent)
    assert.is_nil(rec.referer) -- nginx wrote "-"
    assert.equals(GET, rec.body)
    assert.equals("2024-05-01T12:00:01.000000000Z", rec.time) -- from $time_local
    assert.same({ "default" }, res.routes[1])
  end)

  it("leaves a line that is not an access-log line alone", function()
    local f = assert(testing.load(SCRIPT))
    local res = f:run({ "nginx: [warn] conflicting server name" })
    assert.equals(1, #res.kept)
    assert.is_nil(res.kept[1].status)
    assert.same({}, res.errors)
  end)

  it("drops probes and routes 5xx answers when asked to", function()
    local f = assert(testing.load(SCRIPT, {
      params = { drop_health = true, health_path = "/healthz", errors_output = "errors" },
    }))
    local res = f:run({ GET, PROBE, FAIL })
    assert.equals(2, #res.kept)
    assert.equals(1, #res.dropped)
    assert.equals("/healthz", res.dropped[1].path)
    assert.equals(503, res.kept[2].status)
    assert.same({ "errors" }, res.routes[2])
    assert.same({ "default" }, res.routes[1])
  end)

  it("keeps the pod metadata of a record", function()
    local f = assert(testing.load(SCRIPT, { params = { keep_body = false } }))
    local res = f:run({ { body = GET, ["k8s.pod.name"] = "web-1",
                          time = "2024-05-01T12:00:01Z" } })
    local rec = res.kept[1]
    assert.equals("web-1", rec["k8s.pod.name"])
    assert.equals("2024-05-01T12:00:01.000000000Z", rec.time)
    assert.is_nil(rec.body)
  end)

  it("reads raw CRI lines as the kubelet writes them", function()
    local f = assert(testing.load(SCRIPT))
    local res = f:run_text("2024-05-01T12:00:01.5Z stdout F " .. GET .. "\n",
                           { format = "cri" })
    assert.equals("stdout", res.kept[1]["log.iostream"])
    assert.equals(200, res.kept[1].status)
  end)

  it("rejects a parameter of the wrong type when it loads", function()
    local f, err = testing.load(SCRIPT, { params = { drop_health = "yes" } })
    assert.is_nil(f)
    assert.matches("params.drop_health must be a boolean", err, 1, true)
  end)
end)
