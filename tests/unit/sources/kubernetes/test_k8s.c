/* Unit tests of the kubernetes source's pure parts: paths to metadata,
 * Pod JSON, and its config (filters, errors naming key paths). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "helpers/lg_test.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "config/lg_config.h"
#include "sources/kubernetes/lg_k8s.h"
#include "sources/kubernetes/lg_k8s_api.h"
#include "sources/tail/lg_source_file.h"

static char tmpdir[256];

static void test_pods_path(void **state) {
  (void)state;
  lg_k8s_path_t p;
  assert_int_equal(lg_k8s_parse_pods_path(
                       "/var/log/pods",
                       "/var/log/pods/default_web-1_0f3c-11/nginx/3.log", &p),
                   0);
  assert_string_equal(p.ns, "default");
  assert_string_equal(p.pod, "web-1");
  assert_string_equal(p.uid, "0f3c-11");
  assert_string_equal(p.container, "nginx");
  assert_int_equal(p.restart, 3);
  assert_null(p.container_id);
  assert_int_equal(p.docker, 0);
  /* A rotated file keeps its restart count; a trailing '/' on the dir. */
  assert_int_equal(
      lg_k8s_parse_pods_path("/var/log/pods/",
                             "/var/log/pods/kube-system_coredns-7d_u/coredns/"
                             "0.log.20240501-120000",
                             &p),
      0);
  assert_string_equal(p.ns, "kube-system");
  assert_string_equal(p.pod, "coredns-7d");
  assert_int_equal(p.restart, 0);
  /* An unknown file name: metadata without the restart count. */
  assert_int_equal(lg_k8s_parse_pods_path("/p", "/p/a_b_c/d/x.log", &p), 0);
  assert_int_equal(p.restart, -1);
  /* Wrong shapes. */
  assert_int_equal(lg_k8s_parse_pods_path("/p", "/p/a_b/d/0.log", &p), -EINVAL);
  assert_int_equal(lg_k8s_parse_pods_path("/p", "/p/a_b_c/0.log", &p), -EINVAL);
  assert_int_equal(lg_k8s_parse_pods_path("/p", "/q/a_b_c/d/0.log", &p),
                   -EINVAL);
  assert_int_equal(lg_k8s_parse_pods_path("/p", "/p/a_b_c/d/e/0.log", &p),
                   -EINVAL);
  assert_int_equal(lg_k8s_parse_pods_path("/p", "/pp/a_b_c/d/0.log", &p),
                   -EINVAL);
}

static void test_docker_path(void **state) {
  (void)state;
  char dir[512], path[700], cfg[700];
  snprintf(dir, sizeof dir, "%s/docker/abc", tmpdir);
  assert_int_equal(mkdir(dir, 0755) == 0 || errno == EEXIST, 1);
  snprintf(path, sizeof path, "%s/abc-json.log.1", dir);
  snprintf(cfg, sizeof cfg, "%s/config.v2.json", dir);
  char docker[512];
  snprintf(docker, sizeof docker, "%s/docker", tmpdir);
  lg_k8s_path_t p;
  /* No config.v2.json: the id only. */
  assert_int_equal(lg_k8s_parse_docker_path(docker, path, &p), 0);
  assert_string_equal(p.container_id, "abc");
  assert_null(p.pod);
  lg_test_write_file(cfg,
                     "{\"Config\":{\"Labels\":{"
                     "\"io.kubernetes.pod.name\":\"web-1\","
                     "\"io.kubernetes.pod.namespace\":\"shop\","
                     "\"io.kubernetes.pod.uid\":\"u-1\","
                     "\"io.kubernetes.container.name\":\"nginx\","
                     "\"annotation.io.kubernetes.container.restartCount\":\"4\""
                     "}}}");
  assert_int_equal(lg_k8s_parse_docker_path(docker, path, &p), 0);
  assert_string_equal(p.container_id, "abc");
  assert_string_equal(p.pod, "web-1");
  assert_string_equal(p.ns, "shop");
  assert_string_equal(p.uid, "u-1");
  assert_string_equal(p.container, "nginx");
  assert_int_equal(p.restart, 4);
  assert_int_equal(p.docker, 1);
  snprintf(path, sizeof path, "%s/other-json.log", dir);
  assert_int_equal(lg_k8s_parse_docker_path(docker, path, &p), -EINVAL);
  unlink(cfg);
}

static void test_pod_json(void **state) {
  (void)state;
  const char *text =
      "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{"
      "\"name\":\"web-7d9f8-abcde\",\"namespace\":\"shop\",\"uid\":\"u-1\","
      "\"resourceVersion\":\"42\",\"labels\":{\"app\":\"web\","
      "\"pod-template-hash\":\"7d9f8\"},\"annotations\":{\"a/b\":\"c\"},"
      "\"ownerReferences\":[{\"apiVersion\":\"apps/v1\",\"kind\":"
      "\"ReplicaSet\",\"name\":\"web-7d9f8\",\"controller\":true}]},"
      "\"spec\":{\"nodeName\":\"n1\",\"containers\":[{\"name\":\"nginx\","
      "\"image\":\"nginx:1.25\"}],\"initContainers\":[{\"name\":\"init\","
      "\"image\":\"busybox\"}]},"
      "\"status\":{\"podIP\":\"10.1.2.3\",\"containerStatuses\":[{\"name\":"
      "\"nginx\",\"image\":\"docker.io/library/nginx:1.25\",\"containerID\":"
      "\"containerd://c0ffee\",\"restartCount\":2,\"lastState\":{"
      "\"terminated\":{\"containerID\":\"containerd://dead\"}}}]}}";
  cJSON *j = cJSON_Parse(text);
  lg_k8s_pod_t *p = lg_k8s_pod_from_json(j);
  assert_non_null(p);
  assert_string_equal(p->uid, "u-1");
  assert_string_equal(p->name, "web-7d9f8-abcde");
  assert_string_equal(p->ns, "shop");
  assert_string_equal(p->ip, "10.1.2.3");
  assert_string_equal(p->node, "n1");
  assert_string_equal(p->owner_kind, "ReplicaSet");
  assert_string_equal(p->owner_name, "web-7d9f8");
  assert_string_equal(lg_k8s_pod_label(p, "app"), "web");
  assert_null(lg_k8s_pod_label(p, "nope"));
  assert_string_equal(lg_k8s_pod_annotation(p, "a/b"), "c");
  assert_int_equal(p->ncontainers, 2);
  assert_string_equal(p->containers[0].name, "init");
  assert_string_equal(p->containers[1].name, "nginx");
  assert_string_equal(p->containers[1].image, "docker.io/library/nginx:1.25");
  assert_string_equal(p->containers[1].id, "c0ffee");
  assert_string_equal(p->containers[1].last_id, "dead");
  assert_int_equal(p->containers[1].restarts, 2);
  uint64_t d = p->digest;
  lg_k8s_pod_free(p);
  /* A changed label is a new digest. */
  cJSON_ReplaceItemInObject(
      cJSON_GetObjectItem(cJSON_GetObjectItem(j, "metadata"), "labels"), "app",
      cJSON_CreateString("web2"));
  p = lg_k8s_pod_from_json(j);
  assert_non_null(p);
  assert_true(p->digest != d);
  lg_k8s_pod_free(p);
  cJSON_Delete(j);
  /* No uid: not a pod we can use. */
  j = cJSON_Parse("{\"metadata\":{\"name\":\"x\"}}");
  assert_null(lg_k8s_pod_from_json(j));
  cJSON_Delete(j);
  /* A restartCount no int64_t holds (a broken API server) is 0, not an
   * undefined conversion. */
  j = cJSON_Parse("{\"metadata\":{\"uid\":\"u\"},\"spec\":{\"containers\":"
                  "[{\"name\":\"a\"},{\"name\":\"b\"}]},\"status\":{"
                  "\"containerStatuses\":[{\"name\":\"a\",\"restartCount\":"
                  "1e300},{\"name\":\"b\",\"restartCount\":-1e300}]}}");
  p = lg_k8s_pod_from_json(j);
  assert_non_null(p);
  assert_int_equal(p->containers[0].restarts, 0);
  assert_int_equal(p->containers[1].restarts, 0);
  lg_k8s_pod_free(p);
  cJSON_Delete(j);
}

static const char *cfg(const char *name, const char *text) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  lg_test_write_file(path, text);
  return path;
}

static void test_config(void **state) {
  (void)state;
  const char *p = cfg(
      "k.lua",
      "return { sources = { pods = { type = 'kubernetes', kube_api = 'off',\n"
      "  pods_dir = '/x/pods', docker_dir = '', read_from = 'head',\n"
      "  annotations = { 'team' },\n"
      "  include = { namespaces = { 'shop', 'web-.*' }, streams = 'stdout' },\n"
      "  exclude = { containers = { 'istio-proxy' } } } },\n"
      "  pipelines = { p = { sources = { 'pods' }, outputs = { 'o' } } },\n"
      "  outputs = { o = { type = 'stdout' } } }\n");
  lg_config_t *c = NULL;
  lg_config_errors_t e;
  int rc = lg_config_load(p, &c, &e);
  for (size_t i = 0; i < e.n; i++)
    print_error("%s\n", e.msgs[i]);
  assert_int_equal(rc, 0);
  const lg_k8s_conf_t *k = c->sources[0].type_conf;
  assert_non_null(k);
  assert_string_equal(k->pods_dir, "/x/pods");
  assert_string_equal(k->docker_dir, "");
  assert_string_equal(k->kube_api, "off");
  assert_int_equal(k->api_wait_ms, 5000);
  assert_int_equal(k->tail.read_from_head, 1);
  assert_int_equal(k->nannotations, 1);
  assert_int_equal(k->include.nnamespaces, 2);
  assert_true(lg_k8s_regex_any(k->include.namespaces, 2, "shop"));
  assert_true(lg_k8s_regex_any(k->include.namespaces, 2, "web-a"));
  /* Regexes match whole names. */
  assert_false(lg_k8s_regex_any(k->include.namespaces, 2, "shop2"));
  assert_false(lg_k8s_regex_any(k->include.namespaces, 2, "my-web-a"));
  assert_int_equal(k->include.streams, LG_K8S_STDOUT);
  assert_int_equal(k->exclude.ncontainers, 1);
  assert_null(c->lua);
  lg_config_destroy(c);

  /* Errors name their key path. */
  p = cfg(
      "bad.lua",
      "return { sources = { pods = { type = 'kubernetes', kube_api = 'off',\n"
      "  max_rotated_open = -1,\n"
      "  include = { pods = { 'a(' }, labels = { app = 'x' }, colour = 1,\n"
      "              streams = { 'stdin' } }, select = 3 } },\n"
      "  pipelines = { p = { sources = { 'pods' }, outputs = { 'o' } } },\n"
      "  outputs = { o = { type = 'stdout' } } }\n");
  rc = lg_config_load(p, &c, &e);
  assert_int_equal(rc, -EINVAL);
  const char *want[] = {
      /* It was taken as 0 (close every rotated file) without a word. */
      "sources.pods.max_rotated_open: must be 0 or more",
      "sources.pods.include.colour: unknown key (expected namespaces, pods, "
      "containers, labels, streams)",
      "sources.pods.include.pods[1]: bad regex \"a(\": missing closing "
      "parenthesis at offset 2",
      "sources.pods.include.streams[1]: expected \"stdout\" or \"stderr\", got "
      "\"stdin\"",
      "sources.pods: label filters need pod labels from the API, but "
      "kube_api = \"off\"",
      "sources.pods.select: expected a function, got number",
  };
  for (size_t i = 0; i < e.n; i++)
    print_error("got: %s\n", e.msgs[i]);
  assert_int_equal(e.n, sizeof want / sizeof want[0]);
  for (size_t i = 0; i < e.n; i++)
    assert_string_equal(e.msgs[i], want[i]);
  lg_config_errors_free(&e);

  /* select() keeps the config's Lua state; the source needs no pipeline. */
  p = cfg("sel.lua",
          "return { sources = { pods = { type = 'kubernetes',\n"
          "  select = function(s) return 'p' end } },\n"
          "  pipelines = { p = { sources = { 'pods' }, outputs = { 'o' } },\n"
          "                q = { sources = { 'pods' }, outputs = { 'o' } } },\n"
          "  outputs = { o = { type = 'stdout' } } }\n");
  rc = lg_config_load(p, &c, &e);
  for (size_t i = 0; i < e.n; i++)
    print_error("%s\n", e.msgs[i]);
  assert_int_equal(rc, 0);
  assert_non_null(c->lua);
  assert_true(((const lg_k8s_conf_t *)c->sources[0].type_conf)->select_ref >=
              0);
  assert_int_equal(c->sources[0].pipeline, 0);
  lg_config_destroy(c);

  /* Sidecar mode on a file source. */
  p = cfg("side.lua",
          "return { sources = { app = { type = 'file', paths = '/x/*.log',\n"
          "  k8s = 'downward' } },\n"
          "  pipelines = { p = { sources = { 'app' }, outputs = { 'o' } } },\n"
          "  outputs = { o = { type = 'stdout' } } }\n");
  assert_int_equal(lg_config_load(p, &c, &e), 0);
  assert_int_equal(
      ((const lg_file_conf_t *)c->sources[0].type_conf)->k8s_downward, 1);
  lg_config_destroy(c);
}

static void test_downward(void **state) {
  (void)state;
  setenv("POD_NAME", "web-1", 1);
  setenv("POD_NAMESPACE", "shop", 1);
  setenv("POD_UID", "u-9", 1);
  setenv("CONTAINER_NAME", "app", 1);
  setenv("NODE_NAME", "n1", 1);
  lg_tail_file_info_t info = {.path = "/logs/a.log"};
  assert_int_equal(lg_k8s_downward_on_file(NULL, &info), LG_TAIL_FOLLOW);
  assert_non_null(info.meta);
  /* meta->json is not NUL-terminated: compare json_len bytes. */
  char json[512];
  snprintf(json, sizeof json, "%.*s", (int)info.meta->json_len,
           info.meta->json);
  assert_string_equal(
      json, ",\"log.file.path\":\"/logs/a.log\","
            "\"k8s.namespace.name\":\"shop\",\"k8s.pod.name\":"
            "\"web-1\",\"k8s.pod.uid\":\"u-9\","
            "\"k8s.container.name\":\"app\",\"k8s.node.name\":\"n1\"");
  lg_meta_unref(info.meta);
  unsetenv("POD_UID");
  info.meta = NULL;
  assert_int_equal(lg_k8s_downward_on_file(NULL, &info), LG_TAIL_FOLLOW);
  assert_null(lg_meta_find(info.meta, "k8s.pod.uid", 11));
  lg_meta_unref(info.meta);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "%s", lg_test_tmpdir("lg_test_k8s_"));
  char d[300];
  snprintf(d, sizeof d, "%s/docker", tmpdir);
  mkdir(d, 0755);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pods_path), cmocka_unit_test(test_docker_path),
      cmocka_unit_test(test_pod_json),  cmocka_unit_test(test_config),
      cmocka_unit_test(test_downward),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  if (lg_test_rmtree(tmpdir) != 0)
    rc = 1;
  return rc;
}
