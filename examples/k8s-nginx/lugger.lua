-- The iLogtail DaemonSet guide's scenario: the stdout and stderr of every
-- nginx pod (label app=nginx) on the node, stdout to one output and
-- stderr to another, each record with its pod's metadata.
--
--   lugger check -c examples/k8s-nginx/lugger.lua
--
-- Runs in the DaemonSet of deploy/daemonset.yaml (ServiceAccount allowed
-- to list and watch pods, NODE_NAME from spec.nodeName). The selection by
-- namespace / pod / container name instead of labels is in
-- examples/k8s-nginx-regex/lugger.lua.
return {
  settings = { state_dir = "/var/lib/lugger" },
  sources = {
    nginx = {
      type = "kubernetes",
      -- Labels come from the API; a new pod's files wait up to api_wait
      -- for them (then are read with the metadata of their paths).
      include = { labels = { app = "nginx" } },
      read_from = "tail",
    },
  },
  pipelines = {
    web = {
      sources = { "nginx" },
      -- stderr records go to "stderr_out", the rest to "stdout_out".
      scripts = { "streams.lua" },
      outputs = { "stdout_out" },
    },
  },
  outputs = {
    stdout_out = { type = "file", path = "/var/log/lugger/nginx-stdout.jsonl" },
    stderr_out = { type = "file", path = "/var/log/lugger/nginx-stderr.jsonl" },
  },
}
