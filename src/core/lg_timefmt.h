/*
 * lg_timefmt.h - time strings in a given format to nanoseconds since the
 * epoch (UTC), for lugger.parse_time and rec:set_time.
 *
 * A format is either a name or strftime-style text (the directives of
 * POSIX strptime, plus fractional seconds):
 *
 *   named      "rfc3339"  2024-05-01T12:00:00.123Z, 2024-05-01 12:00:00+02:00
 *              "iso8601"  rfc3339, and also a date alone, no seconds, no zone
 *                         (UTC), basic form 20240501T120000Z, "," before
 *                         the fraction, zones +hh and +hhmm
 *              "nginx", "apache"  01/May/2024:12:00:00 +0000 (the
 *                         time_local of nginx and Apache access logs)
 *              "syslog"   May  1 12:00:00 (RFC 3164: no year, no zone; see
 *                         below)
 *              "epoch", "epoch_ms", "epoch_us", "epoch_ns"  a decimal
 *                         number of seconds (ms, us, ns) since the epoch,
 *                         with an optional sign and fraction
 *   directives %Y year (4 digits)  %y year 69-99 -> 19xx, 00-68 -> 20xx
 *              %m month  %d day  %e day (leading space allowed)  %j day of
 *              the year  %H hour  %I hour 1-12 with %p AM/PM  %M minute
 *              %S second (0-60)  %f or %N fraction of a second, 1 digit
 *              or more (past the ninth truncated)  %s seconds since the epoch
 *              %b %h %B month name, abbreviated or full, any case
 *              %a %A weekday name (checked, not used)  %z Z, +hh, +hhmm or
 *              +hh:mm  %Z UTC, GMT or Z  %T = %H:%M:%S  %F = %Y-%m-%d
 *              %R = %H:%M  %D = %m/%d/%y  %n %t white space  %% a '%'
 *              A space matches any run of white space (none too); any
 *              other byte matches itself. The whole text must be used.
 *
 * Numbers take up to their field's width of digits (%d two, %Y four, ...),
 * at least one. A fraction of a second, in every format, takes any number
 * of digits (RFC 3339's time-secfrac is "." 1*DIGIT): the nanoseconds are
 * its first nine, the rest truncated, not rounded (no carry into the
 * second). Missing parts default to: month and day 1, time 0, zone
 * UTC. A format without a year (syslog) takes the year of `now_ns`, or
 * the year before when that would put the time more than a day after
 * now (December lines read in January).
 */
#ifndef LG_TIMEFMT_H
#define LG_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

/* Error returns of lg_timefmt_parse. */
#define LG_TIMEFMT_NOMATCH (-22) /* -EINVAL: the text is not in the format */
#define LG_TIMEFMT_BADFMT (-95)  /* -EOPNOTSUPP: the format itself is bad */

/* `now_ns` for "read the clock if the format needs it". */
#define LG_TIMEFMT_NOW INT64_MIN

/* Parses `len` bytes of `s` in format `fmt` (`flen` bytes, see above) into
 * *ns, nanoseconds since the epoch, UTC. `now_ns` is the current time,
 * used only by formats without a year (LG_TIMEFMT_NOW: the clock's). On error,
 * writes a message of at most `errlen` bytes (NUL-terminated) into `err` (may
 * be NULL): for LG_TIMEFMT_NOMATCH what did not match and at which byte of the
 * text, for LG_TIMEFMT_BADFMT what is wrong with the format. Times outside what
 * int64 nanoseconds hold (years 1678-2262) do not match. Returns 0,
 * LG_TIMEFMT_NOMATCH or LG_TIMEFMT_BADFMT. */
int lg_timefmt_parse(const char *fmt, size_t flen, const char *s, size_t len,
                     int64_t now_ns, int64_t *ns, char *err, size_t errlen);

#endif
