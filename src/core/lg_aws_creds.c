/*
 * lg_aws_creds.c - AWS credentials chain (see lg_aws_creds.h).
 */
#include "core/lg_aws_creds.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_buf.h"
#include "core/lg_http_client.h"
#include "core/lg_log.h"
#include "core/lg_time.h"
#include "core/lg_util.h"

#define STS_TIMEOUT_MS 30000
#define RETRY_MIN_MS 1000
#define RETRY_MAX_MS 60000

struct lg_aws_creds {
  uv_loop_t *loop;
  char *component;
  const char *source;
  char *akid, *secret, *token;
  /* web identity */
  int web;
  char *role_arn, *token_file, *session_name;
  int64_t expires_ms; /* wall clock; 0 = not yet obtained */
  int64_t refresh_before_ms;
  int64_t retry_ms;
  uint64_t refreshes;
  char last_error[256];
  lg_http_client_t *http;
  lg_http_req_t *inflight;
  char *form; /* the request body in flight (must outlive the request) */
  uv_timer_t timer;
  int closing, pending_closes;
  void (*closed_cb)(void *);
  void *closed_ud;
};

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

static int set_keys(lg_aws_creds_t *p, const char *source, const char *akid,
                    const char *secret, const char *token) {
  free(p->akid);
  free(p->secret);
  free(p->token);
  p->akid = strdup(akid);
  p->secret = strdup(secret);
  p->token = token && *token ? strdup(token) : NULL;
  p->source = source;
  return p->akid && p->secret && (!token || !*token || p->token) ? 0 : -1;
}

/* Trims spaces at both ends in place. */
static char *trim(char *s) {
  while (isspace((unsigned char)*s))
    s++;
  size_t n = strlen(s);
  while (n > 0 && isspace((unsigned char)s[n - 1]))
    s[--n] = '\0';
  return s;
}

/* Reads `profile` from the shared credentials file (INI: "[name]"
 * sections of "key = value" lines, '#' and ';' comments). Returns 1 when
 * the profile has keys (set into p), 0 when the file or profile is
 * missing, -1 (err filled) when the profile is incomplete. */
static int read_shared_file(lg_aws_creds_t *p, char *err, size_t errlen) {
  char path[1024];
  const char *f = env("AWS_SHARED_CREDENTIALS_FILE");
  if (f) {
    snprintf(path, sizeof path, "%s", f);
  } else {
    const char *home = env("HOME");
    if (!home)
      return 0;
    snprintf(path, sizeof path, "%s/.aws/credentials", home);
  }
  const char *profile = env("AWS_PROFILE");
  if (!profile)
    profile = "default";
  char *text = NULL;
  size_t len = 0;
  if (lg_util_read_file(path, 1 << 20, &text, &len) != 0)
    return 0;
  char *akid = NULL, *secret = NULL, *token = NULL;
  int in = 0, found = 0;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save)) {
    char *l = trim(line);
    if (*l == '#' || *l == ';' || *l == '\0')
      continue;
    if (*l == '[') {
      char *e = strchr(l, ']');
      if (e)
        *e = '\0';
      in = strcmp(trim(l + 1), profile) == 0;
      found |= in;
      continue;
    }
    char *eq = strchr(l, '=');
    if (!in || !eq)
      continue;
    *eq = '\0';
    char *k = trim(l), *v = trim(eq + 1);
    if (strcmp(k, "aws_access_key_id") == 0)
      akid = v;
    else if (strcmp(k, "aws_secret_access_key") == 0)
      secret = v;
    else if (strcmp(k, "aws_session_token") == 0)
      token = v;
  }
  int rc = 0;
  if (found && (akid || secret)) {
    if (!akid || !secret) {
      snprintf(err, errlen,
               "%s: profile [%s] needs both aws_access_key_id and "
               "aws_secret_access_key",
               path, profile);
      rc = -1;
    } else {
      rc = set_keys(p, "shared-credentials-file", akid, secret, token) == 0
               ? 1
               : -1;
      if (rc < 0)
        snprintf(err, errlen, "out of memory");
    }
  }
  free(text);
  return rc;
}

/* ---- web identity ------------------------------------------------------ */

static void start_sts(lg_aws_creds_t *p);

char *lg_aws_xml_text(const char *xml, size_t len, const char *tag) {
  char open[64], close[64];
  snprintf(open, sizeof open, "<%s>", tag);
  snprintf(close, sizeof close, "</%s>", tag);
  const char *a = memmem(xml, len, open, strlen(open));
  if (!a)
    return NULL;
  a += strlen(open);
  const char *b = memmem(a, len - (size_t)(a - xml), close, strlen(close));
  if (!b)
    return NULL;
  char *out = malloc((size_t)(b - a) + 1);
  if (!out)
    return NULL;
  size_t o = 0;
  static const struct {
    const char *ent;
    char c;
  } ents[] = {{"&amp;", '&'},
              {"&lt;", '<'},
              {"&gt;", '>'},
              {"&quot;", '"'},
              {"&apos;", '\''}};
  for (const char *s = a; s < b;) {
    int done = 0;
    if (*s == '&')
      for (size_t i = 0; i < sizeof ents / sizeof ents[0]; i++) {
        size_t l = strlen(ents[i].ent);
        if ((size_t)(b - s) >= l && memcmp(s, ents[i].ent, l) == 0) {
          out[o++] = ents[i].c;
          s += l;
          done = 1;
          break;
        }
      }
    if (!done)
      out[o++] = *s++;
  }
  out[o] = '\0';
  return out;
}

static void on_timer(uv_timer_t *t) { start_sts(t->data); }

static void retry_later(lg_aws_creds_t *p) {
  p->retry_ms = p->retry_ms ? p->retry_ms * 2 : RETRY_MIN_MS;
  if (p->retry_ms > RETRY_MAX_MS)
    p->retry_ms = RETRY_MAX_MS;
  lg_log_warn(p->component,
              "web identity: AssumeRoleWithWebIdentity failed (%s); trying "
              "again in %lld ms",
              p->last_error, (long long)p->retry_ms);
  if (!p->closing)
    uv_timer_start(&p->timer, on_timer, (uint64_t)p->retry_ms, 0);
}

static void on_sts(void *ud, lg_http_req_t *req,
                   const lg_http_response_t *res) {
  (void)req;
  lg_aws_creds_t *p = ud;
  p->inflight = NULL;
  free(p->form);
  p->form = NULL;
  if (res->status != 200) {
    char *code = lg_aws_xml_text(res->body, res->body_len, "Code");
    char *msg = lg_aws_xml_text(res->body, res->body_len, "Message");
    if (res->status == 0)
      snprintf(p->last_error, sizeof p->last_error, "%s", res->error);
    else
      snprintf(p->last_error, sizeof p->last_error, "HTTP %d %s: %s",
               res->status, code ? code : "", msg ? msg : "");
    free(code);
    free(msg);
    retry_later(p);
    return;
  }
  char *akid = lg_aws_xml_text(res->body, res->body_len, "AccessKeyId");
  char *secret = lg_aws_xml_text(res->body, res->body_len, "SecretAccessKey");
  char *token = lg_aws_xml_text(res->body, res->body_len, "SessionToken");
  char *exp = lg_aws_xml_text(res->body, res->body_len, "Expiration");
  int64_t exp_ns = 0;
  if (!akid || !secret || !token || !exp ||
      lg_time_parse_rfc3339(exp, strlen(exp), &exp_ns) != 0 ||
      set_keys(p, "web-identity", akid, secret, token) != 0) {
    snprintf(p->last_error, sizeof p->last_error,
             "answer without AccessKeyId, SecretAccessKey, SessionToken and "
             "an RFC 3339 Expiration");
    retry_later(p);
  } else {
    p->expires_ms = exp_ns / 1000000;
    p->refreshes++;
    p->retry_ms = 0;
    p->last_error[0] = '\0';
    int64_t now = lg_time_now_ns() / 1000000;
    int64_t life = p->expires_ms - now;
    int64_t before = p->refresh_before_ms;
    if (before > life / 2)
      before = life / 2;
    int64_t delay = life - before;
    if (delay < RETRY_MIN_MS)
      delay = RETRY_MIN_MS;
    lg_log_info(p->component,
                "web identity: temporary credentials %s until %s; next "
                "refresh in %lld s",
                p->akid, exp, (long long)(delay / 1000));
    if (!p->closing)
      uv_timer_start(&p->timer, on_timer, (uint64_t)delay, 0);
  }
  free(akid);
  free(secret);
  free(token);
  free(exp);
}

/* Appends "&name=value" with the value form-encoded. */
static int form_add(lg_buf_t *b, const char *name, const char *value) {
  char *v = lg_sigv4_uri_encode(value, strlen(value), 0);
  if (!v)
    return -1;
  int rc = lg_buf_appendf(b, "%s%s=%s", b->len ? "&" : "", name, v);
  free(v);
  return rc;
}

static void start_sts(lg_aws_creds_t *p) {
  if (p->closing || p->inflight)
    return;
  char *tok = NULL;
  size_t len = 0;
  int rc = lg_util_read_file(p->token_file, 1 << 16, &tok, &len);
  if (rc != 0) {
    snprintf(p->last_error, sizeof p->last_error, "%s: %s", p->token_file,
             strerror(-rc));
    retry_later(p);
    return;
  }
  lg_buf_t b = LG_BUF_INIT;
  int e = form_add(&b, "Action", "AssumeRoleWithWebIdentity");
  e |= form_add(&b, "Version", "2011-06-15");
  e |= form_add(&b, "RoleArn", p->role_arn);
  e |= form_add(&b, "RoleSessionName", p->session_name);
  e |= form_add(&b, "WebIdentityToken", trim(tok));
  free(tok);
  if (e || lg_buf_putc(&b, '\0') != 0) {
    lg_buf_free(&b);
    snprintf(p->last_error, sizeof p->last_error, "out of memory");
    retry_later(p);
    return;
  }
  p->form = b.data;
  p->inflight =
      lg_http_request(p->http, "POST", "/", "application/x-www-form-urlencoded",
                      NULL, 0, p->form, b.len - 1, 0, on_sts, p);
  if (!p->inflight) {
    free(p->form);
    p->form = NULL;
    snprintf(p->last_error, sizeof p->last_error, "request: %s",
             strerror(errno));
    retry_later(p);
  }
}

const char *lg_aws_dns_suffix(const char *region) {
  return region && strncmp(region, "cn-", 3) == 0 ? "amazonaws.com.cn"
                                                  : "amazonaws.com";
}

void lg_aws_sts_endpoint(const char *conf_region, char *out, size_t cap) {
  const char *ep = env("AWS_ENDPOINT_URL_STS");
  /* The pod's region first, as the SDKs do: a bucket in another region
   * must not send STS calls out of the cluster's region (and its VPC
   * endpoint). */
  const char *region = env("AWS_REGION");
  if (!region)
    region = env("AWS_DEFAULT_REGION");
  if (!region && conf_region && *conf_region)
    region = conf_region;
  if (ep)
    snprintf(out, cap, "%s", ep);
  else if (region)
    snprintf(out, cap, "https://sts.%s.%s", region, lg_aws_dns_suffix(region));
  else
    snprintf(out, cap, "https://sts.amazonaws.com");
}

static int start_web_identity(lg_aws_creds_t *p, const lg_aws_creds_conf_t *c,
                              char *err, size_t errlen) {
  p->web = 1;
  p->source = "web-identity";
  p->role_arn = strdup(env("AWS_ROLE_ARN"));
  p->token_file = strdup(env("AWS_WEB_IDENTITY_TOKEN_FILE"));
  const char *sn = env("AWS_ROLE_SESSION_NAME");
  char def[64];
  if (!sn) {
    snprintf(def, sizeof def, "lugger-%lld",
             (long long)(lg_time_now_ns() / 1000000000));
    sn = def;
  }
  p->session_name = strdup(sn);
  p->refresh_before_ms =
      c->refresh_before_ms > 0 ? c->refresh_before_ms : 5 * 60 * 1000;
  char endpoint[256];
  lg_aws_sts_endpoint(c->region, endpoint, sizeof endpoint);
  const char *hosts[] = {endpoint};
  char comp[128];
  snprintf(comp, sizeof comp, "%s.sts", p->component);
  lg_http_client_conf_t hc = {0};
  hc.hosts = hosts;
  hc.nhosts = 1;
  hc.component = comp;
  hc.tls_verify = 1;
  hc.timeout_ms = STS_TIMEOUT_MS;
  if (!p->role_arn || !p->token_file || !p->session_name) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  p->http = lg_http_client_create(p->loop, &hc, err, errlen);
  if (!p->http)
    return -1;
  uv_timer_init(p->loop, &p->timer);
  p->timer.data = p;
  start_sts(p);
  return 0;
}

/* ---- the provider ------------------------------------------------------ */

static void provider_free(lg_aws_creds_t *p) {
  free(p->component);
  free(p->akid);
  free(p->secret);
  free(p->token);
  free(p->role_arn);
  free(p->token_file);
  free(p->session_name);
  free(p->form);
  free(p);
}

lg_aws_creds_t *lg_aws_creds_create(uv_loop_t *loop,
                                    const lg_aws_creds_conf_t *conf, char *err,
                                    size_t errlen) {
  lg_aws_creds_t *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  p->loop = loop;
  p->component = strdup(conf->component ? conf->component : "aws");
  int have = 0;
  if (conf->access_key_id || conf->secret_access_key) {
    if (!conf->access_key_id || !conf->secret_access_key) {
      snprintf(err, errlen, "access_key_id and secret_access_key go together");
      goto fail;
    }
    have = set_keys(p, "config", conf->access_key_id, conf->secret_access_key,
                    conf->session_token) == 0;
    if (!have)
      goto oom;
  }
  if (!have && (env("AWS_ACCESS_KEY_ID") || env("AWS_SECRET_ACCESS_KEY"))) {
    if (!env("AWS_ACCESS_KEY_ID") || !env("AWS_SECRET_ACCESS_KEY")) {
      snprintf(err, errlen,
               "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go "
               "together");
      goto fail;
    }
    have =
        set_keys(p, "environment", env("AWS_ACCESS_KEY_ID"),
                 env("AWS_SECRET_ACCESS_KEY"), env("AWS_SESSION_TOKEN")) == 0;
    if (!have)
      goto oom;
  }
  if (!have) {
    int rc = read_shared_file(p, err, errlen);
    if (rc < 0)
      goto fail;
    have = rc == 1;
  }
  if (!have && env("AWS_ROLE_ARN") && env("AWS_WEB_IDENTITY_TOKEN_FILE")) {
    if (start_web_identity(p, conf, err, errlen) != 0)
      goto fail;
    have = 1;
  }
  if (!have) {
    snprintf(err, errlen,
             "no AWS credentials: set access_key_id and secret_access_key, "
             "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile in "
             "~/.aws/credentials, or AWS_ROLE_ARN and "
             "AWS_WEB_IDENTITY_TOKEN_FILE (EKS IRSA)");
    goto fail;
  }
  return p;
oom:
  snprintf(err, errlen, "out of memory");
fail:
  if (p->http) {
    /* Only reached before any request could finish: close synchronously
     * enough for the caller, whose loop runs the close callbacks. */
    lg_http_client_close(p->http, NULL, NULL);
    p->http = NULL;
  }
  provider_free(p);
  return NULL;
}

int lg_aws_creds_get(lg_aws_creds_t *p, lg_sigv4_creds_t *out) {
  if (p->web) {
    int64_t now = lg_time_now_ns() / 1000000;
    if (p->expires_ms == 0 || now >= p->expires_ms)
      return -EAGAIN;
  }
  out->access_key_id = p->akid;
  out->secret_access_key = p->secret;
  out->session_token = p->token;
  return 0;
}

const char *lg_aws_creds_source(const lg_aws_creds_t *p) { return p->source; }

const char *lg_aws_creds_last_error(const lg_aws_creds_t *p) {
  return p->last_error;
}

uint64_t lg_aws_creds_refreshes(const lg_aws_creds_t *p) {
  return p->refreshes;
}

static void one_closed(lg_aws_creds_t *p) {
  if (--p->pending_closes > 0)
    return;
  void (*cb)(void *) = p->closed_cb;
  void *ud = p->closed_ud;
  provider_free(p);
  if (cb)
    cb(ud);
}

static void on_http_closed(void *ud) { one_closed(ud); }

static void on_timer_closed(uv_handle_t *h) { one_closed(h->data); }

void lg_aws_creds_close(lg_aws_creds_t *p, void (*cb)(void *ud), void *ud) {
  if (!p || p->closing)
    return;
  p->closing = 1;
  p->closed_cb = cb;
  p->closed_ud = ud;
  if (!p->web) {
    provider_free(p);
    if (cb)
      cb(ud);
    return;
  }
  p->pending_closes = 2;
  uv_timer_stop(&p->timer);
  uv_close((uv_handle_t *)&p->timer, on_timer_closed);
  lg_http_client_close(p->http, on_http_closed, p);
}
