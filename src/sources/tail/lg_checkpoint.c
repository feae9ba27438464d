/*
 * lg_checkpoint.c - the checkpoint store: one JSON file per state_dir,
 * written atomically (temp file, fsync, rename, fsync of the directory).
 *
 * Entries live in an array searched linearly by dev+ino: a node has at most
 * a few thousand log files and lookups happen per open and per ack, not per
 * record.
 */
#include "sources/tail/lg_checkpoint.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/lg_buf.h"
#include "core/lg_json.h"
#include "core/lg_log.h"

#define CP_NAME "checkpoints.json"
#define CP_VERSION 1
/* Integers above 2^53 do not survive a JSON reader that uses doubles
 * (cJSON does); such values are written as decimal strings instead. */
#define CP_EXACT_MAX (UINT64_C(1) << 53)

struct lg_checkpoint {
  char *dir;
  char *file; /* <dir>/checkpoints.json */
  char *tmp;  /* <dir>/checkpoints.json.tmp */
  lg_checkpoint_entry_t *e;
  size_t n, cap;
  int dirty;
};

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p != NULL)
    memcpy(p, s, n);
  return p;
}

static char *join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (p == NULL)
    return NULL;
  memcpy(p, dir, a);
  p[a] = '/';
  memcpy(p + a + 1, name, b + 1);
  return p;
}

/* mkdir -p with mode 0750 for the directories it creates. */
static int mkdirs(const char *path) {
  char *p = xstrdup(path);
  if (p == NULL)
    return -ENOMEM;
  int rc = 0;
  for (char *s = p + 1;; s++) {
    if (*s != '/' && *s != '\0')
      continue;
    char c = *s;
    *s = '\0';
    if (mkdir(p, 0750) != 0 && errno != EEXIST) {
      rc = -errno;
      break;
    }
    *s = c;
    if (c == '\0')
      break;
  }
  free(p);
  if (rc == 0) {
    struct stat st;
    if (stat(path, &st) != 0)
      rc = -errno;
    else if (!S_ISDIR(st.st_mode))
      rc = -ENOTDIR;
  }
  return rc;
}

static void entries_clear(lg_checkpoint_t *c) {
  for (size_t i = 0; i < c->n; i++)
    free(c->e[i].path);
  c->n = 0;
}

/* Reads a u64 written as a JSON number or, above 2^53, a decimal string. */
static int get_u64(const cJSON *obj, const char *key, uint64_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (!(d >= 0) || d > (double)CP_EXACT_MAX || d != (double)(uint64_t)d)
      return -EINVAL;
    *out = (uint64_t)d;
    return 0;
  }
  if (cJSON_IsString(v) && v->valuestring[0] >= '0' &&
      v->valuestring[0] <= '9') {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v->valuestring, &end, 10);
    if (errno != 0 || *end != '\0')
      return -EINVAL;
    *out = x;
    return 0;
  }
  return -EINVAL;
}

static int parse_entry(const cJSON *o, lg_checkpoint_entry_t *e) {
  const cJSON *path = cJSON_GetObjectItemCaseSensitive(o, "path");
  const cJSON *fp = cJSON_GetObjectItemCaseSensitive(o, "fingerprint");
  uint64_t fp_len;
  if (!cJSON_IsObject(o) || !cJSON_IsString(path) || !cJSON_IsString(fp) ||
      get_u64(o, "dev", &e->dev) != 0 || get_u64(o, "ino", &e->ino) != 0 ||
      get_u64(o, "fp_len", &fp_len) != 0 || fp_len > UINT32_MAX ||
      get_u64(o, "offset", &e->offset) != 0)
    return -EINVAL;
  const char *h = fp->valuestring;
  if (strlen(h) != 16 || strspn(h, "0123456789abcdef") != 16)
    return -EINVAL;
  e->fingerprint = strtoull(h, NULL, 16);
  e->fp_len = (uint32_t)fp_len;
  e->path = xstrdup(path->valuestring);
  return e->path != NULL ? 0 : -ENOMEM;
}

/* Parses the store text; on success the entries replace c's. Returns 0,
 * -EINVAL (not a store), or -ENOMEM. */
static int parse_store(lg_checkpoint_t *c, const char *text, size_t len,
                       char *why, size_t whylen) {
  cJSON *root = cJSON_ParseWithLength(text, len);
  if (root == NULL) {
    snprintf(why, whylen, "not valid JSON");
    return -EINVAL;
  }
  int rc = 0;
  const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
  const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
  if (!cJSON_IsObject(root) || !cJSON_IsNumber(ver) ||
      ver->valuedouble != CP_VERSION || !cJSON_IsArray(files)) {
    snprintf(why, whylen, "not a version %d checkpoint store", CP_VERSION);
    rc = -EINVAL;
    goto out;
  }
  int n = cJSON_GetArraySize(files), i = 0;
  const cJSON *o;
  cJSON_ArrayForEach(o, files) {
    lg_checkpoint_entry_t e;
    memset(&e, 0, sizeof e);
    rc = parse_entry(o, &e);
    if (rc == -EINVAL) {
      snprintf(why, whylen, "entry %d of %d is malformed", i, n);
      goto out;
    }
    if (rc == 0)
      rc = lg_checkpoint_set(c, &e);
    free(e.path);
    if (rc != 0)
      goto out;
    i++;
  }
out:
  cJSON_Delete(root);
  if (rc != 0)
    entries_clear(c);
  return rc;
}

/* Moves a store we cannot read out of the way so that it is kept for a
 * human to look at, and the collector can start. */
static void set_aside(lg_checkpoint_t *c, const char *why) {
  char aside[4096];
  snprintf(aside, sizeof aside, "%s.corrupt-%lld", c->file,
           (long long)time(NULL));
  if (rename(c->file, aside) == 0)
    lg_log_warn("checkpoint",
                "%s: %s; moved to %s, starting with no checkpoints", c->file,
                why, aside);
  else
    lg_log_error("checkpoint",
                 "%s: %s; cannot move it aside (%s), starting with no "
                 "checkpoints",
                 c->file, why, strerror(errno));
}

static int load(lg_checkpoint_t *c, char *err, size_t errlen) {
  int fd = open(c->file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return 0;
    snprintf(err, errlen, "%s: %s", c->file, strerror(errno));
    return -errno;
  }
  lg_buf_t b = LG_BUF_INIT;
  int rc = 0;
  for (;;) {
    if ((rc = lg_buf_reserve(&b, 65536)) != 0)
      break;
    ssize_t r = read(fd, b.data + b.len, b.cap - b.len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      rc = -errno;
      break;
    }
    if (r == 0)
      break;
    b.len += (size_t)r;
  }
  close(fd);
  if (rc != 0) {
    snprintf(err, errlen, "%s: read: %s", c->file, strerror(-rc));
    lg_buf_free(&b);
    return rc;
  }
  char why[128];
  rc = parse_store(c, b.data ? b.data : "", b.len, why, sizeof why);
  lg_buf_free(&b);
  if (rc == -EINVAL) {
    set_aside(c, why);
    return 0;
  }
  if (rc != 0)
    snprintf(err, errlen, "%s: %s", c->file, strerror(-rc));
  return rc;
}

lg_checkpoint_t *lg_checkpoint_open(const char *state_dir, char *err,
                                    size_t errlen) {
  lg_checkpoint_t *c = calloc(1, sizeof *c);
  if (c == NULL || (c->dir = xstrdup(state_dir)) == NULL ||
      (c->file = join(state_dir, CP_NAME)) == NULL ||
      (c->tmp = join(state_dir, CP_NAME ".tmp")) == NULL) {
    snprintf(err, errlen, "out of memory");
    lg_checkpoint_close(c);
    return NULL;
  }
  int rc = mkdirs(state_dir);
  if (rc != 0) {
    snprintf(err, errlen, "%s: cannot create state directory: %s", state_dir,
             strerror(-rc));
    lg_checkpoint_close(c);
    return NULL;
  }
  /* A temp file left by a crash mid-save is garbage: the rename never
   * happened, so the store file itself is intact. */
  unlink(c->tmp);
  if (load(c, err, errlen) != 0) {
    lg_checkpoint_close(c);
    return NULL;
  }
  c->dirty = 0;
  return c;
}

void lg_checkpoint_close(lg_checkpoint_t *c) {
  if (c == NULL)
    return;
  entries_clear(c);
  free(c->e);
  free(c->dir);
  free(c->file);
  free(c->tmp);
  free(c);
}

static lg_checkpoint_entry_t *find(lg_checkpoint_t *c, uint64_t dev,
                                   uint64_t ino) {
  for (size_t i = 0; i < c->n; i++)
    if (c->e[i].ino == ino && c->e[i].dev == dev)
      return &c->e[i];
  return NULL;
}

const lg_checkpoint_entry_t *lg_checkpoint_find(lg_checkpoint_t *c,
                                                uint64_t dev, uint64_t ino) {
  return find(c, dev, ino);
}

int lg_checkpoint_set(lg_checkpoint_t *c, const lg_checkpoint_entry_t *e) {
  lg_checkpoint_entry_t *x = find(c, e->dev, e->ino);
  if (x != NULL) {
    if (strcmp(x->path, e->path) != 0) {
      char *p = xstrdup(e->path);
      if (p == NULL)
        return -ENOMEM;
      free(x->path);
      x->path = p;
      c->dirty = 1;
    }
    if (x->fingerprint != e->fingerprint || x->fp_len != e->fp_len ||
        x->offset != e->offset) {
      x->fingerprint = e->fingerprint;
      x->fp_len = e->fp_len;
      x->offset = e->offset;
      c->dirty = 1;
    }
    return 0;
  }
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    lg_checkpoint_entry_t *ne = realloc(c->e, cap * sizeof *ne);
    if (ne == NULL)
      return -ENOMEM;
    c->e = ne;
    c->cap = cap;
  }
  char *p = xstrdup(e->path);
  if (p == NULL)
    return -ENOMEM;
  c->e[c->n] = *e;
  c->e[c->n].path = p;
  c->n++;
  c->dirty = 1;
  return 0;
}

void lg_checkpoint_remove(lg_checkpoint_t *c, uint64_t dev, uint64_t ino) {
  lg_checkpoint_entry_t *x = find(c, dev, ino);
  if (x == NULL)
    return;
  free(x->path);
  *x = c->e[--c->n];
  c->dirty = 1;
}

size_t lg_checkpoint_count(const lg_checkpoint_t *c) { return c->n; }

const lg_checkpoint_entry_t *lg_checkpoint_at(const lg_checkpoint_t *c,
                                              size_t i) {
  return i < c->n ? &c->e[i] : NULL;
}

const char *lg_checkpoint_file(const lg_checkpoint_t *c) { return c->file; }

static int append_u64(lg_buf_t *b, const char *key, uint64_t v) {
  if (v > CP_EXACT_MAX)
    return lg_buf_appendf(b, ",\"%s\":\"%" PRIu64 "\"", key, v);
  return lg_buf_appendf(b, ",\"%s\":%" PRIu64, key, v);
}

static int encode(const lg_checkpoint_t *c, lg_buf_t *b) {
  int rc = lg_buf_appendf(b, "{\"version\":%d,\"files\":[", CP_VERSION);
  for (size_t i = 0; i < c->n && rc == 0; i++) {
    const lg_checkpoint_entry_t *e = &c->e[i];
    rc |= lg_buf_append(b, i ? ",\n{\"path\":" : "\n{\"path\":", i ? 10 : 9);
    rc |= lg_json_append_string(b, e->path, strlen(e->path));
    rc |= append_u64(b, "dev", e->dev);
    rc |= append_u64(b, "ino", e->ino);
    rc |= lg_buf_appendf(b, ",\"fingerprint\":\"%016" PRIx64 "\"",
                         e->fingerprint);
    rc |= append_u64(b, "fp_len", e->fp_len);
    rc |= append_u64(b, "offset", e->offset);
    rc |= lg_buf_putc(b, '}');
  }
  rc |= lg_buf_append(b, "]}\n", 3);
  return rc ? -ENOMEM : 0;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -errno;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int lg_checkpoint_save(lg_checkpoint_t *c) {
  if (!c->dirty)
    return 0;
  lg_buf_t b = LG_BUF_INIT;
  int rc = encode(c, &b);
  const char *step = "encode";
  int fd = -1;
  if (rc != 0)
    goto fail;
  step = "create temp file";
  fd = open(c->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    rc = -errno;
    goto fail;
  }
  step = "write";
  if ((rc = write_all(fd, b.data, b.len)) != 0)
    goto fail;
  step = "fsync";
  if (fsync(fd) != 0) {
    rc = -errno;
    goto fail;
  }
  step = "close";
  int cr = close(fd);
  fd = -1;
  if (cr != 0) {
    rc = -errno;
    goto fail;
  }
  step = "rename";
  if (rename(c->tmp, c->file) != 0) {
    rc = -errno;
    goto fail;
  }
  /* The rename is durable only once the directory itself is synced. */
  int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    if (fsync(dfd) != 0 && errno != EINVAL)
      lg_log_warn("checkpoint", "%s: fsync of directory: %s", c->dir,
                  strerror(errno));
    close(dfd);
  }
  lg_buf_free(&b);
  c->dirty = 0;
  return 0;
fail:
  if (fd >= 0)
    close(fd);
  unlink(c->tmp);
  lg_buf_free(&b);
  lg_log_error("checkpoint", "%s: %s: %s", c->file, step, strerror(-rc));
  return rc;
}
