/* What the process's cgroup allows (lg_cgroup.h): its CFS quota and its
 * memory limit, read from /proc/self/mountinfo (where the cgroup
 * hierarchies are mounted, proc(5)), /proc/self/cgroup (the process's
 * cgroup in each, cgroups(7)) and the controller's files on the way from
 * that cgroup up to the hierarchy's root; and the CPUs it may use. */
#include "core/lg_cgroup.h"

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/lg_util.h"

/* Small files only: mountinfo of a busy node is tens of KiB. */
#define READ_MAX (4u << 20)

/* A mount of a cgroup hierarchy: its mount point and which cgroup of the
 * hierarchy is mounted there (mountinfo's "root": "/" on the host, the
 * container's own cgroup in a container without a cgroup namespace). */
typedef struct hier {
  char mnt[PATH_MAX];
  char root[PATH_MAX];
  int found;
} hier_t;

/* Copies mountinfo field `s` (up to a space) to `out`, decoding the
 * octal escapes of space, tab, newline and backslash. */
static const char *field(const char *s, char *out, size_t cap) {
  size_t n = 0;
  while (*s != '\0' && *s != ' ' && *s != '\n') {
    char c = *s++;
    if (c == '\\' && s[0] >= '0' && s[0] <= '7' && s[1] >= '0' && s[1] <= '7' &&
        s[2] >= '0' && s[2] <= '7') {
      c = (char)((s[0] - '0') * 64 + (s[1] - '0') * 8 + (s[2] - '0'));
      s += 3;
    }
    if (n + 1 < cap)
      out[n++] = c;
  }
  out[n] = '\0';
  return *s == ' ' ? s + 1 : s;
}

/* Whether comma-separated `list` (up to `end`) has the token `tok`. */
static int has_token(const char *list, const char *end, const char *tok) {
  size_t tl = strlen(tok);
  for (const char *p = list; p < end;) {
    const char *c = memchr(p, ',', (size_t)(end - p));
    const char *e = c != NULL ? c : end;
    if ((size_t)(e - p) == tl && memcmp(p, tok, tl) == 0)
      return 1;
    p = e + 1;
  }
  return 0;
}

/* Finds the cgroup2 mount (v2) and the cgroup v1 mount with controller
 * `ctl` (v1) in mountinfo text `mi`. */
static void find_mounts(const char *mi, const char *ctl, hier_t *v2,
                        hier_t *v1) {
  for (const char *line = mi; *line != '\0';) {
    const char *eol = strchr(line, '\n');
    if (eol == NULL)
      eol = line + strlen(line);
    /* id parent major:minor root mountpoint options [optional...] - type
     * source superoptions */
    char root[PATH_MAX], mnt[PATH_MAX], skip[PATH_MAX];
    const char *p = line;
    p = field(p, skip, sizeof skip);
    p = field(p, skip, sizeof skip);
    p = field(p, skip, sizeof skip);
    p = field(p, root, sizeof root);
    p = field(p, mnt, sizeof mnt);
    const char *sep = strstr(p, " - ");
    if (sep != NULL && sep < eol) {
      const char *type = sep + 3;
      const char *type_end = memchr(type, ' ', (size_t)(eol - type));
      if (type_end != NULL) {
        size_t tl = (size_t)(type_end - type);
        const char *src_end =
            memchr(type_end + 1, ' ', (size_t)(eol - type_end - 1));
        const char *opts = src_end != NULL ? src_end + 1 : eol;
        hier_t *h = NULL;
        if (tl == 7 && memcmp(type, "cgroup2", 7) == 0)
          h = v2;
        else if (tl == 6 && memcmp(type, "cgroup", 6) == 0 &&
                 has_token(opts, eol, ctl))
          h = v1;
        if (h != NULL && !h->found) {
          snprintf(h->mnt, sizeof h->mnt, "%s", mnt);
          snprintf(h->root, sizeof h->root, "%s", root);
          h->found = 1;
        }
      }
    }
    line = *eol == '\n' ? eol + 1 : eol;
  }
}

/* The process's cgroup path in hierarchy v2 ("0::<path>") or in the v1
 * hierarchy with controller `ctl`, from /proc/self/cgroup text `cg`.
 * Returns 0, or -1 when it has none. */
static int cgroup_path(const char *cg, const char *ctl, int v2, char *out,
                       size_t cap) {
  for (const char *line = cg; *line != '\0';) {
    const char *eol = strchr(line, '\n');
    if (eol == NULL)
      eol = line + strlen(line);
    const char *c1 = memchr(line, ':', (size_t)(eol - line));
    const char *c2 =
        c1 != NULL ? memchr(c1 + 1, ':', (size_t)(eol - c1 - 1)) : NULL;
    if (c2 != NULL) {
      int hit = v2 ? (c1 - line == 1 && line[0] == '0' && c2 == c1 + 1)
                   : has_token(c1 + 1, c2, ctl);
      if (hit) {
        snprintf(out, cap, "%.*s", (int)(eol - c2 - 1), c2 + 1);
        return 0;
      }
    }
    line = *eol == '\n' ? eol + 1 : eol;
  }
  return -1;
}

/* Reads the number in file <dir>/<name> into *v and, when `second` is
 * not NULL, the number after it (cpu.max's period) into *second. Returns
 * 1 when the first is "max" (no limit; *v untouched), 0 for a number, -1
 * when the file cannot be read. */
static int read_num(const char *dir, const char *name, double *v,
                    double *second) {
  char path[2 * PATH_MAX + 32], *text = NULL;
  size_t len;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (lg_util_read_file(path, 4096, &text, &len) != 0)
    return -1;
  int rc = strncmp(text, "max", 3) == 0 ? 1 : 0;
  char *end = text;
  if (rc == 0)
    *v = strtod(text, &end);
  else
    end = text + 3;
  if (second != NULL)
    *second = strtod(end, NULL);
  free(text);
  return rc;
}

/* A controller's limit in cgroup directory `dir`: > 0, 0 for none, -1
 * when its files are not there (the controller is not enabled there). */
typedef double (*limit_fn)(const char *dir, int v2);

/* The CFS quota in CPUs: v2 cpu.max "<quota> <period>" or "max <period>";
 * v1 cpu.cfs_quota_us (-1: none) / cpu.cfs_period_us. */
static double cpu_limit(const char *dir, int v2) {
  double quota = 0, period = 0;
  if (v2) {
    int rc = read_num(dir, "cpu.max", &quota, &period);
    if (rc != 0)
      return rc < 0 ? -1 : 0; /* "max": no quota */
  } else if (read_num(dir, "cpu.cfs_quota_us", &quota, NULL) != 0 ||
             read_num(dir, "cpu.cfs_period_us", &period, NULL) != 0) {
    return -1;
  }
  return quota > 0 && period > 0 ? quota / period : 0;
}

/* The memory limit in bytes: v2 memory.max ("max": none); v1
 * memory.limit_in_bytes, where "none" is the largest page-aligned
 * 63-bit number. */
static double memory_limit(const char *dir, int v2) {
  double bytes = 0;
  int rc =
      read_num(dir, v2 ? "memory.max" : "memory.limit_in_bytes", &bytes, NULL);
  if (rc != 0)
    return rc < 0 ? -1 : 0; /* "max": no limit */
  return bytes > 0 && bytes < 9.0e18 ? bytes : 0;
}

/* The least limit on the path from the process's cgroup up to the
 * hierarchy's mount point: -1 when no directory on the way has the files,
 * 0 when none sets a limit. */
static double hier_limit(const hier_t *h, const char *cg, const char *ctl,
                         int v2, limit_fn limit) {
  char path[PATH_MAX];
  if (!h->found || cgroup_path(cg, ctl, v2, path, sizeof path) != 0)
    return -1;
  /* The part of the path below the mounted cgroup. A path outside it
   * (another cgroup namespace) has nothing of ours to read but the
   * mount's own directory. */
  const char *rel = path;
  size_t rl = strlen(h->root);
  if (strcmp(h->root, "/") != 0) {
    if (strncmp(path, h->root, rl) == 0 && (path[rl] == '/' || path[rl] == 0))
      rel = path + rl;
    else
      rel = "";
  }
  char dir[2 * PATH_MAX];
  snprintf(dir, sizeof dir, "%s%s", h->mnt, strcmp(rel, "/") == 0 ? "" : rel);
  size_t mnt_len = strlen(h->mnt);
  double least = -1;
  for (;;) {
    double q = limit(dir, v2);
    if (q > 0 && (least <= 0 || q < least))
      least = q;
    else if (q == 0 && least < 0)
      least = 0;
    char *slash = strrchr(dir, '/');
    if (strlen(dir) <= mnt_len || slash == NULL || slash < dir + mnt_len)
      break;
    *slash = '\0';
  }
  return least;
}

/* The limit of controller `ctl` for the process `proc_self` describes:
 * from the unified hierarchy when the controller is enabled there (its
 * files exist on the path), else from its v1 hierarchy; 0 for none. */
static double cgroup_limit(const char *proc_self, const char *ctl,
                           limit_fn limit) {
  char path[PATH_MAX], *mi = NULL, *cg = NULL;
  size_t len;
  snprintf(path, sizeof path, "%s/mountinfo", proc_self);
  if (lg_util_read_file(path, READ_MAX, &mi, &len) != 0)
    return 0;
  snprintf(path, sizeof path, "%s/cgroup", proc_self);
  if (lg_util_read_file(path, READ_MAX, &cg, &len) != 0) {
    free(mi);
    return 0;
  }
  hier_t v2 = {.found = 0}, v1 = {.found = 0};
  find_mounts(mi, ctl, &v2, &v1);
  double q = hier_limit(&v2, cg, ctl, 1, limit);
  if (q < 0)
    q = hier_limit(&v1, cg, ctl, 0, limit);
  free(mi);
  free(cg);
  return q > 0 ? q : 0;
}

double lg_cgroup_cpu_quota(const char *proc_self) {
  return cgroup_limit(proc_self, "cpu", cpu_limit);
}

uint64_t lg_cgroup_memory_limit(const char *proc_self) {
  double b = cgroup_limit(proc_self, "memory", memory_limit);
  return b > 0 ? (uint64_t)b : 0;
}

int lg_cpus_available(lg_cpus_info_t *info) {
  lg_cpus_info_t i = {.online = 1, .by = "online CPUs"};
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n > 1)
    i.online = n < INT_MAX ? (int)n : INT_MAX;
  int best = i.online;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    i.affinity = CPU_COUNT(&set);
    if (i.affinity > 0 && i.affinity < best) {
      best = i.affinity;
      i.by = "CPU affinity";
    }
  }
  i.quota = lg_cgroup_cpu_quota("/proc/self");
  if (i.quota > 0) {
    /* Rounded up: a 1.5 CPU limit lets two workers run part time. */
    int q = i.quota >= INT_MAX ? INT_MAX : (int)i.quota;
    if (q < i.quota - 1e-9)
      q++;
    if (q < 1)
      q = 1;
    if (q < best) {
      best = q;
      i.by = "cgroup CPU quota";
    }
  }
  if (info != NULL)
    *info = i;
  return best;
}
