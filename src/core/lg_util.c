#include "core/lg_util.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int lg_util_read_file(const char *path, size_t max, char **buf, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  /* The size is a hint: files in /proc say 0, and a file may grow while
   * it is read. */
  struct stat st;
  size_t cap = 4096;
  if (fstat(fd, &st) == 0 && st.st_size > 0 && (uint64_t)st.st_size < SIZE_MAX)
    cap = (size_t)st.st_size + 1;
  if (max != 0 && cap > max + 1)
    cap = max + 1;
  size_t n = 0;
  char *b = malloc(cap);
  int rc = b != NULL ? 0 : -ENOMEM;
  while (rc == 0) {
    if (n + 1 >= cap) {
      if (max != 0 && n > max) {
        rc = -EFBIG;
        break;
      }
      char *nb = cap <= SIZE_MAX / 2 ? realloc(b, cap * 2) : NULL;
      if (nb == NULL) {
        rc = -ENOMEM;
        break;
      }
      b = nb;
      cap *= 2;
    }
    ssize_t r = read(fd, b + n, cap - 1 - n);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
    } else if (r == 0) {
      break;
    } else {
      n += (size_t)r;
    }
  }
  close(fd);
  if (rc == 0 && max != 0 && n > max)
    rc = -EFBIG;
  if (rc != 0) {
    free(b);
    return rc;
  }
  b[n] = '\0';
  *buf = b;
  *len = n;
  return 0;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return w < 0 ? -errno : -EIO;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* The steps of lg_util_write_atomic once the temp file exists: on failure
 * the temp file is left for the caller to remove. */
static int write_rename(int fd, const char *tmp, const char *path,
                        const void *data, size_t len, const char **step) {
  int rc;
  *step = "write";
  if ((rc = write_all(fd, data, len)) != 0) {
    close(fd);
    return rc;
  }
  *step = "fsync";
  if (fsync(fd) != 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  *step = "close";
  if (close(fd) != 0)
    return -errno;
  *step = "rename";
  return rename(tmp, path) != 0 ? -errno : 0;
}

int lg_util_write_atomic(const char *dir, const char *path, const void *data,
                         size_t len, unsigned mode, const char **step) {
  const char *st = "create temp file";
  size_t pl = strlen(path);
  char *tmp = malloc(pl + sizeof ".tmp");
  int rc = tmp != NULL ? 0 : -ENOMEM;
  if (rc == 0) {
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp", sizeof ".tmp");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);
    if (fd < 0)
      rc = -errno;
    else if ((rc = write_rename(fd, tmp, path, data, len, &st)) != 0)
      unlink(tmp);
  }
  free(tmp);
  if (step != NULL)
    *step = st;
  if (rc != 0)
    return rc;
  /* The rename is durable only once the directory itself is synced: a
   * failure there fails the call (the caller writes again), not a warning
   * per write, which a disk failing for good would repeat every time.
   * EINVAL: a file system that cannot sync directories (nothing to do). */
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    if (fsync(dfd) != 0 && errno != EINVAL) {
      rc = -errno;
      if (step != NULL)
        *step = "fsync of directory";
    }
    close(dfd);
  }
  return rc;
}

char *lg_util_strdup(const char *s) {
  if (s == NULL)
    return NULL;
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p != NULL)
    memcpy(p, s, n);
  return p;
}

char **lg_util_strv_copy(const char *const *v, size_t n) {
  char **c = calloc(n ? n : 1, sizeof *c);
  if (c == NULL)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    if ((c[i] = lg_util_strdup(v[i])) == NULL && v[i] != NULL) {
      lg_util_strv_free(c, i);
      return NULL;
    }
  }
  return c;
}

void lg_util_strv_free(char **v, size_t n) {
  if (v == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

int lg_util_str_eq(const char *a, const char *b) {
  return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int lg_util_strv_eq(char *const *a, size_t na, char *const *b, size_t nb) {
  if (na != nb)
    return 0;
  for (size_t i = 0; i < na; i++)
    if (!lg_util_str_eq(a[i], b[i]))
      return 0;
  return 1;
}

void *lg_util_grow(void *p, size_t *cap, size_t need, size_t size, size_t min) {
  if (need <= *cap)
    return p;
  size_t c = *cap ? *cap : (min ? min : 1);
  while (c < need) {
    if (c > SIZE_MAX / 2)
      return NULL;
    c *= 2;
  }
  if (size != 0 && c > SIZE_MAX / size)
    return NULL;
  void *np = realloc(p, c * size);
  if (np == NULL)
    return NULL;
  *cap = c;
  return np;
}
