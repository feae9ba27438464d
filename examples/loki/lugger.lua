-- DaemonSet to Grafana Loki: every container log of the node, with the
-- stream labels Promtail's Kubernetes config gives (namespace, pod,
-- container, node_name, app, stream, plus a static cluster label), the
-- line as the container wrote it, and the high-cardinality ids as
-- structured metadata (Loki's advice: few, bounded labels).
--
--   lugger check -c examples/loki/lugger.lua
--   LOKI_URL=http://loki-gateway.loki LOKI_TENANT=team-a lugger run -c examples/loki/lugger.lua
--
-- Environment (set in the DaemonSet's pod spec):
--   LOKI_URL        Loki, or its gateway (default http://loki-gateway.loki)
--   LOKI_TENANT     X-Scope-OrgID for multi-tenant Loki (default none)
--   CLUSTER         the cluster label (default "kubernetes")
--   LUGGER_PODS_DIR the kubelet's pod log directory (default /var/log/pods)
--   NODE_NAME       this node (from the downward API: spec.nodeName)
local function env(name)
  local v = os.getenv(name)
  if v == nil or v == "" then return nil end
  return v
end

return {
  settings = { state_dir = "/var/lib/lugger", memory_budget = "128MiB", workers = 2 },
  sources = {
    pods = {
      type = "kubernetes",
      pods_dir = env("LUGGER_PODS_DIR") or "/var/log/pods",
      exclude = { namespaces = { "logging" } }, -- lugger's own
    },
  },
  pipelines = {
    main = { sources = { "pods" }, scripts = { "app_label.lua" }, outputs = { "loki" } },
  },
  outputs = {
    loki = {
      type = "loki",
      hosts = { env("LOKI_URL") or "http://loki-gateway.loki" },
      tenant = env("LOKI_TENANT"),
      labels = {
        namespace = "k8s.namespace.name",
        pod = "k8s.pod.name",
        container = "k8s.container.name",
        node_name = "k8s.node.name",
        app = "app",                -- set by app_label.lua
        stream = "log.iostream",
      },
      static_labels = { cluster = env("CLUSTER") or "kubernetes" },
      structured_metadata = { "k8s.pod.uid", "container.id" },
      line = "body",
      compression = "gzip",
    },
  },
}
