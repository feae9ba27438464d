-- A Fluent Bit DaemonSet's Lua filters moved over unchanged (README,
-- "Moving Fluent Bit Lua filters over"): the kubernetes source gives each
-- filter the record Fluent Bit's tail + kubernetes filter would (`log`,
-- `stream`, `time`, `_p` and the `kubernetes` map), lugger's own metadata
-- stays on the records.
--
--   lugger check -c examples/fluent-bit/lugger.lua
--   lugger test examples/fluent-bit/filters.lua pod.log --format cri \
--     --compat fluent-bit --call merge_json
return {
  settings = { state_dir = "/var/lib/lugger" },
  sources = {
    pods = { type = "kubernetes", read_from = "tail",
             -- annotations the filters (dedot) should see
             annotations = { "prometheus.io/scrape", "prometheus.io/port" } },
  },
  pipelines = {
    k8s = {
      sources = { "pods" },
      scripts = {
        { path = "filters.lua", compat = "fluent-bit", call = "drop_system", tag = "kube.*" },
        { path = "filters.lua", compat = "fluent-bit", call = "dedot", tag = "kube.*" },
        { path = "filters.lua", compat = "fluent-bit", call = "merge_json", tag = "kube.*" },
      },
      outputs = { "out" },
    },
  },
  outputs = { out = { type = "stdout" } },
}
