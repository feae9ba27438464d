-- nginx access logs: parse them, drop the health probes, and send server
-- errors (5xx) to their own file. A sidecar set-up: nginx writes its
-- access log to a volume that lugger's container mounts too.
--
--   lugger check -c examples/nginx/lugger.lua
--   lugger test examples/nginx/nginx.lua tests/fixtures/nginx/access.log --format line
--
-- nginx must log in the predefined "combined" format (the default of
-- access_log). The parameters of nginx.lua are documented at its top.
return {
  settings = { state_dir = "/var/lib/lugger" },
  sources = {
    nginx = {
      type = "file",
      paths = { "/var/log/nginx/access.log*" },
      exclude = { "*.gz" }, -- rotated and compressed: already shipped
      format = "line",
    },
  },
  pipelines = {
    web = {
      sources = { "nginx" },
      scripts = {
        {
          path = "nginx.lua", -- relative to this file
          params = {
            -- Kubelet probes (GET /healthz, 200) say nothing: drop them.
            -- A failing probe (any other status) is kept.
            drop_health = true,
            health_path = "/healthz",
            -- Status >= 500 goes to "errors" instead of "out". Use
            -- { "out", "errors" } to send those records to both.
            errors_output = "errors",
          },
        },
      },
      outputs = { "out" },
    },
  },
  outputs = {
    out = { type = "stdout" },
    errors = { type = "file", path = "/var/log/lugger/nginx-errors.jsonl" },
  },
}
