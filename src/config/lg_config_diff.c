/* Comparing sources and outputs of two configs: what a reload keeps. */
#include "config/lg_config_internal.h"
#include "sources/forward/lg_forward_conf.h"

static int str_eq(const char *a, const char *b) {
  return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int strv_eq(char *const *a, size_t na, char *const *b, size_t nb) {
  if (na != nb)
    return 0;
  for (size_t i = 0; i < na; i++)
    if (!str_eq(a[i], b[i]))
      return 0;
  return 1;
}

static int optval_eq(const lg_optval_t *a, const lg_optval_t *b) {
  return str_eq(a->s, b->s) && a->i == b->i &&
         strv_eq(a->keys, a->keys ? a->n : 0, b->keys, b->keys ? b->n : 0) &&
         strv_eq(a->vals, a->n, b->vals, b->n);
}

int lg_config_output_equal(const lg_conf_output_t *a,
                           const lg_conf_output_t *b) {
  if (!str_eq(a->name, b->name) || !str_eq(a->type, b->type) || a->vt != b->vt)
    return 0;
  if (a->vt == NULL)
    return 1;
  for (size_t i = 0; a->vt->options[i].name != NULL; i++)
    if (!optval_eq(&a->opts[i], &b->opts[i]))
      return 0;
  return 1;
}

/* Compiled regexes cannot be compared: their pattern texts are. */
static int k8s_filter_eq(const lg_k8s_filter_t *a, const lg_k8s_filter_t *b) {
  return a->set == b->set && a->nnamespaces == b->nnamespaces &&
         a->npods == b->npods && a->ncontainers == b->ncontainers &&
         str_eq(a->regex_texts, b->regex_texts) &&
         strv_eq(a->label_keys, a->nlabels, b->label_keys, b->nlabels) &&
         strv_eq(a->label_vals, a->nlabels, b->label_vals, b->nlabels) &&
         a->streams == b->streams;
}

static int k8s_eq(const lg_k8s_conf_t *a, const lg_k8s_conf_t *b) {
  if (a == NULL || b == NULL)
    return a == b;
  return str_eq(a->pods_dir, b->pods_dir) &&
         str_eq(a->docker_dir, b->docker_dir) &&
         str_eq(a->kube_api, b->kube_api) &&
         str_eq(a->token_file, b->token_file) &&
         str_eq(a->ca_file, b->ca_file) &&
         str_eq(a->node_name, b->node_name) &&
         strv_eq(a->annotations, a->nannotations, b->annotations,
                 b->nannotations) &&
         a->api_wait_ms == b->api_wait_ms &&
         str_eq(a->kubelet_dir, b->kubelet_dir) &&
         str_eq(a->host_root, b->host_root) &&
         a->files_format == b->files_format &&
         k8s_filter_eq(&a->include, &b->include) &&
         k8s_filter_eq(&a->exclude, &b->exclude) &&
         (a->select_ref >= 0) == (b->select_ref >= 0) &&
         a->select_code_len == b->select_code_len &&
         (a->select_code_len == 0 ||
          memcmp(a->select_code, b->select_code, a->select_code_len) == 0);
}

int lg_config_source_equal(const lg_conf_source_t *a,
                           const lg_conf_source_t *b) {
  return str_eq(a->name, b->name) && str_eq(a->type, b->type) &&
         k8s_eq(a->k8s, b->k8s) && a->k8s_downward == b->k8s_downward &&
         lg_fwd_src_conf_equal(a->fwd, b->fwd) &&
         strv_eq(a->paths, a->npaths, b->paths, b->npaths) &&
         strv_eq(a->exclude, a->nexclude, b->exclude, b->nexclude) &&
         a->read_from_head == b->read_from_head && a->format == b->format &&
         a->max_record_bytes == b->max_record_bytes &&
         a->flush_timeout_ms == b->flush_timeout_ms &&
         lg_ml_conf_equal(a->multiline, b->multiline);
}
