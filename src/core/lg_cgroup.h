/*
 * lg_cgroup.h - what the process's cgroup allows: how many CPUs it may
 * use (the default number of workers) and how much memory (a warning at
 * start when the configured budgets do not fit).
 *
 * In a Kubernetes pod the node's online CPUs (sysconf) are not what the
 * container gets: its CPU limit is a CFS quota on its cgroup (cgroup v2
 * `cpu.max`, "<quota> <period>" or "max <period>"; cgroup v1
 * `cpu.cfs_quota_us` and `cpu.cfs_period_us`, quota -1 for none), and a
 * cpuset or `taskset` narrows the CPUs it may run on (sched_getaffinity).
 * One worker per node CPU in a pod limited to 2 CPUs on a 64-CPU node
 * makes 64 Lua states and a 512 MiB default memory budget under a memory
 * limit sized for 2.
 */
#ifndef LG_CGROUP_H
#define LG_CGROUP_H

#include <stdint.h>

/* What limits the CPUs (lg_cpus_available's `why`). */
typedef struct lg_cpus_info {
  int online;     /* sysconf(_SC_NPROCESSORS_ONLN), at least 1 */
  int affinity;   /* CPUs in the affinity mask; 0: unknown */
  double quota;   /* CPUs of the tightest CFS quota on the cgroup path
                     (quota / period); 0: no quota */
  const char *by; /* "online CPUs", "CPU affinity" or "cgroup CPU quota" */
} lg_cpus_info_t;

/* The CPUs this process may use: the least of the online CPUs, the CPUs
 * of its affinity mask and the CFS quota of its cgroup and the cgroup's
 * ancestors, rounded up (a 1.5 CPU limit gives 2); at least 1. `info`,
 * when not NULL, gets the numbers and which one decided. */
int lg_cpus_available(lg_cpus_info_t *info);

/* The CFS quota, in CPUs (quota / period, the least along the cgroup path
 * up to the hierarchy's root), of the process described by `proc_self`
 * (a directory with `mountinfo` and `cgroup`, normally "/proc/self"):
 * cgroup v2 `cpu.max` when the unified hierarchy has the cpu controller,
 * else cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`. Returns 0 when
 * there is no quota or it cannot be read (no cgroup fs, no permission). */
double lg_cgroup_cpu_quota(const char *proc_self);

/* The memory limit in bytes (the least along the cgroup path), read like
 * lg_cgroup_cpu_quota: cgroup v2 `memory.max`, else v1
 * `memory.limit_in_bytes`. Returns 0 when there is none or it cannot be
 * read. */
uint64_t lg_cgroup_memory_limit(const char *proc_self);

#endif
