/*
 * lg_aws_creds.h - AWS credentials for the s3 and cloudwatch_logs outputs,
 * from the standard sources, in this order (the first that has a key
 * wins):
 *
 *   1. the output's config (access_key_id, secret_access_key,
 *      session_token);
 *   2. the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 *      AWS_SESSION_TOKEN;
 *   3. the shared credentials file: AWS_SHARED_CREDENTIALS_FILE or
 *      ~/.aws/credentials, profile AWS_PROFILE or "default"
 *      (aws_access_key_id, aws_secret_access_key, aws_session_token);
 *   4. web identity, as EKS gives pods of a service account with an IAM
 *      role (IRSA): AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (and
 *      AWS_ROLE_SESSION_NAME) → STS AssumeRoleWithWebIdentity, an
 *      unsigned request to the regional STS endpoint
 *      (lg_aws_sts_endpoint), giving temporary credentials that are
 *      fetched again before they expire, re-reading the token file each
 *      time (the kubelet rotates it).
 *
 * Sources 1-3 are read once at creation. Web identity runs on the loop;
 * until its first answer, lg_aws_creds_get reports EAGAIN and the caller
 * treats the send as a retryable failure.
 *
 * Follows: AWS SDKs and Tools Reference Guide ("Standardized credential
 * providers", "Assume role with web identity", "Environment variables")
 * and the STS API reference (AssumeRoleWithWebIdentity, Query API,
 * Version 2011-06-15, XML answer).
 */
#ifndef LG_AWS_CREDS_H
#define LG_AWS_CREDS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/lg_aws_sigv4.h"

typedef struct lg_aws_creds lg_aws_creds_t;

typedef struct lg_aws_creds_conf {
  const char *component; /* name in lugger's log ("output.s3") */
  /* Keys from the config (NULL = not set; both or neither). */
  const char *access_key_id, *secret_access_key, *session_token;
  /* The output's region, for the regional STS endpoint when neither
   * AWS_REGION nor AWS_DEFAULT_REGION is set (lg_aws_sts_endpoint). */
  const char *region;
  /* Fetch web-identity credentials again this long before they expire
   * (0 = 5 minutes); at most half their lifetime. */
  int64_t refresh_before_ms;
} lg_aws_creds_conf_t;

/* The DNS suffix of AWS endpoints in `region`'s partition:
 * "amazonaws.com.cn" for the China regions ("cn-north-1",
 * "cn-northwest-1": every region name that starts with "cn-"), else
 * "amazonaws.com" (the commercial and GovCloud regions). `region` NULL or
 * empty: "amazonaws.com". Follows: the AWS General Reference ("Service
 * endpoints"; China: "amazonaws.com.cn" endpoints). */
const char *lg_aws_dns_suffix(const char *region);

/* The text of the first <tag>...</tag> in the `len` bytes at `xml`, with
 * the five predefined XML entities (&amp; &lt; &gt; &quot; &apos;)
 * decoded, malloc'd (the caller frees it); NULL when the tag is absent or
 * out of memory. Enough for the small fixed documents of AWS's XML answers
 * (STS AssumeRoleWithWebIdentity, S3 errors and multipart answers): no
 * attributes, CDATA, comments or nesting of the same tag. */
char *lg_aws_xml_text(const char *xml, size_t len, const char *tag);

/* The STS endpoint web identity calls, into `out` (`cap` bytes):
 * AWS_ENDPOINT_URL_STS when set, else the regional endpoint
 * https://sts.<region>.<lg_aws_dns_suffix> of the pod's region as the AWS
 * SDKs take it (AWS_REGION, then AWS_DEFAULT_REGION: on EKS the cluster's
 * region, where a VPC endpoint for STS would be), else of `conf_region`
 * (the output's), else the global https://sts.amazonaws.com. Always
 * regional when a region is known, as AWS_STS_REGIONAL_ENDPOINTS=regional
 * (what EKS sets) asks; "legacy" is not followed. */
void lg_aws_sts_endpoint(const char *conf_region, char *out, size_t cap);

/* Creates the provider, reading sources 1-3 and, when none has a key and
 * AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE are set, starting the first
 * AssumeRoleWithWebIdentity on `loop`. Returns NULL with `err` filled when
 * no source has credentials, a source is half-set (a key id without a
 * secret, a profile file whose profile lacks one), or setup fails. */
lg_aws_creds_t *lg_aws_creds_create(uv_loop_t *loop,
                                    const lg_aws_creds_conf_t *conf, char *err,
                                    size_t errlen);

/* The current credentials into *out (borrowed: valid until the next call
 * on the loop). Returns 0, or -EAGAIN while web-identity credentials have
 * not been obtained yet (or have expired and the refresh keeps failing;
 * lg_aws_creds_last_error says why). */
int lg_aws_creds_get(lg_aws_creds_t *p, lg_sigv4_creds_t *out);

/* Which source gave the credentials: "config", "environment",
 * "shared-credentials-file", "web-identity". */
const char *lg_aws_creds_source(const lg_aws_creds_t *p);

/* The last web-identity error ("" when none). */
const char *lg_aws_creds_last_error(const lg_aws_creds_t *p);

/* Number of successful STS answers so far (web identity; for tests and
 * metrics). */
uint64_t lg_aws_creds_refreshes(const lg_aws_creds_t *p);

/* Closes the provider: an STS request in flight is cancelled; `cb(ud)`
 * runs once the loop handles are closed. NULL-safe. */
void lg_aws_creds_close(lg_aws_creds_t *p, void (*cb)(void *ud), void *ud);

#endif
