-- DaemonSet to Elasticsearch (or OpenSearch): every container log of the
-- node, with its pod's metadata, into the data stream
-- logs-kubernetes.container_logs-<namespace>, documents named as Filebeat
-- names them (Elastic Common Schema: @timestamp, message, stream,
-- kubernetes.namespace, kubernetes.pod.name, kubernetes.labels.*, ...), so
-- Kibana's Discover, the logs-*-* index template and existing dashboards
-- work unchanged.
--
--   lugger check -c examples/elasticsearch/lugger.lua
--   ES_HOSTS=https://es-0.es:9200,https://es-1.es:9200 ES_API_KEY=... lugger run -c examples/elasticsearch/lugger.lua
--
-- Environment (set in the DaemonSet's pod spec, the secrets from a Secret):
--   ES_HOSTS        nodes, comma-separated (default https://elasticsearch:9200)
--   ES_API_KEY      an API key's "encoded" value (Elasticsearch), or
--   ES_USER, ES_PASSWORD   basic authentication (OpenSearch, or ES users)
--   ES_CA_FILE      CA of the cluster's certificate (default: the system's)
--   LUGGER_PODS_DIR the kubelet's pod log directory (default /var/log/pods)
--   NODE_NAME       this node (from the downward API: spec.nodeName)
local function list(s)
  local t = {}
  for h in s:gmatch("[^,%s]+") do t[#t + 1] = h end
  return t
end

local function env(name) -- nil when unset or empty
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
    main = { sources = { "pods" }, outputs = { "es" } },
  },
  outputs = {
    es = {
      type = "elasticsearch",
      hosts = list(env("ES_HOSTS") or "https://elasticsearch:9200"),
      api_key = env("ES_API_KEY"),
      user = env("ES_USER"),
      password = env("ES_PASSWORD"),
      ca_file = env("ES_CA_FILE"),
      -- A data stream per namespace: Elasticsearch's built-in logs-*-*
      -- template makes it (create is the only action data streams take,
      -- and the only one lugger sends).
      index = "logs-kubernetes.container_logs-{k8s.namespace.name|default}",
      field_names = "ecs",
      compression = "gzip",
      -- Pods labelled `app` and `app.kubernetes.io/name` side by side
      -- would otherwise be a mapping conflict: kubernetes.labels.app_kubernetes_io/name.
      dedot = true,
    },
  },
}
