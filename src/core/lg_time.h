/*
 * lg_time.h - timestamps: nanoseconds since the Unix epoch, UTC, and
 * their RFC 3339 text form (the CRI log format and Docker json-file both
 * write RFC 3339 with up to nine fractional digits).
 */
#ifndef LG_TIME_H
#define LG_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Longest text lg_time_format_rfc3339 writes, plus a NUL. */
#define LG_TIME_RFC3339_MAX 40

/* Writes `ns` (nanoseconds since the epoch, UTC) as RFC 3339 with exactly
 * nine fractional digits and `Z`, e.g. "2024-05-01T12:00:00.123456789Z",
 * NUL-terminated. Returns the length without the NUL (30 for years
 * 0000-9999). */
size_t lg_time_format_rfc3339(int64_t ns, char out[LG_TIME_RFC3339_MAX]);

/* Parses RFC 3339 `YYYY-MM-DDTHH:MM:SS[.f+](Z|±hh:mm)` (also `t`, `z` and
 * a space for `T`) from exactly `len` bytes into nanoseconds since the
 * epoch, UTC. The fraction may have any number of digits (RFC 3339's
 * time-secfrac is "." 1*DIGIT); digits past the ninth are truncated, as
 * Go's time.Parse does. Returns 0, or -EINVAL when the text is not such a
 * time, names a day its month does not have (2023-02-29), or lies outside
 * what int64 nanoseconds hold (years 1678-2262). */
int lg_time_parse_rfc3339(const char *s, size_t len, int64_t *ns);

/* Days since 1970-01-01 of the proleptic Gregorian date `y`-`m`-`d`
 * (month 1-12, day 1-31, not checked against the month's length). */
int64_t lg_time_days_from_civil(int64_t y, unsigned m, unsigned d);

/* The current wall-clock time in nanoseconds since the epoch. */
int64_t lg_time_now_ns(void);

#endif
