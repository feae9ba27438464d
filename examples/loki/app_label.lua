-- The `app` label as Promtail derives it: the pod's
-- app.kubernetes.io/name label, else its `app` label, else the pod's
-- owner name (deployment, statefulset, daemonset), else the pod name.
function process(rec)
  rec.app = rec["k8s.pod.label.app.kubernetes.io/name"] or rec["k8s.pod.label.app"]
    or rec["k8s.deployment.name"] or rec["k8s.statefulset.name"]
    or rec["k8s.daemonset.name"] or rec["k8s.pod.name"]
end
