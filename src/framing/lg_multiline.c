/*
 * lg_multiline.c - multiline grouping of framed records (stack traces).
 *
 * One open group per stream holds the joined body of the lines taken so
 * far. Each record of a feed is classified against the rules and either
 * extends the open group of its stream, or ends it and opens a new one, or
 * passes through alone. Regexes are matched on the record's body with
 * PCRE2 (JIT when available); one match-data block per grouper.
 *
 * The presets describe the traces the runtimes print:
 *
 *   java   - `Exception in thread "main" java.lang.X: msg` (or a log line
 *            followed by the exception line), frames `\tat
 * pkg.Cls.m(F.java:1)`, `Caused by: ...`, `Suppressed: ...`, `\t... 12 more`,
 *            `... 3 common frames omitted`. Any line may begin a group;
 *            those lines continue it.
 *   python - `Traceback (most recent call last):`, indented `File "...",
 *            line N, in f` frames and source lines (and 3.11 `^^^^`
 *            markers), then one unindented exception line `ValueError: x`
 *            that ends the trace. Chained traces (`During handling of the
 *            above exception, another exception occurred:` / `The above
 *            exception was the direct cause of the following exception:`,
 *            with their blank lines) stay in the same group.
 *   go     - `panic: msg` (or `fatal error: msg`), optional `[recovered]`
 *            with `\tpanic: msg` lines and `[signal SIGSEGV: ...]` lines,
 *            blank lines, `goroutine N [running]:` headers, function lines
 *            `main.main()` / `created by main.f` (`... in goroutine 1`
 *            since Go 1.21), file lines `\t/path/file.go:12 +0x1d`, and
 *            `...additional frames elided...` (newer releases: `...N
 *            frames elided...`). Also what Go 1.19 prints around its
 *            fatal errors: the `runtime: ...` diagnostics that come before
 *            `fatal error: stack overflow` (a group may begin with them),
 *            `runtime stack:`, a second `fatal error: ...` when
 *            two threads throw at once (concurrent map writes); the dump of
 *            a signal the runtime does not turn into a panic (SIGQUIT,
 *            SIGSEGV in cgo code): `SIGQUIT: quit`, `PC=0x... m=0
 *            sigcode=0`, goroutines, then registers `rax    0x0`; and the
 *            `exit status 2` that `go run` adds after its child's trace.
 */
#include "framing/lg_multiline.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "core/lg_option.h"
#include "core/lg_util.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define DEF_MAX_LINES 500
#define DEF_TIMEOUT_MS 1000

/* Patterns of the presets (see the file comment). */
static const char JAVA_CONT[] =
    "^\\s+at\\s|^\\s*\\.\\.\\.\\s+\\d+\\s+(?:more|common frames omitted)\\s*$"
    "|^\\s*(?:Caused by|Suppressed):\\s";
static const char PY_START[] = "^Traceback \\(most recent call last\\):\\s*$";
static const char PY_CONT[] = "^[ \\t]+\\S";
/* The exception line: a (dotted) name, optionally `: message`. */
static const char PY_LAST[] = "^[A-Za-z_][\\w.]*(?::\\s.*|:)?\\s*$";
static const char PY_CHAIN[] =
    "^\\s*$|^During handling of the above exception, another exception "
    "occurred:\\s*$|^The above exception was the direct cause of the "
    "following exception:\\s*$|^Traceback \\(most recent call last\\):\\s*$";
/* `runtime: ` and `SIGQUIT: ` may begin a group: the runtime prints its
 * diagnostics before `fatal error: stack overflow`, and a signal dump
 * begins with the signal's name. A panic message that itself holds a
 * newline is printed as is by Go 1.19: its second line is not
 * recognisable and ends the group; a goroutine header begins one, so the
 * goroutines after such a message (or after a trace read from its middle)
 * are still one record. */
static const char GO_START[] =
    "^(?:panic: |fatal error: |runtime: |SIG[A-Z0-9]+: "
    "|goroutine \\d+ \\[.*\\]:$)";
static const char GO_CONT[] =
    "^\\s*$|^\\t|^goroutine \\d+|^\\[signal |^created by "
    "|^[^\\s(][^\\s]*\\(.*\\)$"
    "|^\\.\\.\\.(?:additional|\\d+) frames elided\\.\\.\\.$"
    "|^fatal error: |^runtime: |^runtime stack:$"
    "|^PC=0x[0-9a-f]+ m=\\d+ sigcode="
    "|^signal arrived during (?:cgo|external code) execution$"
    "|^[a-z][a-z0-9]{1,6} +0x[0-9a-f]+$|^exit status \\d+$";

struct lg_ml_conf {
  int refs;
  pcre2_code *start, *cont;
  /* python: the one line after the continuation lines that ends the trace,
   * and what may follow it and still belong to the group (chaining). */
  pcre2_code *last, *chain;
  uint32_t max_lines;
  uint64_t max_bytes; /* 0: the source's max_record_bytes */
  uint64_t timeout_ms;
  char *desc; /* the options as written, for lg_ml_conf_equal */
};

enum { G_FRAMES, G_AFTER_LAST };

typedef struct group {
  int open;
  int state;     /* G_* (python) */
  int truncated; /* a limit cut it, or it carries on after a cut */
  uint32_t nlines;
  uint32_t nconts;  /* lines taken as continuations */
  uint32_t flags;   /* stream flags of the first line */
  int64_t time_ns;  /* of the first line */
  uint64_t off;     /* offset of the first line */
  uint64_t end;     /* end of the last line */
  uint64_t last_ms; /* when the last line came */
  uint64_t seq;     /* open order, to flush the oldest first */
  char *buf;
  size_t len, cap;
} group_t;

struct lg_ml {
  const lg_ml_conf_t *c;
  size_t max_bytes;
  pcre2_match_data *md;
  group_t g[2];
  uint64_t seq;
};

/* ------------------------------------------------------------------ */
/* Rules. */

static void errf(char *err, size_t errlen, const char *fmt, ...) {
  if (errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static pcre2_code *compile(const char *pat, const char *path, const char *key,
                           char *err, size_t errlen) {
  int ec;
  PCRE2_SIZE off;
  /* Log bytes need not be UTF-8: match invalid sequences as no character
   * instead of failing the match. */
  pcre2_code *re =
      pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                    PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &ec, &off, NULL);
  if (re == NULL) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(ec, msg, sizeof msg);
    errf(err, errlen, "%s.%s: invalid regex at offset %zu: %s", path, key,
         (size_t)off, (const char *)msg);
    return NULL;
  }
  /* Without the JIT (an unsupported CPU) the interpreter still works. */
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
  return re;
}

lg_ml_conf_t *lg_ml_conf_create(const lg_ml_spec_t *spec, const char *path,
                                char *err, size_t errlen) {
  const char *start = spec->start, *cont = spec->cont, *last = NULL,
             *chain = NULL;
  if (spec->preset != NULL) {
    if (strcmp(spec->preset, "java") == 0) {
      cont = JAVA_CONT;
    } else if (strcmp(spec->preset, "python") == 0) {
      start = PY_START;
      cont = PY_CONT;
      last = PY_LAST;
      chain = PY_CHAIN;
    } else if (strcmp(spec->preset, "go") == 0) {
      start = GO_START;
      cont = GO_CONT;
    } else {
      errf(err, errlen,
           "%s: unknown preset \"%s\" (known: \"java\", \"python\", \"go\")",
           path, spec->preset);
      return NULL;
    }
  } else if (start == NULL && cont == NULL) {
    errf(err, errlen, "%s: needs start or continue (a regex), or a preset",
         path);
    return NULL;
  }
  lg_ml_conf_t *c = calloc(1, sizeof *c);
  char desc[512];
  snprintf(desc, sizeof desc, "%s|%u|%llu|%llu",
           spec->preset ? spec->preset : "", spec->max_lines,
           (unsigned long long)spec->max_bytes,
           (unsigned long long)spec->timeout_ms);
  size_t dl = strlen(desc), sl = start ? strlen(start) : 0,
         cl = cont ? strlen(cont) : 0;
  if (c == NULL || (c->desc = malloc(dl + sl + cl + 4)) == NULL) {
    free(c);
    errf(err, errlen, "%s: out of memory", path);
    return NULL;
  }
  /* Length-free separators cannot collide: a NUL cannot be in a pattern. */
  snprintf(c->desc, dl + sl + cl + 4, "%s\x01%s\x01%s", desc,
           start ? start : "", cont ? cont : "");
  c->refs = 1;
  c->max_lines = spec->max_lines ? spec->max_lines : DEF_MAX_LINES;
  c->max_bytes = spec->max_bytes;
  c->timeout_ms = spec->timeout_ms ? spec->timeout_ms : DEF_TIMEOUT_MS;
  if ((start != NULL &&
       (c->start = compile(start, path, "start", err, errlen)) == NULL) ||
      (cont != NULL &&
       (c->cont = compile(cont, path, "continue", err, errlen)) == NULL) ||
      (last != NULL &&
       (c->last = compile(last, path, "last", err, errlen)) == NULL) ||
      (chain != NULL &&
       (c->chain = compile(chain, path, "chain", err, errlen)) == NULL)) {
    lg_ml_conf_unref(c);
    return NULL;
  }
  return c;
}

const lg_ml_conf_t *lg_ml_conf_ref(const lg_ml_conf_t *c) {
  if (c != NULL)
    __atomic_add_fetch(&((lg_ml_conf_t *)c)->refs, 1, __ATOMIC_RELAXED);
  return c;
}

void lg_ml_conf_unref(const lg_ml_conf_t *cc) {
  lg_ml_conf_t *c = (lg_ml_conf_t *)cc;
  if (c == NULL || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0)
    return;
  pcre2_code_free(c->start);
  pcre2_code_free(c->cont);
  pcre2_code_free(c->last);
  pcre2_code_free(c->chain);
  free(c->desc);
  free(c);
}

int lg_ml_conf_equal(const lg_ml_conf_t *a, const lg_ml_conf_t *b) {
  if (a == NULL || b == NULL)
    return a == b;
  return strcmp(a->desc, b->desc) == 0;
}

uint64_t lg_ml_conf_timeout_ms(const lg_ml_conf_t *c) {
  return c != NULL ? c->timeout_ms : DEF_TIMEOUT_MS;
}

/* ------------------------------------------------------------------ */
/* The config value. */

enum { O_START, O_CONTINUE, O_MAX_LINES, O_MAX_BYTES, O_TIMEOUT, O_COUNT };

static const lg_option_t ml_options[] = {
    [O_START] = {.name = "start",
                 .type = LG_OPT_STRING,
                 .doc = "Regex of lines that may begin a group (default: "
                        "any line)."},
    [O_CONTINUE] = {.name = "continue",
                    .type = LG_OPT_STRING,
                    .doc = "Regex of lines that extend the open group "
                           "(default: every line not matching start)."},
    [O_MAX_LINES] = {.name = "max_lines",
                     .type = LG_OPT_INT,
                     .def = "500",
                     .check = lg_opt_check_positive,
                     .doc = "A group is cut (flagged truncated) at this "
                            "many lines."},
    [O_MAX_BYTES] = {.name = "max_bytes",
                     .type = LG_OPT_BYTES,
                     .check = lg_opt_check_positive,
                     .doc = "A group is cut (flagged truncated) before it "
                            "grows past this size (default: the source's "
                            "max_record_bytes)."},
    [O_TIMEOUT] = {.name = "timeout",
                   .type = LG_OPT_DURATION,
                   .def = "1s",
                   .check = lg_opt_check_positive,
                   .doc = "An open group that gets no line for this long "
                          "is emitted."},
    [O_COUNT] = {.name = NULL},
};

const lg_option_t *lg_ml_options(void) { return ml_options; }

/* Appends one line to the error text. */
static void err_line(char *err, size_t errlen, const char *msg) {
  size_t n = strlen(err);
  if (n + 1 >= errlen)
    return;
  snprintf(err + n, errlen - n, "%s%s", n ? "\n" : "", msg);
}

int lg_ml_conf_parse_lua(lua_State *L, int idx, const char *path,
                         lg_ml_conf_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (errlen > 0)
    err[0] = '\0';
  idx = idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
  int t = lua_type(L, idx);
  if (t == LUA_TNIL)
    return 0;
  lg_ml_spec_t spec = {0};
  char msg[1024];
  if (t == LUA_TSTRING) {
    spec.preset = lua_tostring(L, idx);
    *out = lg_ml_conf_create(&spec, path, msg, sizeof msg);
    if (*out == NULL) {
      err_line(err, errlen, msg);
      return -EINVAL;
    }
    return 0;
  }
  if (t != LUA_TTABLE) {
    snprintf(msg, sizeof msg,
             "%s: expected a preset name (\"java\", \"python\", \"go\") or a "
             "table, got %s",
             path, lua_typename(L, t));
    err_line(err, errlen, msg);
    return -EINVAL;
  }
  int bad = 0;
  /* Unknown keys. */
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING ||
        lg_opt_find(ml_options, lua_tostring(L, -2)) < 0) {
      const char *near = lua_type(L, -2) == LUA_TSTRING
                             ? lg_opt_closest(ml_options, lua_tostring(L, -2))
                             : NULL;
      if (near != NULL)
        snprintf(msg, sizeof msg, "%s.%s: unknown key (did you mean %s?)", path,
                 lua_tostring(L, -2), near);
      else if (lua_type(L, -2) == LUA_TSTRING)
        snprintf(msg, sizeof msg, "%s.%s: unknown key", path,
                 lua_tostring(L, -2));
      else
        snprintf(msg, sizeof msg, "%s: keys must be names", path);
      err_line(err, errlen, msg);
      bad = 1;
    }
    lua_pop(L, 1);
  }
  lg_optval_t v[O_COUNT];
  memset(v, 0, sizeof v);
  for (int k = 0; k < O_COUNT; k++) {
    char kp[512];
    snprintf(kp, sizeof kp, "%s.%s", path, ml_options[k].name);
    lua_getfield(L, idx, ml_options[k].name);
    int rc = lua_isnil(L, -1)
                 ? lg_opt_set_default(&ml_options[k], &v[k], msg, sizeof msg)
                 : lg_opt_parse_lua(L, -1, &ml_options[k], kp, &v[k], msg,
                                    sizeof msg);
    lua_pop(L, 1);
    if (rc < 0) {
      err_line(err, errlen, msg);
      bad = 1;
    }
  }
  /* Compiled even when another key is wrong, so every problem is told. */
  if (v[O_MAX_LINES].i > UINT32_MAX || v[O_MAX_LINES].i < 0)
    v[O_MAX_LINES].i = UINT32_MAX;
  spec.start = v[O_START].s;
  spec.cont = v[O_CONTINUE].s;
  spec.max_lines = (uint32_t)v[O_MAX_LINES].i;
  spec.max_bytes = v[O_MAX_BYTES].i > 0 ? (uint64_t)v[O_MAX_BYTES].i : 0;
  spec.timeout_ms = v[O_TIMEOUT].i > 0 ? (uint64_t)v[O_TIMEOUT].i : 0;
  *out = lg_ml_conf_create(&spec, path, msg, sizeof msg);
  if (*out == NULL) {
    err_line(err, errlen, msg);
    bad = 1;
  } else if (bad) {
    lg_ml_conf_unref(*out);
    *out = NULL;
  }
  for (int k = 0; k < O_COUNT; k++)
    lg_optval_free(&v[k]);
  return bad ? -EINVAL : 0;
}

/* ------------------------------------------------------------------ */
/* Grouping. */

lg_ml_t *lg_ml_create(const lg_ml_conf_t *c, size_t default_max_bytes) {
  lg_ml_t *m = calloc(1, sizeof *m);
  if (m == NULL)
    return NULL;
  m->md = pcre2_match_data_create(1, NULL);
  if (m->md == NULL) {
    free(m);
    return NULL;
  }
  m->c = lg_ml_conf_ref(c);
  m->max_bytes = c->max_bytes ? (size_t)c->max_bytes : default_max_bytes;
  if (m->max_bytes == 0)
    m->max_bytes = (size_t)1 << 20;
  return m;
}

void lg_ml_destroy(lg_ml_t *m) {
  if (m == NULL)
    return;
  for (int s = 0; s < 2; s++)
    free(m->g[s].buf);
  pcre2_match_data_free(m->md);
  lg_ml_conf_unref(m->c);
  free(m);
}

static int match(lg_ml_t *m, const pcre2_code *re, const char *p, size_t n) {
  return pcre2_match(re, (PCRE2_SPTR)p, n, 0, 0, m->md, NULL) >= 0;
}

static int emit(lg_ml_t *m, int s, lg_batch_t *out) {
  group_t *g = &m->g[s];
  if (!g->open)
    return 0;
  size_t len = g->len;
  /* Blank lines a group took at its end (python chaining, go) are not
   * part of the message. */
  while (len > 0 && g->nlines > 1 && g->buf[len - 1] == '\n')
    len--;
  uint32_t flags = g->flags | (g->truncated ? LG_REC_TRUNCATED : 0);
  int64_t rc =
      lg_batch_add(out, g->buf, len, g->time_ns, g->off, g->end, flags);
  if (rc < 0)
    return (int)rc; /* still open: the checkpoint stays before it */
  g->open = 0;
  g->len = 0;
  if (g->cap > (64u << 10)) {
    free(g->buf);
    g->buf = NULL;
    g->cap = 0;
  }
  return 0;
}

static int append(group_t *g, const char *p, size_t n) {
  size_t need = g->len + (g->nlines ? 1 : 0) + n;
  if (LG_GROW(g->buf, g->cap, need, 256) != 0)
    return -ENOMEM;
  if (g->nlines)
    g->buf[g->len++] = '\n';
  if (n > 0) /* an empty first line leaves buf NULL */
    memcpy(g->buf + g->len, p, n);
  g->len += n;
  g->nlines++;
  return 0;
}

static int open_group(lg_ml_t *m, int s, const lg_rec_t *r, const char *body,
                      int truncated, uint64_t now_ms) {
  group_t *g = &m->g[s];
  g->open = 1;
  g->state = G_FRAMES;
  g->truncated = truncated;
  g->nlines = g->nconts = 0;
  g->len = 0;
  g->flags = r->flags & (LG_REC_HAS_STREAM | LG_REC_STDERR | LG_REC_FMT_CRI |
                         LG_REC_FMT_DOCKER | LG_REC_CRI_PARTIAL);
  g->time_ns = r->time_ns;
  g->off = r->offset;
  g->end = r->end_offset;
  g->last_ms = now_ms;
  g->seq = ++m->seq;
  return append(g, body, r->body_len);
}

/* Adds a line to the open group, cutting it first at the limits. */
static int extend(lg_ml_t *m, int s, const lg_rec_t *r, const char *body,
                  lg_batch_t *out, uint64_t now_ms) {
  group_t *g = &m->g[s];
  if (g->nlines >= m->c->max_lines || g->len + 1 + r->body_len > m->max_bytes) {
    g->truncated = 1;
    int rc = emit(m, s, out);
    if (rc != 0)
      return rc;
    return open_group(m, s, r, body, 1, now_ms);
  }
  g->end = r->end_offset;
  g->last_ms = now_ms;
  g->nconts++;
  return append(g, body, r->body_len);
}

/* Copies a record that is not grouped (with its fields: the framer's
 * lugger.parse_error). */
static int pass(const lg_batch_t *in, uint32_t i, lg_batch_t *out) {
  const lg_rec_t *r = &in->recs[i];
  int64_t j = lg_batch_add(out, in->data + r->body_off, r->body_len, r->time_ns,
                           r->offset, r->end_offset, r->flags);
  if (j < 0)
    return (int)j;
  for (int32_t k = r->field_head; k >= 0; k = in->fields[k].next) {
    const lg_field_t *fd = &in->fields[k];
    const char *key = in->data + fd->key_off;
    int rc = 0;
    switch (fd->type) {
    case LG_VAL_STR:
      rc = lg_batch_set_str(out, (uint32_t)j, key, fd->key_len,
                            in->data + fd->s_off, fd->s_len);
      break;
    case LG_VAL_JSON:
      rc = lg_batch_set_json(out, (uint32_t)j, key, fd->key_len,
                             in->data + fd->s_off, fd->s_len);
      break;
    case LG_VAL_INT:
      rc = lg_batch_set_int(out, (uint32_t)j, key, fd->key_len, fd->i);
      break;
    case LG_VAL_NUM:
      rc = lg_batch_set_num(out, (uint32_t)j, key, fd->key_len, fd->d);
      break;
    case LG_VAL_BOOL:
      rc = lg_batch_set_bool(out, (uint32_t)j, key, fd->key_len, (int)fd->i);
      break;
    case LG_VAL_NULL:
      rc = lg_batch_set_null(out, (uint32_t)j, key, fd->key_len);
      break;
    default:
      rc = lg_batch_del(out, (uint32_t)j, key, fd->key_len);
      break;
    }
    if (rc != 0)
      return rc;
  }
  return 0;
}

static int one(lg_ml_t *m, const lg_batch_t *in, uint32_t i, lg_batch_t *out,
               uint64_t now_ms) {
  const lg_ml_conf_t *c = m->c;
  const lg_rec_t *r = &in->recs[i];
  const char *body = in->data + r->body_off;
  size_t n = r->body_len;
  int s = (r->flags & LG_REC_STDERR) ? 1 : 0;
  group_t *g = &m->g[s];
  int rc;
  if ((r->flags & (LG_REC_TRUNCATED | LG_REC_PARSE_ERROR)) ||
      r->field_head >= 0) {
    /* Pieces of an over-long line and unparsable lines are not lines of a
     * trace; keep them whole and in order. */
    if ((rc = emit(m, s, out)) != 0)
      return rc;
    return pass(in, i, out);
  }
  if (g->open) {
    if (g->state == G_AFTER_LAST) {
      if (match(m, c->chain, body, n)) {
        if (c->start != NULL && match(m, c->start, body, n))
          g->state = G_FRAMES; /* the next trace of the chain */
        return extend(m, s, r, body, out, now_ms);
      }
    } else if (c->cont != NULL ? match(m, c->cont, body, n)
                               : !match(m, c->start, body, n)) {
      return extend(m, s, r, body, out, now_ms);
    } else if (c->last != NULL && g->nconts > 0 && match(m, c->last, body, n)) {
      rc = extend(m, s, r, body, out, now_ms);
      g->state = G_AFTER_LAST;
      return rc;
    }
    if ((rc = emit(m, s, out)) != 0)
      return rc;
  }
  if (c->start == NULL || match(m, c->start, body, n))
    return open_group(m, s, r, body, 0, now_ms);
  return pass(in, i, out);
}

int lg_ml_process(lg_ml_t *m, const lg_batch_t *in, lg_batch_t *out,
                  uint64_t now_ms) {
  for (uint32_t i = 0; i < in->n; i++) {
    int rc = one(m, in, i, out, now_ms);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Emits open groups, oldest first; only idle ones when `idle_only`. */
static int flush(lg_ml_t *m, lg_batch_t *out, int idle_only, uint64_t now_ms) {
  int first = m->g[1].open && (!m->g[0].open || m->g[1].seq < m->g[0].seq);
  for (int k = 0; k < 2; k++) {
    int s = k == 0 ? first : !first;
    group_t *g = &m->g[s];
    if (!g->open || (idle_only && now_ms - g->last_ms < m->c->timeout_ms))
      continue;
    int rc = emit(m, s, out);
    if (rc != 0)
      return rc;
  }
  return 0;
}

int lg_ml_flush(lg_ml_t *m, lg_batch_t *out) { return flush(m, out, 0, 0); }

int lg_ml_flush_idle(lg_ml_t *m, lg_batch_t *out, uint64_t now_ms) {
  return flush(m, out, 1, now_ms);
}

void lg_ml_reset(lg_ml_t *m) {
  for (int s = 0; s < 2; s++) {
    m->g[s].open = 0;
    m->g[s].len = 0;
  }
}

uint64_t lg_ml_safe_offset(const lg_ml_t *m) {
  uint64_t o = UINT64_MAX;
  for (int s = 0; s < 2; s++)
    if (m->g[s].open && m->g[s].off < o)
      o = m->g[s].off;
  return o;
}

size_t lg_ml_held_mem(const lg_ml_t *m) {
  return (m->g[0].open ? m->g[0].cap : 0) + (m->g[1].open ? m->g[1].cap : 0);
}

size_t lg_ml_pending(const lg_ml_t *m) {
  return (m->g[0].open ? m->g[0].nlines : 0) +
         (m->g[1].open ? m->g[1].nlines : 0);
}
