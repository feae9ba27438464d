/*
 * lg_checkpoint.c - the checkpoint store: one JSON file per state_dir,
 * written atomically (temp file, fsync, rename, fsync of the directory).
 *
 * Entries live in an array searched linearly by dev+ino: a node has at most
 * a few thousand log files and lookups happen per open and per ack, not per
 * record.
 *
 * The journal: a store saved every checkpoint_interval (fsyncs bounded)
 * would let a crash repeat up to that interval of delivered input. So
 * every change between two saves is also appended, as one JSON line, to
 * <dir>/checkpoints.journal at once, without fsync: a write() per ack
 * is cheap, and what it wrote survives the process being killed (it is in
 * the page cache), which is the common crash. A successful save empties
 * the journal. Lines carry the generation ("gen", saves so far) of the
 * store whose snapshot they follow: at open, the lines of the loaded
 * store's generation and of later ones (changes made while a newer store
 * was being written, which the kill stopped) are applied on top of it, in
 * order; lines of older generations (the save succeeded but the
 * truncation did not happen) and lines that do not parse (a write cut
 * short by a full disk, or garbage after a machine crash) are skipped,
 * which can only leave an older offset: more input read again, never
 * less. Generations only grow, so a line of a later generation is a
 * change made after the loaded store's snapshot. After a
 * machine crash the journal may be gone; the fsync'd store then applies, as it
 * always did.
 *
 * Saves, in the background or not, are in lg_checkpoint_save.c.
 */
#include "sources/tail/lg_checkpoint.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/lg_buf.h"
#include "core/lg_json.h"
#include "core/lg_log.h"
#include "core/lg_util.h"
#include "sources/tail/lg_checkpoint_internal.h"

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
  char *p = lg_util_strdup(path);
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
  lg_u64map_free(&c->ix);
  c->ix_off = 0;
}

/* The index key of a device+inode: distinct inodes of one device have
 * distinct keys; pairs of two devices may collide (ix_off then). */
static uint64_t id_key(uint64_t dev, uint64_t ino) {
  return ino ^ (dev * UINT64_C(0x9e3779b97f4a7c15));
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

/* A path's bytes as hex (2 digits a byte), for the paths JSON text cannot
 * hold as they are (not UTF-8: a file name is any bytes but '/' and NUL),
 * and back: the decoded path (malloc'd), or NULL when `h` is not such hex
 * (or decodes to a NUL) or memory runs out. */
static int append_hex(lg_buf_t *b, const char *s) {
  int rc = lg_buf_append(b, ",\"path_hex\":\"", 13);
  for (; *s && rc == 0; s++)
    rc = lg_buf_appendf(b, "%02x", (unsigned char)*s);
  return rc | lg_buf_putc(b, '"');
}

static char *from_hex(const char *h) {
  size_t n = strlen(h);
  if (n == 0 || n % 2 != 0 || strspn(h, "0123456789abcdef") != n)
    return NULL;
  char *p = malloc(n / 2 + 1);
  for (size_t i = 0; p != NULL && i < n / 2; i++) {
    unsigned v;
    sscanf(h + 2 * i, "%2x", &v);
    if (v == 0) {
      free(p);
      return NULL;
    }
    p[i] = (char)v;
  }
  if (p != NULL)
    p[n / 2] = '\0';
  return p;
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
  /* "sent" is optional (stores written before it existed). */
  e->sent = 0;
  if (cJSON_GetObjectItemCaseSensitive(o, "sent") != NULL &&
      get_u64(o, "sent", &e->sent) != 0)
    return -EINVAL;
  const char *h = fp->valuestring;
  if (strlen(h) != 16 || strspn(h, "0123456789abcdef") != 16)
    return -EINVAL;
  e->fingerprint = strtoull(h, NULL, 16);
  e->fp_len = (uint32_t)fp_len;
  /* "path_hex" holds a path that is not UTF-8 exactly ("path" has it with
   * U+FFFD for the bytes that are not); one that does not decode leaves
   * "path" to stand for it, as before "path_hex" was written. */
  const cJSON *hex = cJSON_GetObjectItemCaseSensitive(o, "path_hex");
  e->path = cJSON_IsString(hex) ? from_hex(hex->valuestring) : NULL;
  if (e->path == NULL)
    e->path = lg_util_strdup(path->valuestring);
  return e->path != NULL ? 0 : -ENOMEM;
}

/* Keeps note `d` of a removed entry: the oldest go past
 * LG_CHECKPOINT_DONE_MAX and those older than LG_CHECKPOINT_DONE_KEEP_S
 * (lg__cp_note_time: the notes found at the open, however long the
 * collector was down, are kept for the start to tell). A note that cannot
 * be kept only makes a restart wait for records that do not come, as it
 * did before notes. */
static void add_done(lg_checkpoint_t *c, const lg_checkpoint_done_t *d) {
  int64_t old = (int64_t)time(NULL) - LG_CHECKPOINT_DONE_KEEP_S;
  size_t drop = 0;
  while (drop < c->ndone && lg__cp_note_time(c, &c->done[drop]) < old)
    drop++;
  if (c->ndone - drop >= LG_CHECKPOINT_DONE_MAX)
    drop = c->ndone - LG_CHECKPOINT_DONE_MAX + 1;
  if (drop > 0) {
    memmove(c->done, c->done + drop, (c->ndone - drop) * sizeof *c->done);
    c->ndone -= drop;
  }
  if (LG_GROW(c->done, c->done_cap, c->ndone + 1, 16) == 0)
    c->done[c->ndone++] = *d;
}

/* The store's optional "done" member (lg__cp_encode_done); items that do
 * not parse are skipped (a note only saves a wait). */
static void parse_done(lg_checkpoint_t *c, const cJSON *done) {
  const cJSON *a;
  if (!cJSON_IsArray(done))
    return;
  cJSON_ArrayForEach(a, done) {
    const cJSON *fp = cJSON_GetArrayItem(a, 0), *off = cJSON_GetArrayItem(a, 1),
                *at = cJSON_GetArrayItem(a, 2);
    lg_checkpoint_done_t d;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != 3 ||
        !cJSON_IsString(fp) || strlen(fp->valuestring) != 16 ||
        strspn(fp->valuestring, "0123456789abcdef") != 16 ||
        !cJSON_IsNumber(at) || !(fabs(at->valuedouble) < 0x1p62))
      continue; /* a time an int64_t cannot hold is not ours either */
    if (cJSON_IsNumber(off) && off->valuedouble >= 0 &&
        off->valuedouble <= (double)CP_EXACT_MAX)
      d.offset = (uint64_t)off->valuedouble;
    else if (cJSON_IsString(off) && off->valuestring[0] >= '0' &&
             off->valuestring[0] <= '9')
      d.offset = strtoull(off->valuestring, NULL, 10);
    else
      continue;
    d.fingerprint = strtoull(fp->valuestring, NULL, 16);
    d.removed = (int64_t)at->valuedouble;
    add_done(c, &d);
  }
}

/* Parses the store text; on success the entries replace c's. Returns 0,
 * -EINVAL (not a store), or -ENOMEM. */
static int parse_store(lg_checkpoint_t *c, const char *text, size_t len,
                       char *why, size_t whylen) {
  const char *stop = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &stop, 0);
  if (root == NULL) {
    /* Where it stopped making sense: a file cut short by a full disk
     * ends there, one zeroed by a crash starts there. */
    snprintf(why, whylen, "not valid JSON (at byte %zu of %zu)",
             stop != NULL && stop >= text ? (size_t)(stop - text) : 0, len);
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
  uint64_t gen = 0;
  if (cJSON_GetObjectItemCaseSensitive(root, "gen") != NULL &&
      get_u64(root, "gen", &gen) != 0) {
    snprintf(why, whylen, "\"gen\" is not a count");
    rc = -EINVAL;
    goto out;
  }
  c->gen = gen;
  parse_done(c, cJSON_GetObjectItemCaseSensitive(root, "done"));
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
  if (rc != 0) {
    entries_clear(c);
    c->ndone = 0;
  }
  return rc;
}

/* Moves a store we cannot read out of the way so that it is kept for a
 * human to look at, and the collector can start. What was read where is
 * then unknown: every file is read again from its start (lg_tail treats
 * the sources as restarted, see lg_checkpoint_corrupt), which repeats
 * records but loses none; reading from the end ("tail") could lose them. */
static void set_aside(lg_checkpoint_t *c, const char *why) {
  char aside[4096];
  snprintf(aside, sizeof aside, "%s.corrupt-%lld", c->file,
           (long long)time(NULL));
  c->corrupt = 1;
  if (rename(c->file, aside) == 0)
    lg_log_error("checkpoint",
                 "%s: %s; moved to %s. Starting without checkpoints: every "
                 "file is read again from its start (records delivered "
                 "before are delivered again; none is lost)",
                 c->file, why, aside);
  else
    lg_log_error("checkpoint",
                 "%s: %s; cannot move it aside (%s). Starting without "
                 "checkpoints: every file is read again from its start "
                 "(records delivered before are delivered again; none is "
                 "lost)",
                 c->file, why, strerror(errno));
}

/* Reads the whole file at `path` into `b`. Returns 0 or -errno. */
static int read_whole(const char *path, lg_buf_t *b) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  int rc = 0;
  for (;;) {
    if ((rc = lg_buf_reserve(b, 65536)) != 0)
      break;
    ssize_t r = read(fd, b->data + b->len, b->cap - b->len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      rc = -errno;
      break;
    }
    if (r == 0)
      break;
    b->len += (size_t)r;
  }
  close(fd);
  return rc;
}

static int load(lg_checkpoint_t *c, char *err, size_t errlen) {
  lg_buf_t b = LG_BUF_INIT;
  int rc = read_whole(c->file, &b);
  if (rc == -ENOENT) {
    lg_buf_free(&b);
    return 0;
  }
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

/* ---- journal ---- */

static int append_u64(lg_buf_t *b, const char *key, uint64_t v) {
  if (v > CP_EXACT_MAX)
    return lg_buf_appendf(b, ",\"%s\":\"%" PRIu64 "\"", key, v);
  return lg_buf_appendf(b, ",\"%s\":%" PRIu64, key, v);
}

int lg__cp_encode_done(lg_buf_t *b, const lg_checkpoint_t *c) {
  int64_t old = (int64_t)time(NULL) - LG_CHECKPOINT_DONE_KEEP_S;
  int rc = lg_buf_append(b, ",\"done\":[", 9);
  const char *sep = "";
  for (size_t i = 0; i < c->ndone; i++) {
    const lg_checkpoint_done_t *d = &c->done[i];
    if (lg__cp_note_time(c, d) < old)
      continue;
    rc |= lg_buf_appendf(b, "%s[\"%016" PRIx64 "\",", sep, d->fingerprint);
    rc |= d->offset > CP_EXACT_MAX
              ? lg_buf_appendf(b, "\"%" PRIu64 "\"", d->offset)
              : lg_buf_appendf(b, "%" PRIu64, d->offset);
    rc |= lg_buf_appendf(b, ",%" PRId64 "]", d->removed);
    sep = ",";
  }
  rc |= lg_buf_putc(b, ']');
  return rc ? -ENOMEM : 0;
}

int lg__cp_encode_entry(lg_buf_t *b, const lg_checkpoint_entry_t *e) {
  size_t pl = strlen(e->path);
  int rc = lg_buf_append(b, "{\"path\":", 8);
  rc |= lg_json_append_string(b, e->path, pl);
  if (!lg_json_utf8_valid(e->path, pl))
    rc |= append_hex(b, e->path);
  rc |= append_u64(b, "dev", e->dev);
  rc |= append_u64(b, "ino", e->ino);
  rc |=
      lg_buf_appendf(b, ",\"fingerprint\":\"%016" PRIx64 "\"", e->fingerprint);
  rc |= append_u64(b, "fp_len", e->fp_len);
  rc |= append_u64(b, "offset", e->offset);
  if (e->sent > e->offset)
    rc |= append_u64(b, "sent", e->sent);
  rc |= lg_buf_putc(b, '}');
  return rc ? -ENOMEM : 0;
}

static void journal_stop(lg_checkpoint_t *c, const char *why, int err) {
  if (c->jfd < 0)
    return;
  close(c->jfd);
  c->jfd = -1;
  lg_log_warn("checkpoint",
              "%s: %s%s%s; changes are kept by the next checkpoint save only "
              "(a crash before it reads up to checkpoint_interval of input "
              "again)",
              c->jfile, why, err ? ": " : "", err ? strerror(err) : "");
}

/* Writes the journal lines waiting in c->line with one write(2). */
void lg__cp_journal_flush(lg_checkpoint_t *c) {
  lg_buf_t *b = &c->line;
  if (b->len == 0)
    return;
  if (c->jfd < 0) {
    b->len = 0;
    return;
  }
  if (c->jbytes + b->len > JOURNAL_MAX) {
    b->len = 0;
    journal_stop(c, "larger than 64 MiB while checkpoint saves fail", 0);
    return;
  }
  ssize_t w;
  do
    w = write(c->jfd, b->data, b->len);
  while (w < 0 && errno == EINTR);
  size_t want = b->len;
  b->len = 0;
  if (w < 0) {
    journal_stop(c, "write", errno);
    return;
  }
  c->jbytes += (uint64_t)w;
  /* The window gets whole lines only: it is written back into the
   * journal once the save lands, and more lines follow it there. */
  size_t whole = (size_t)w;
  if (whole != want) {
    const char *nl = whole > 0 ? memrchr(b->data, '\n', whole) : NULL;
    whole = nl != NULL ? (size_t)(nl - b->data) + 1 : 0;
  }
  if (c->saving && lg_buf_append(&c->window, b->data, whole) != 0)
    journal_stop(c, "out of memory", 0);
  if ((size_t)w != want)
    journal_stop(c, "short write (disk full?)", 0);
}

/* Appends one change to the journal: `e` set, or (e->path NULL) the entry
 * of e->dev/e->ino removed. With `defer` the line waits in c->line for
 * the next lg__cp_journal_flush (lg_checkpoint_flush, or a change without
 * defer), so that the sent marks of one request cost one write(2). */
static void journal_write(lg_checkpoint_t *c, const lg_checkpoint_entry_t *e,
                          int defer) {
  if (c->jfd < 0)
    return;
  lg_buf_t *b = &c->line;
  int rc = lg_buf_appendf(b, "{\"gen\":%" PRIu64, c->gen);
  if (e->path != NULL) {
    rc |= lg_buf_append(b, ",\"set\":", 7);
    rc |= lg__cp_encode_entry(b, e);
  } else {
    rc |=
        lg_buf_appendf(b, ",\"del\":{\"dev\":%" PRIu64 ",\"ino\":%" PRIu64 "}",
                       e->dev, e->ino);
  }
  rc |= lg_buf_append(b, "}\n", 2);
  if (rc != 0) {
    b->len = 0;
    journal_stop(c, "out of memory", 0);
    return;
  }
  if (!defer)
    lg__cp_journal_flush(c);
}

/* Applies the journal lines of the loaded store's generation, in order
 * (see the top of the file), and says what they changed. */
static size_t journal_replay(lg_checkpoint_t *c) {
  lg_buf_t b = LG_BUF_INIT;
  int rc = read_whole(c->jfile, &b);
  if (rc != 0 || b.len == 0) {
    if (rc != 0 && rc != -ENOENT)
      lg_log_warn("checkpoint", "%s: read: %s; ignored", c->jfile,
                  strerror(-rc));
    lg_buf_free(&b);
    return 0;
  }
  size_t applied = 0, skipped = 0, files = 0, first_skipped = 0;
  uint64_t ahead = 0, newest = c->gen;
  for (size_t pos = 0; pos < b.len;) {
    char *nl = memchr(b.data + pos, '\n', b.len - pos);
    if (nl == NULL) {
      if (skipped++ == 0) /* a line cut short */
        first_skipped = pos;
      break;
    }
    size_t len = (size_t)(nl - (b.data + pos)), at = pos;
    cJSON *o = cJSON_ParseWithLength(b.data + pos, len);
    pos += len + 1;
    uint64_t gen;
    if (o == NULL || get_u64(o, "gen", &gen) != 0) {
      if (skipped++ == 0)
        first_skipped = at;
      cJSON_Delete(o);
      continue;
    }
    if (gen < c->gen) {
      cJSON_Delete(o); /* before the store's last save: already in it */
      continue;
    }
    if (gen > newest)
      newest = gen;
    const cJSON *set = cJSON_GetObjectItemCaseSensitive(o, "set");
    const cJSON *del = cJSON_GetObjectItemCaseSensitive(o, "del");
    lg_checkpoint_entry_t e;
    memset(&e, 0, sizeof e);
    if (set != NULL && parse_entry(set, &e) == 0) {
      const lg_checkpoint_entry_t *old = lg_checkpoint_find(c, e.dev, e.ino);
      if (old != NULL && old->fingerprint == e.fingerprint &&
          e.offset > old->offset) {
        ahead += e.offset - old->offset;
        files++;
      }
      if (lg_checkpoint_set(c, &e) == 0)
        applied++;
    } else if (del != NULL && get_u64(del, "dev", &e.dev) == 0 &&
               get_u64(del, "ino", &e.ino) == 0) {
      lg_checkpoint_remove(c, e.dev, e.ino);
      applied++;
    } else if (skipped++ == 0) {
      first_skipped = at;
    }
    free(e.path);
    cJSON_Delete(o);
  }
  size_t total = b.len;
  lg_buf_free(&b);
  /* New lines go after these in the journal: they must not carry an older
   * generation, or the next save (newest + 1) would not skip these. */
  c->gen = newest;
  if (applied > 0 || skipped > 0)
    lg_log_info("checkpoint",
                "%s: %zu checkpoint changes made after the last save "
                "replayed from the journal: %zu files resume %" PRIu64
                " bytes further on than %s says, bytes that are not read "
                "(and delivered) again",
                c->jfile, applied, files, ahead, CP_NAME);
  /* Lines cut short by a full disk or garbage after a crash: the files
   * they were about resume at the offsets before them (read again, not
   * lost). */
  if (skipped > 0)
    lg_log_warn("checkpoint",
                "%s: %zu lines that do not parse skipped, the first at byte "
                "%zu of %zu",
                c->jfile, skipped, first_skipped, total);
  return applied;
}

/* Opens the journal for appending; `truncate` empties it. */
void lg__cp_journal_open(lg_checkpoint_t *c, int truncate) {
  c->jfd =
      open(c->jfile,
           O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0),
           CP_MODE);
  if (c->jfd < 0) {
    lg_log_warn("checkpoint",
                "%s: %s; changes are kept by the checkpoint "
                "saves only",
                c->jfile, strerror(errno));
    return;
  }
  struct stat st;
  c->jbytes = fstat(c->jfd, &st) == 0 ? (uint64_t)st.st_size : 0;
}

lg_checkpoint_t *lg_checkpoint_open(const char *state_dir, char *err,
                                    size_t errlen) {
  lg_checkpoint_t *c = calloc(1, sizeof *c);
  if (c != NULL) {
    c->jfd = -1;
    c->opened = (int64_t)time(NULL);
  }
  if (c == NULL || (c->dir = lg_util_strdup(state_dir)) == NULL ||
      (c->file = join(state_dir, CP_NAME)) == NULL ||
      (c->tmp = join(state_dir, CP_NAME ".tmp")) == NULL ||
      (c->jfile = join(state_dir, CP_JOURNAL)) == NULL ||
      lg__cp_save_init(c) != 0) {
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
  /* With the store set aside, its journal means nothing either: its lines
   * would resume a few files at offsets whose base is unknown. */
  size_t replayed = c->corrupt ? 0 : journal_replay(c);
  /* Replayed changes are written into the store by the next save. */
  c->dirty = c->corrupt || replayed > 0;
  lg__cp_journal_open(c, c->corrupt);
  return c;
}

int lg_checkpoint_corrupt(const lg_checkpoint_t *c) {
  return c != NULL && c->corrupt;
}

void lg_checkpoint_close(lg_checkpoint_t *c) {
  if (c == NULL)
    return;
  lg__cp_save_wait(c);
  lg_atomic_file_destroy(c->saver);
  lg__cp_journal_flush(c);
  entries_clear(c);
  free(c->done);
  if (c->jfd >= 0)
    close(c->jfd);
  lg_buf_free(&c->line);
  lg_buf_free(&c->window);
  free(c->e);
  free(c->dir);
  free(c->file);
  free(c->tmp);
  free(c->jfile);
  free(c);
}

static lg_checkpoint_entry_t *find(lg_checkpoint_t *c, uint64_t dev,
                                   uint64_t ino) {
  if (!c->ix_off) {
    /* Every entry is in the index under its own key, no two share one. */
    size_t i;
    if (!lg_u64map_get(&c->ix, id_key(dev, ino), &i))
      return NULL;
    return c->e[i].dev == dev && c->e[i].ino == ino ? &c->e[i] : NULL;
  }
  for (size_t i = 0; i < c->n; i++)
    if (c->e[i].ino == ino && c->e[i].dev == dev)
      return &c->e[i];
  return NULL;
}

const lg_checkpoint_entry_t *lg_checkpoint_find(lg_checkpoint_t *c,
                                                uint64_t dev, uint64_t ino) {
  return find(c, dev, ino);
}

static int set_entry(lg_checkpoint_t *c, const lg_checkpoint_entry_t *e,
                     int defer) {
  lg_checkpoint_entry_t *x = find(c, e->dev, e->ino);
  if (x != NULL) {
    if (strcmp(x->path, e->path) != 0) {
      char *p = lg_util_strdup(e->path);
      if (p == NULL)
        return -ENOMEM;
      free(x->path);
      x->path = p;
      c->dirty = 1;
    }
    /* Another file on the inode, or the same one read again from an
     * earlier offset (truncated): the old sent mark says nothing of it. */
    uint64_t sent = x->fingerprint != e->fingerprint || e->offset < x->offset ||
                            e->sent > x->sent
                        ? e->sent
                        : x->sent;
    if (x->fingerprint != e->fingerprint || x->fp_len != e->fp_len ||
        x->offset != e->offset || x->sent != sent) {
      x->fingerprint = e->fingerprint;
      x->fp_len = e->fp_len;
      x->offset = e->offset;
      x->sent = sent;
      c->dirty = 1;
      journal_write(c, x, defer);
    }
    return 0;
  }
  if (LG_GROW(c->e, c->cap, c->n + 1, 16) != 0)
    return -ENOMEM;
  char *p = lg_util_strdup(e->path);
  if (p == NULL)
    return -ENOMEM;
  c->e[c->n] = *e;
  c->e[c->n].path = p;
  if (!c->ix_off && lg_u64map_add(&c->ix, id_key(e->dev, e->ino), c->n) != 1) {
    c->ix_off = 1; /* out of memory, or a collision: search the array */
    lg_u64map_free(&c->ix);
  }
  c->n++;
  c->dirty = 1;
  journal_write(c, &c->e[c->n - 1], defer);
  return 0;
}

int lg_checkpoint_set(lg_checkpoint_t *c, const lg_checkpoint_entry_t *e) {
  return set_entry(c, e, 0);
}

int lg_checkpoint_set_sent(lg_checkpoint_t *c, uint64_t dev, uint64_t ino,
                           uint64_t fingerprint, uint64_t sent) {
  const lg_checkpoint_entry_t *x = find(c, dev, ino);
  if (x == NULL || x->fingerprint != fingerprint || sent <= x->offset ||
      sent <= x->sent)
    return 0;
  lg_checkpoint_entry_t e = *x;
  e.sent = sent;
  return set_entry(c, &e, 1);
}

void lg_checkpoint_flush(lg_checkpoint_t *c) { lg__cp_journal_flush(c); }

void lg_checkpoint_remove(lg_checkpoint_t *c, uint64_t dev, uint64_t ino) {
  lg_checkpoint_entry_t *x = find(c, dev, ino);
  if (x == NULL)
    return;
  lg_checkpoint_entry_t gone = {.dev = dev, .ino = ino};
  if (x->offset > 0)
    add_done(c, &(lg_checkpoint_done_t){x->fingerprint, x->offset,
                                        (int64_t)time(NULL)});
  free(x->path);
  if (!c->ix_off) {
    lg_u64map_del(&c->ix, id_key(dev, ino));
    const lg_checkpoint_entry_t *last = &c->e[c->n - 1];
    if (last != x) /* moves into x's place: a replacement never fails */
      lg_u64map_put(&c->ix, id_key(last->dev, last->ino), (size_t)(x - c->e));
  }
  *x = c->e[--c->n];
  c->dirty = 1;
  journal_write(c, &gone, 0);
}

size_t lg_checkpoint_count(const lg_checkpoint_t *c) { return c->n; }

size_t lg_checkpoint_done_count(const lg_checkpoint_t *c) { return c->ndone; }

const lg_checkpoint_done_t *lg_checkpoint_done_at(const lg_checkpoint_t *c,
                                                  size_t i) {
  return i < c->ndone ? &c->done[i] : NULL;
}

const lg_checkpoint_entry_t *lg_checkpoint_at(const lg_checkpoint_t *c,
                                              size_t i) {
  return i < c->n ? &c->e[i] : NULL;
}

const char *lg_checkpoint_file(const lg_checkpoint_t *c) { return c->file; }
