/* Internal: the parts of crew_cpu_count that read files, with their roots as
 * parameters so tests can point them at a fake tree. */
#ifndef CREW_SRC_CPU_COUNT_H
#define CREW_SRC_CPU_COUNT_H

/* The CPU limit set by cgroups for the process whose /proc/<pid>/cgroup text
 * is in the file `proc_cgroup`, with the cgroup filesystems mounted under
 * `cgroup_root` (normally "/proc/self/cgroup" and "/sys/fs/cgroup"):
 * ceil(quota / period), the smallest along the cgroup's path up to the root,
 * for cgroup v2 (cpu.max) and v1 (cpu.cfs_quota_us, cpu.cfs_period_us, in a
 * "cpu" or "cpu,cpuacct" hierarchy). 0 when there is no limit or the files
 * cannot be read. */
int crew__cgroup_cpu_limit(const char *proc_cgroup, const char *cgroup_root);

#endif
