/*
 * lg_k8s.c - the `kubernetes` source (lg_k8s.h): the tail's on_file hook,
 * API events and timers, and the lifecycle. The overview is in
 * lg_k8s_internal.h.
 */
#include "sources/kubernetes/lg_k8s_internal.h"

static void free_res(void **v, size_t n) {
  for (size_t i = 0; v != NULL && i < n; i++)
    pcre2_code_free(v[i]);
  free(v);
}

static void filter_free(lg_k8s_filter_t *f) {
  free_res(f->namespaces, f->nnamespaces);
  free_res(f->pods, f->npods);
  free_res(f->containers, f->ncontainers);
  lg_util_strv_free(f->label_keys, f->nlabels);
  lg_util_strv_free(f->label_vals, f->nlabels);
  free(f->regex_texts);
}

void lg_k8s_conf_free(lg_k8s_conf_t *c) {
  if (c == NULL)
    return;
  free(c->pods_dir);
  free(c->docker_dir);
  free(c->kube_api);
  free(c->token_file);
  free(c->ca_file);
  free(c->node_name);
  free(c->kubelet_dir);
  free(c->host_root);
  free(c->containerd_state);
  free(c->docker_socket);
  lg_util_strv_free(c->annotations, c->nannotations);
  lg_tail_conf_clear(&c->tail);
  filter_free(&c->include);
  filter_free(&c->exclude);
  free(c->select_code);
  free(c);
}

static int parse_path(const lg_k8s_t *k, const char *path, lg_k8s_path_t *pi) {
  if (k->kc->pods_dir[0] &&
      lg_k8s_parse_pods_path(k->kc->pods_dir, path, pi) == 0)
    return 0;
  if (k->kc->docker_dir[0] &&
      lg_k8s_parse_docker_path(k->kc->docker_dir, path, pi) == 0)
    return 0;
  return -EINVAL;
}

static void need_timer(lg_k8s_t *k);

int lg_k8s_waiting(const lg_k8s_t *k) {
  /* A wait past api_wait ends at the next rescan (or its file is gone). */
  uint64_t now = uv_now(k->loop);
  for (size_t b = 0; b < POD_BUCKETS; b++)
    for (const pod_entry_t *e = k->pods[b]; e != NULL; e = e->next)
      if (e->pod == NULL && e->wait_ms != 0 && !e->waited_out &&
          now - e->wait_ms < k->kc->api_wait_ms + 1000)
        return 1;
  return 0;
}

/* refresh = 2 for a file the tail reads, whose pod changed: the filters
 * are asked again with the pod as it is now. A pod excluded now stops the
 * file (LG_TAIL_SKIP, the tail logs it with info->why); else the file
 * gets the new metadata. select() is not asked again: it chose once. */
static int refresh_followed(lg_k8s_t *k, lg_tail_file_info_t *info,
                            const lg_k8s_path_t *pi, pod_entry_t *e) {
  char why[200];
  if (e->pod != NULL && lg__k8s_filtered_out(k, pi, e->pod, why, sizeof why)) {
    file_entry_t *fe = lg__k8s_file_get(e, info->path, info->dev, info->ino);
    if (fe != NULL) {
      fe->excluded = 1;
      fe->gen = e->gen;
      /* Its pipelines, for when it is read again. */
      fe->selected = 1;
      fe->pipeline = info->pipeline;
      fe->more = info->more_pipelines;
    }
    snprintf(info->why, sizeof info->why, "pod %s/%s is excluded now (%s)",
             pi->ns, pi->pod, why);
    return LG_TAIL_SKIP;
  }
  info->meta = lg__k8s_build_meta(k, info->path, pi, e->pod);
  if (info->meta == NULL)
    lg_log_error(k->component, "%s: out of memory building metadata",
                 info->path);
  return LG_TAIL_FOLLOW;
}

int lg_k8s_on_file(void *ud, lg_tail_file_info_t *info) {
  lg_k8s_t *k = ud;
  lg_k8s_path_t pi;
  if (parse_path(k, info->path, &pi) != 0) {
    const lg_k8s_vfile_t *vf = lg__k8s_files_find(k, info->path);
    if (vf != NULL)
      return lg__k8s_files_on_file(k, vf, info);
    if (info->refresh)
      return LG_TAIL_FOLLOW;
    lg_log_debug(k->component, "%s: not a container log path; skipped",
                 info->path);
    return LG_TAIL_SKIP;
  }
  pod_entry_t *e = pi.uid ? lg__k8s_pod_find(k, pi.uid, 0) : NULL;
  if (info->refresh == 2) {
    if (e == NULL || !e->dirty)
      return LG_TAIL_FOLLOW; /* its pod did not change */
    return refresh_followed(k, info, &pi, e);
  }
  const lg_k8s_pod_t *p = e != NULL ? e->pod : NULL;
  file_entry_t *fe = NULL;
  if (!info->refresh) {
    /* What was decided about this file stands while its pod is as it was
     * then: a rescan costs a lookup, not the filters or select() again. */
    fe = e != NULL ? lg__k8s_file_find(e, info->path, info->dev, info->ino)
                   : NULL;
    if (fe != NULL && (fe->no_pipeline || (fe->excluded && fe->gen == e->gen)))
      return LG_TAIL_SKIP;
    /* A pod the API has not described yet: wait for it a little. */
    if (k->api != NULL && p == NULL && pi.uid != NULL) {
      if (e == NULL)
        e = lg__k8s_pod_find(k, pi.uid, 1);
      if (e != NULL && !e->waited_out) {
        uint64_t now = uv_now(k->loop);
        if (e->wait_ms == 0)
          e->wait_ms = now;
        if (now - e->wait_ms < k->kc->api_wait_ms) {
          need_timer(k);
          return LG_TAIL_SKIP;
        }
        e->waited_out = 1;
        lg_log_warn(k->component,
                    "pod %s/%s (%s): not described by the API after %" PRIu64
                    " ms; reading its logs with the metadata of their paths",
                    pi.ns, pi.pod, pi.uid, k->kc->api_wait_ms);
      }
    }
    char why[200];
    if (lg__k8s_filtered_out(k, &pi, p, why, sizeof why)) {
      if (e != NULL) {
        /* Remember it: appends and rescans skip it for nothing until the
         * pod changes (then the filters are asked again). */
        if (fe == NULL)
          fe = lg__k8s_file_get(e, info->path, info->dev, info->ino);
        if (fe != NULL) {
          if (!fe->excluded)
            lg_log_debug(k->component,
                         "%s: pod %s/%s excluded by the source's filters (%s)",
                         info->path, pi.ns, pi.pod, why);
          fe->excluded = 1;
          fe->gen = e->gen;
        }
      } else {
        lg_log_debug(k->component, "%s: excluded by the source's filters (%s)",
                     info->path, why);
      }
      return LG_TAIL_SKIP;
    }
    /* Under pods_dir the runtime writes CRI lines; a symlink there points
     * at another runtime's file (dockershim: Docker json-file). */
    struct stat st;
    if (pi.docker)
      info->format = LG_FORMAT_DOCKER;
    else if (lstat(info->path, &st) == 0 && S_ISLNK(st.st_mode))
      info->format = LG_FORMAT_AUTO;
    else
      info->format = LG_FORMAT_CRI;
  }
  info->meta = lg__k8s_build_meta(k, info->path, &pi, p);
  if (info->meta == NULL) {
    lg_log_error(k->component, "%s: out of memory building metadata",
                 info->path);
    return info->refresh ? LG_TAIL_FOLLOW : LG_TAIL_SKIP;
  }
  if (!info->refresh) {
    if (fe != NULL && fe->selected) {
      /* select() decided once for this file, before it was excluded. */
      info->pipeline = fe->pipeline;
      info->more_pipelines = fe->more;
    } else {
      info->pipeline =
          lg__k8s_run_select(k, info->path, info->meta, &info->more_pipelines);
    }
    if (info->pipeline < 0) {
      lg_log_debug(k->component, "%s: select() chose no pipeline; skipped",
                   info->path);
      if (e != NULL &&
          (fe != NULL || (fe = lg__k8s_file_get(e, info->path, info->dev,
                                                info->ino)) != NULL))
        fe->no_pipeline = 1;
      lg_meta_unref(info->meta);
      info->meta = NULL;
      return LG_TAIL_SKIP;
    }
    if (fe != NULL) {
      /* Excluded before (at its first sight or while it was read), matching
       * now: what its pod wrote while excluded stays unread, as if the
       * filters had dropped those records; reading resumes at its end. */
      info->from_end = 1;
      snprintf(info->why, sizeof info->why,
               "pod %s/%s matches the source's filters again; what it wrote "
               "while excluded is not read",
               pi.ns, pi.pod);
      lg__k8s_file_drop(e, fe);
    }
  }
  return LG_TAIL_FOLLOW;
}

static void apply_events(lg_k8s_t *k, lg_k8s_ev_t *ev) {
  uint64_t now = uv_now(k->loop);
  /* recheck: a pod with files the filters keep unread changed (they may
   * match now). */
  int changed = 0, arrived = 0, recheck = 0;
  for (; ev != NULL; ev = ev->next) {
    if (ev->type == LG_K8S_EV_LIST) {
      /* Pods missing from a relist were deleted while we did not watch. */
      for (size_t b = 0; b < POD_BUCKETS; b++)
        for (pod_entry_t *e = k->pods[b]; e != NULL; e = e->next) {
          int listed = 0;
          for (size_t i = 0; i < ev->npods && !listed; i++)
            listed = strcmp(ev->pods[i]->uid, e->uid) == 0;
          if (!listed && e->pod != NULL && e->deleted_ms == 0)
            e->deleted_ms = now;
        }
      if (!k->synced)
        lg_log_info(k->component, "Kubernetes API: %zu pods on node %s",
                    ev->npods, k->node);
      k->synced = 1;
      arrived = 1;
    }
    for (size_t i = 0; i < ev->npods; i++) {
      lg_k8s_pod_t *p = ev->pods[i];
      pod_entry_t *e = lg__k8s_pod_find(k, p->uid, 1);
      if (e == NULL)
        continue;
      if (ev->type == LG_K8S_EV_DELETED) {
        /* Keep the last state: its files are drained with it. */
        if (e->deleted_ms == 0)
          e->deleted_ms = now;
        if (e->pod == NULL) {
          e->pod = p;
          ev->pods[i] = NULL;
          e->dirty = changed = arrived = 1;
          e->gen++;
          recheck |= e->files != NULL;
        }
        continue;
      }
      e->deleted_ms = 0;
      if (e->pod == NULL || e->pod->digest != p->digest) {
        arrived |= e->pod == NULL;
        lg_k8s_pod_free(e->pod);
        e->pod = p;
        ev->pods[i] = NULL;
        e->dirty = changed = 1;
        e->gen++;
        recheck |= e->files != NULL;
      }
    }
  }
  if (k->tail == NULL)
    return;
  /* Before the refresh: a pod's declared files are found by then. */
  lg__k8s_files_update(k);
  if (changed) {
    /* Files read now get the new metadata, or stop when their pod is
     * excluded now. */
    lg_tail_refresh_meta(k->tail, k->source_id);
    for (size_t b = 0; b < POD_BUCKETS; b++)
      for (pod_entry_t *e = k->pods[b]; e != NULL; e = e->next)
        e->dirty = 0;
  }
  if (arrived || recheck)
    lg_tail_rescan(k->tail); /* files that waited for their pod, or that
                                its filters may let through now */
}

static void on_wake(uv_async_t *h) {
  lg_k8s_t *k = h->data;
  if (k->api == NULL)
    return;
  lg_k8s_ev_t *ev = lg_k8s_api_take(k->api);
  if (ev == NULL)
    return;
  apply_events(k, ev);
  lg_k8s_ev_free(ev);
}

/* Drops the entries of unread files that are gone (a rotated file of an
 * excluded pod the kubelet deleted): the rest of a pod's entries live as
 * long as it. */
static void files_gc(pod_entry_t *e) {
  for (file_entry_t **pp = &e->files; *pp != NULL;) {
    file_entry_t *f = *pp;
    struct stat st;
    if (stat(f->path, &st) != 0 || (uint64_t)st.st_dev != f->dev ||
        (uint64_t)st.st_ino != f->ino) {
      *pp = f->next;
      lg__k8s_file_entry_free(f);
      continue;
    }
    pp = &f->next;
  }
}

/* Ends waits that are over, forgets pods deleted long ago, and now and
 * then entries of files that are gone. */
static void on_timer(uv_timer_t *h) {
  lg_k8s_t *k = h->data;
  uint64_t now = uv_now(k->loop);
  int over = 0, waiting = 0;
  int gc = now - k->gc_ms >= FILES_GC_MS;
  if (gc)
    k->gc_ms = now;
  for (size_t b = 0; b < POD_BUCKETS; b++)
    for (pod_entry_t **pp = &k->pods[b]; *pp != NULL;) {
      pod_entry_t *e = *pp;
      if ((e->deleted_ms != 0 && now - e->deleted_ms > TOMBSTONE_MS) ||
          (e->pod == NULL && e->waited_out &&
           now - e->wait_ms > TOMBSTONE_MS)) {
        *pp = e->next;
        lg__k8s_pod_entry_free(e);
        continue;
      }
      if (e->pod == NULL && e->wait_ms != 0 && !e->waited_out) {
        if (now - e->wait_ms >= k->kc->api_wait_ms)
          over = 1;
        else
          waiting = 1;
      }
      if (gc)
        files_gc(e);
      pp = &e->next;
    }
  if (over && k->tail != NULL)
    lg_tail_rescan(k->tail);
  /* Declared files whose container's filesystem was not found yet. */
  if (k->files_retry && now - k->files_ms >= FILES_RETRY_MS) {
    k->files_ms = now;
    k->files_retry = 0;
    lg__k8s_files_update(k);
  }
  if (!waiting && !over && k->api == NULL)
    uv_timer_stop(&k->timer);
}

static void need_timer(lg_k8s_t *k) {
  if (!k->closing && !uv_is_active((uv_handle_t *)&k->timer))
    uv_timer_start(&k->timer, on_timer, WAIT_TICK_MS, WAIT_TICK_MS);
}

lg_k8s_t *lg_k8s_create(uv_loop_t *loop, const lg_config_t *conf,
                        const char *name, uint32_t source_id, int pipeline,
                        const lg_k8s_conf_t *kc) {
  lg_k8s_t *k = calloc(1, sizeof *k);
  if (k == NULL)
    return NULL;
  k->loop = loop;
  k->conf = conf;
  k->kc = kc;
  k->source_id = source_id;
  k->pipeline = pipeline;
  k->name = strdup(name);
  snprintf(k->component, sizeof k->component, "source.%s", name);
  const char *node = kc->node_name ? kc->node_name : getenv("NODE_NAME");
  k->node = strdup(node ? node : "");
  int ok = k->name != NULL && k->node != NULL;
  char p[4200];
  if (kc->pods_dir[0]) {
    snprintf(p, sizeof p, "%s/*/*/*.log", kc->pods_dir);
    ok &= (k->pats[k->npats++] = strdup(p)) != NULL;
    snprintf(p, sizeof p, "%s/*/*/*.log.*", kc->pods_dir);
    ok &= (k->pats[k->npats++] = strdup(p)) != NULL;
  }
  if (kc->docker_dir[0]) {
    snprintf(p, sizeof p, "%s/*/*-json.log", kc->docker_dir);
    ok &= (k->pats[k->npats++] = strdup(p)) != NULL;
    snprintf(p, sizeof p, "%s/*/*-json.log.*", kc->docker_dir);
    ok &= (k->pats[k->npats++] = strdup(p)) != NULL;
  }
  /* The kubelet compresses older rotated files (and writes them through a
   * temporary file first): not text. */
  static const char *const ex[] = {"*.gz", "*.tmp", "*.gz.tmp"};
  for (size_t i = 0; i < 3; i++)
    ok &= (k->excl[k->nexcl++] = strdup(ex[i])) != NULL;
  uv_async_init(loop, &k->wake, on_wake);
  uv_timer_init(loop, &k->timer);
  k->wake.data = k->timer.data = k;
  k->handles_open = 2;
  if (!ok) {
    lg_k8s_close(k);
    return NULL;
  }
  return k;
}

void lg_k8s_patterns(const lg_k8s_t *k, const char *const **paths,
                     size_t *npaths, const char *const **exclude,
                     size_t *nexclude) {
  *paths = (const char *const *)k->pats;
  *npaths = k->npats;
  *exclude = (const char *const *)k->excl;
  *nexclude = k->nexcl;
}

int lg_k8s_start(lg_k8s_t *k, lg_tail_t *tail) {
  k->tail = tail;
  const lg_k8s_conf_t *kc = k->kc;
  if (strcmp(kc->kube_api, "off") == 0)
    return 0;
  char url[1024];
  const char *token = kc->token_file, *ca = kc->ca_file;
  if (strcmp(kc->kube_api, "in-cluster") == 0) {
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    if (host == NULL || host[0] == '\0') {
      lg_log_warn(k->component,
                  "kube_api = \"in-cluster\" but KUBERNETES_SERVICE_HOST is "
                  "not set (not in a pod?): no pod metadata from the API");
      return 0;
    }
    snprintf(url, sizeof url,
             strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host,
             port && port[0] ? port : "443");
    if (token == NULL)
      token = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    if (ca == NULL)
      ca = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
  } else {
    snprintf(url, sizeof url, "%s", kc->kube_api);
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
      url[--n] = '\0';
  }
  if (k->node[0] == '\0') {
    lg_log_error(k->component,
                 "kube_api: the node name is unknown (set NODE_NAME from "
                 "spec.nodeName, or node_name): no pod metadata from the "
                 "API");
    return 0;
  }
  lg_k8s_api_opts_t o = {.component = k->component,
                         .base_url = url,
                         .token_file = token,
                         .ca_file = ca,
                         .node_name = k->node,
                         .wake = &k->wake};
  k->api = lg_k8s_api_start(&o);
  if (k->api == NULL)
    return -ENOMEM;
  need_timer(k);
  return 0;
}

void lg_k8s_detach(lg_k8s_t *k) {
  if (k != NULL)
    k->tail = NULL;
}

static void k8s_free(lg_k8s_t *k) {
  for (size_t b = 0; b < POD_BUCKETS; b++)
    while (k->pods[b] != NULL) {
      pod_entry_t *e = k->pods[b];
      k->pods[b] = e->next;
      lg__k8s_pod_entry_free(e);
    }
  lg__k8s_vfile_free(k->vfiles, k->nvfiles);
  for (size_t i = 0; i < k->npats; i++)
    free(k->pats[i]);
  for (size_t i = 0; i < k->nexcl; i++)
    free(k->excl[i]);
  free(k->name);
  free(k->node);
  free(k);
}

static void on_closed(uv_handle_t *h) {
  lg_k8s_t *k = h->data;
  if (--k->handles_open == 0)
    k8s_free(k);
}

void lg_k8s_close(lg_k8s_t *k) {
  if (k == NULL || k->closing)
    return;
  k->closing = 1;
  k->tail = NULL;
  lg_k8s_api_stop(k->api); /* joins: no uv_async_send after this */
  k->api = NULL;
  uv_close((uv_handle_t *)&k->wake, on_closed);
  uv_close((uv_handle_t *)&k->timer, on_closed);
}

int lg_k8s_downward_on_file(void *ud, lg_tail_file_info_t *info) {
  (void)ud;
  lg_meta_t *m = lg_meta_create();
  if (m == NULL)
    return info->refresh ? LG_TAIL_FOLLOW : LG_TAIL_SKIP;
  int rc = lg_meta_add_str(m, "log.file.path", info->path, strlen(info->path));
  static const char *const env[][2] = {{"POD_NAMESPACE", "k8s.namespace.name"},
                                       {"POD_NAME", "k8s.pod.name"},
                                       {"POD_UID", "k8s.pod.uid"},
                                       {"CONTAINER_NAME", "k8s.container.name"},
                                       {"NODE_NAME", "k8s.node.name"}};
  for (size_t i = 0; i < sizeof env / sizeof env[0]; i++)
    rc |= lg__k8s_add_s(m, env[i][1], getenv(env[i][0]));
  if (rc != 0 || lg_meta_seal(m) != 0) {
    lg_meta_unref(m);
    return info->refresh ? LG_TAIL_FOLLOW : LG_TAIL_SKIP;
  }
  info->meta = m;
  return LG_TAIL_FOLLOW;
}
