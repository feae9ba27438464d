-- The same selection as examples/k8s-nginx, by names instead of labels:
-- pods named web-<something> in the namespaces shop and shop-staging,
-- their container "nginx" only. Regexes (PCRE2) match whole names. No
-- label is needed, so this works with kube_api = "off" too.
--
--   lugger check -c examples/k8s-nginx-regex/lugger.lua
return {
  settings = { state_dir = "/var/lib/lugger" },
  sources = {
    nginx = {
      type = "kubernetes",
      include = {
        namespaces = { "shop", "shop-staging" },
        pods = { "web-.+" },
        containers = { "nginx" },
      },
      read_from = "tail",
    },
  },
  pipelines = {
    web = {
      sources = { "nginx" },
      scripts = { "../k8s-nginx/streams.lua" },
      outputs = { "stdout_out" },
    },
  },
  outputs = {
    stdout_out = { type = "file", path = "/var/log/lugger/nginx-stdout.jsonl" },
    stderr_out = { type = "file", path = "/var/log/lugger/nginx-stderr.jsonl" },
  },
}
