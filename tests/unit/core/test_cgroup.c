/* Unit tests: lg_cgroup (the default number of workers, the memory limit). Each
 * case writes a process's view in a temporary directory as the kernel shows it:
 * a `mountinfo` and a `cgroup` file (proc(5), cgroups(7)) and the cgroup
 * directories with their quota files (cgroup v2 cpu.max, v1
 * cpu.cfs_quota_us and cpu.cfs_period_us). The real kernel files are read
 * by it.test_default_workers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/lg_cgroup.h"
#include "helpers/lg_test.h"

static char dir[256];

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "%s", lg_test_tmpdir("lg_cgroup_"));
  return 0;
}

static int teardown(void **state) {
  (void)state;
  return lg_test_rmtree(dir);
}

/* Writes `text` to <dir>/<rel>, making the directories on the way. */
static void put(const char *rel, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, rel);
  for (char *p = path + strlen(dir) + 1; *p; p++)
    if (*p == '/') {
      *p = '\0';
      mkdir(path, 0755);
      *p = '/';
    }
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* A mountinfo line mounting cgroup `root` of a hierarchy at <dir>/<mnt>. */
static char *mount_line(char *out, size_t cap, int id, const char *root,
                        const char *mnt, const char *type,
                        const char *superopts) {
  snprintf(out, cap,
           "%d 20 0:%d %s %s/%s rw,nosuid,nodev,noexec,relatime shared:%d - "
           "%s %s %s\n",
           id, id, root, dir, mnt, id, type, type, superopts);
  return out;
}

static double quota_of(const char *proc) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, proc);
  return lg_cgroup_cpu_quota(p);
}

/* cgroup v2: the least quota on the way up from the process's cgroup;
 * "max" is no quota. */
static void test_v2_path(void **state) {
  (void)state;
  char mi[4096], l1[1024], l2[1024];
  snprintf(mi, sizeof mi, "%s%s",
           mount_line(l1, sizeof l1, 25, "/", "v2a/proc", "proc", "rw"),
           mount_line(l2, sizeof l2, 26, "/", "v2a/sys/fs/cgroup", "cgroup2",
                      "rw,nsdelegate"));
  put("v2a/proc/mountinfo", mi);
  put("v2a/proc/cgroup", "0::/kubepods/pod1/c1\n");
  put("v2a/sys/fs/cgroup/kubepods/cpu.max", "max 100000\n");
  put("v2a/sys/fs/cgroup/kubepods/pod1/cpu.max", "250000 100000\n");
  put("v2a/sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "150000 100000\n");
  assert_float_equal(quota_of("v2a/proc"), 1.5, 1e-9);
  /* A tighter ancestor wins. */
  put("v2a/sys/fs/cgroup/kubepods/pod1/cpu.max", "50000 100000\n");
  assert_float_equal(quota_of("v2a/proc"), 0.5, 1e-9);
  /* No quota anywhere. */
  put("v2a/sys/fs/cgroup/kubepods/pod1/cpu.max", "max 100000\n");
  put("v2a/sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "max 100000\n");
  assert_float_equal(quota_of("v2a/proc"), 0, 1e-9);
}

/* In a container: the container's own cgroup is mounted at
 * /sys/fs/cgroup, seen as "/" with a cgroup namespace, or as its full
 * path (mountinfo's root) without one. */
static void test_v2_container(void **state) {
  (void)state;
  char mi[4096], l1[1024];
  put("v2b/proc/mountinfo",
      mount_line(l1, sizeof l1, 30, "/", "v2b/cg", "cgroup2", "rw"));
  put("v2b/proc/cgroup", "0::/\n");
  put("v2b/cg/cpu.max", "200000 100000\n");
  assert_float_equal(quota_of("v2b/proc"), 2.0, 1e-9);

  snprintf(mi, sizeof mi, "%s",
           mount_line(l1, sizeof l1, 31, "/kubepods/pod2/c2", "v2c/cg",
                      "cgroup2", "rw"));
  put("v2c/proc/mountinfo", mi);
  put("v2c/proc/cgroup", "0::/kubepods/pod2/c2\n");
  put("v2c/cg/cpu.max", "75000 100000\n");
  assert_float_equal(quota_of("v2c/proc"), 0.75, 1e-9);
}

/* A hybrid host (this machine's kind): the unified hierarchy is mounted
 * without the cpu controller (no cpu.max), which is in a v1 hierarchy,
 * alone or together with cpuacct. */
static void test_v1_hybrid(void **state) {
  (void)state;
  char mi[4096], l1[1024], l2[1024], l3[1024];
  snprintf(
      mi, sizeof mi, "%s%s%s",
      mount_line(l1, sizeof l1, 40, "/", "h/unified", "cgroup2", "rw"),
      mount_line(l2, sizeof l2, 41, "/", "h/memory", "cgroup", "rw,memory"),
      mount_line(l3, sizeof l3, 42, "/", "h/cpu,cpuacct", "cgroup",
                 "rw,cpu,cpuacct"));
  put("h/proc/mountinfo", mi);
  put("h/proc/cgroup", "5:memory:/x\n4:cpu,cpuacct:/lugger/a\n0::/\n");
  put("h/unified/cgroup.procs", "");
  put("h/cpu,cpuacct/lugger/a/cpu.cfs_quota_us", "-1\n");
  put("h/cpu,cpuacct/lugger/a/cpu.cfs_period_us", "100000\n");
  put("h/cpu,cpuacct/lugger/cpu.cfs_quota_us", "300000\n");
  put("h/cpu,cpuacct/lugger/cpu.cfs_period_us", "100000\n");
  assert_float_equal(quota_of("h/proc"), 3.0, 1e-9);
  /* "cpuacct" alone is not "cpu". */
  snprintf(
      mi, sizeof mi, "%s",
      mount_line(l1, sizeof l1, 43, "/", "h2/cpuacct", "cgroup", "rw,cpuacct"));
  put("h2/proc/mountinfo", mi);
  put("h2/proc/cgroup", "2:cpuacct:/\n");
  put("h2/cpuacct/cpu.cfs_quota_us", "100000\n");
  put("h2/cpuacct/cpu.cfs_period_us", "100000\n");
  assert_float_equal(quota_of("h2/proc"), 0, 1e-9);
}

/* A mount point with a space (mountinfo writes it as \040), and no
 * readable files at all. */
static void test_escapes_and_missing(void **state) {
  (void)state;
  char mi[1024];
  snprintf(mi, sizeof mi,
           "50 20 0:50 / %s/sp\\040ace/cg rw shared:1 - cgroup2 cgroup2 rw\n",
           dir);
  put("sp/proc/mountinfo", mi);
  put("sp/proc/cgroup", "0::/a\n");
  put("sp ace/cg/a/cpu.max", "120000 100000\n");
  assert_float_equal(quota_of("sp/proc"), 1.2, 1e-9);
  assert_float_equal(quota_of("nowhere/proc"), 0, 1e-9);
  put("nocg/proc/mountinfo", "");
  put("nocg/proc/cgroup", "0::/\n");
  assert_float_equal(quota_of("nocg/proc"), 0, 1e-9);
}

static uint64_t memory_of(const char *proc) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, proc);
  return lg_cgroup_memory_limit(p);
}

/* The memory limit: v2 memory.max (the least on the way up; "max" is
 * none), v1 memory.limit_in_bytes (its "none" is the largest page-aligned
 * 63-bit number), each from its own hierarchy on a hybrid host. */
static void test_memory(void **state) {
  (void)state;
  char mi[4096], l1[1024], l2[1024];
  snprintf(mi, sizeof mi, "%s",
           mount_line(l1, sizeof l1, 60, "/", "m2/cg", "cgroup2", "rw"));
  put("m2/proc/mountinfo", mi);
  put("m2/proc/cgroup", "0::/pod/c\n");
  put("m2/cg/pod/memory.max", "536870912\n");
  put("m2/cg/pod/c/memory.max", "max\n");
  assert_int_equal(memory_of("m2/proc"), 536870912);
  put("m2/cg/pod/c/memory.max", "134217728\n");
  assert_int_equal(memory_of("m2/proc"), 134217728);
  put("m2/cg/pod/memory.max", "max\n");
  put("m2/cg/pod/c/memory.max", "max\n");
  assert_int_equal(memory_of("m2/proc"), 0);

  snprintf(
      mi, sizeof mi, "%s%s",
      mount_line(l1, sizeof l1, 61, "/", "m1/unified", "cgroup2", "rw"),
      mount_line(l2, sizeof l2, 62, "/", "m1/memory", "cgroup", "rw,memory"));
  put("m1/proc/mountinfo", mi);
  put("m1/proc/cgroup", "4:memory:/a/b\n1:cpu:/\n0::/\n");
  put("m1/memory/a/b/memory.limit_in_bytes", "9223372036854771712\n");
  put("m1/memory/a/memory.limit_in_bytes", "268435456\n");
  put("m1/memory/memory.limit_in_bytes", "9223372036854771712\n");
  assert_int_equal(memory_of("m1/proc"), 268435456);
  /* The cpu quota of the same process: none (no cpu hierarchy mounted). */
  assert_float_equal(quota_of("m1/proc"), 0, 1e-9);
}

/* This process: at least 1, never more than the online CPUs. */
static void test_available(void **state) {
  (void)state;
  lg_cpus_info_t info;
  int n = lg_cpus_available(&info);
  assert_true(n >= 1);
  assert_true(n <= info.online);
  assert_non_null(info.by);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_v2_path),
      cmocka_unit_test(test_v2_container),
      cmocka_unit_test(test_v1_hybrid),
      cmocka_unit_test(test_escapes_and_missing),
      cmocka_unit_test(test_memory),
      cmocka_unit_test(test_available),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
