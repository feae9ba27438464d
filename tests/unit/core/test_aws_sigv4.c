/* Unit tests: lg_aws_sigv4 against AWS's published SigV4 test vectors
 * (inputs and signatures reproduced from the AWS documentation, see
 * tests/fixtures/aws/README.md), plus the canonical forms lugger relies
 * on: unsorted query parameters, '=' and spaces in keys and values, an
 * empty value ("uploads="), session tokens, and argument errors. The
 * independent check against npm aws4 over HTTP is test_aws_sigv4.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/lg_aws_sigv4.h"

#define SUITE_TIME 1440938160 /* 2015-08-30T12:36:00Z */
#define S3_TIME 1369353600    /* 2013-05-24T00:00:00Z */

static const lg_sigv4_creds_t suite_creds = {
    "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL};
static const lg_sigv4_creds_t s3_creds = {
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", NULL};

static const char *auth_of(const lg_sigv4_signed_t *s) {
  for (size_t i = 0; i < s->nheaders; i++)
    if (strncmp(s->headers[i], "Authorization: ", 15) == 0)
      return s->headers[i] + 15;
  return NULL;
}

static void suite_req(lg_sigv4_req_t *r, const char *method, const char *path) {
  memset(r, 0, sizeof *r);
  r->method = method;
  r->host = "example.amazonaws.com";
  r->path = path;
  r->region = "us-east-1";
  r->service = "service";
  r->now = SUITE_TIME;
}

static void expect_sig(const lg_sigv4_req_t *r, const lg_sigv4_creds_t *c,
                       const char *sig) {
  lg_sigv4_signed_t s;
  assert_int_equal(lg_sigv4_sign(r, c, &s), 0);
  if (strcmp(s.signature, sig) != 0)
    fprintf(stderr, "canonical request:\n%s\n", s.canonical_request);
  assert_string_equal(s.signature, sig);
  lg_sigv4_signed_free(&s);
}

static void test_get_vanilla(void **st) {
  (void)st;
  lg_sigv4_req_t r;
  suite_req(&r, "GET", "/");
  lg_sigv4_signed_t s;
  assert_int_equal(lg_sigv4_sign(&r, &suite_creds, &s), 0);
  assert_string_equal(
      auth_of(&s),
      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
      "aws4_request, SignedHeaders=host;x-amz-date, "
      "Signature="
      "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  assert_string_equal(s.headers[0], "X-Amz-Date: 20150830T123600Z");
  assert_string_equal(s.target, "/");
  lg_sigv4_signed_free(&s);
  lg_sigv4_signed_free(&s); /* idempotent */
}

static void test_post_vanilla(void **st) {
  (void)st;
  lg_sigv4_req_t r;
  suite_req(&r, "POST", "/");
  expect_sig(
      &r, &suite_creds,
      "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
}

static void test_get_space(void **st) {
  (void)st;
  lg_sigv4_req_t r;
  suite_req(&r, "GET", "/example space/");
  lg_sigv4_signed_t s;
  assert_int_equal(lg_sigv4_sign(&r, &suite_creds, &s), 0);
  assert_string_equal(
      s.signature,
      "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741");
  assert_string_equal(s.target, "/example%20space/");
  lg_sigv4_signed_free(&s);
}

static void test_query_order_key_case(void **st) {
  (void)st;
  lg_sigv4_param_t q[] = {{"Param2", "value2"}, {"Param1", "value1"}};
  lg_sigv4_req_t r;
  suite_req(&r, "GET", "/");
  r.query = q;
  r.nquery = 2;
  lg_sigv4_signed_t s;
  assert_int_equal(lg_sigv4_sign(&r, &suite_creds, &s), 0);
  assert_string_equal(
      s.signature,
      "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
  /* The target carries the same sorted query that was signed. */
  assert_string_equal(s.target, "/?Param1=value1&Param2=value2");
  lg_sigv4_signed_free(&s);
}

static void test_header_key_duplicate(void **st) {
  (void)st;
  const char *n[] = {"My-Header1", "My-Header1", "My-Header1"};
  const char *v[] = {"value2", "value2", "value1"};
  lg_sigv4_req_t r;
  suite_req(&r, "GET", "/");
  r.header_names = n;
  r.header_values = v;
  r.nheaders = 3;
  expect_sig(
      &r, &suite_creds,
      "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea");
}

static void test_iam_list_users(void **st) {
  (void)st;
  lg_sigv4_param_t q[] = {{"Version", "2010-05-08"}, {"Action", "ListUsers"}};
  const char *n[] = {"Content-Type"};
  const char *v[] = {"application/x-www-form-urlencoded; charset=utf-8"};
  lg_sigv4_req_t r;
  suite_req(&r, "GET", "/");
  r.host = "iam.amazonaws.com";
  r.service = "iam";
  r.query = q;
  r.nquery = 2;
  r.header_names = n;
  r.header_values = v;
  r.nheaders = 1;
  expect_sig(
      &r, &suite_creds,
      "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
}

static void test_s3_get_object(void **st) {
  (void)st;
  const char *n[] = {"Range"};
  const char *v[] = {"bytes=0-9"};
  lg_sigv4_req_t r = {0};
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/test.txt";
  r.region = "us-east-1";
  r.service = "s3";
  r.now = S3_TIME;
  r.header_names = n;
  r.header_values = v;
  r.nheaders = 1;
  r.content_sha256_header = 1;
  lg_sigv4_signed_t s;
  assert_int_equal(lg_sigv4_sign(&r, &s3_creds, &s), 0);
  assert_string_equal(
      auth_of(&s),
      "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
      "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
      "Signature="
      "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  assert_string_equal(s.headers[1], "X-Amz-Content-Sha256: "
                                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e46"
                                    "49b934ca495991b7852b855");
  lg_sigv4_signed_free(&s);
}

static void test_s3_put_object(void **st) {
  (void)st;
  const char *n[] = {"Date", "x-amz-storage-class"};
  const char *v[] = {"Fri, 24 May 2013 00:00:00 GMT", "REDUCED_REDUNDANCY"};
  const char body[] = "Welcome to Amazon S3.";
  lg_sigv4_req_t r = {0};
  r.method = "PUT";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/test$file.text";
  r.region = "us-east-1";
  r.service = "s3";
  r.now = S3_TIME;
  r.header_names = n;
  r.header_values = v;
  r.nheaders = 2;
  r.body = body;
  r.body_len = strlen(body);
  r.content_sha256_header = 1;
  lg_sigv4_signed_t s;
  assert_int_equal(lg_sigv4_sign(&r, &s3_creds, &s), 0);
  assert_string_equal(
      s.signature,
      "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
  assert_string_equal(s.target, "/test%24file.text");
  assert_string_equal(s.headers[1], "X-Amz-Content-Sha256: "
                                    "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4"
                                    "b4e99e42034a8b803f8b072");
  lg_sigv4_signed_free(&s);
}

/* What lugger sends S3: '=' and spaces in a key (hive-style partitions),
 * multipart's valueless "uploads" and unsorted uploadId/partNumber, a
 * session token that is signed. */
static void test_canonical_forms(void **st) {
  (void)st;
  lg_sigv4_param_t q[] = {{"uploadId", "a b=c+d"}, {"partNumber", "1"}};
  lg_sigv4_creds_t c = s3_creds;
  c.session_token = "TOKEN/with+chars=";
  lg_sigv4_req_t r = {0};
  r.method = "PUT";
  r.host = "127.0.0.1:4568";
  r.path = "/logs/dt=2026-12-07/a b.json";
  r.region = "us-east-1";
  r.service = "s3";
  r.now = S3_TIME;
  r.query = q;
  r.nquery = 2;
  r.payload_sha256 = "UNSIGNED-PAYLOAD";
  r.content_sha256_header = 1;
  lg_sigv4_signed_t s;
  assert_int_equal(lg_sigv4_sign(&r, &c, &s), 0);
  assert_string_equal(s.target, "/logs/dt%3D2026-12-07/a%20b.json"
                                "?partNumber=1&uploadId=a%20b%3Dc%2Bd");
  assert_string_equal(
      s.canonical_request,
      "PUT\n/logs/dt%3D2026-12-07/a%20b.json\n"
      "partNumber=1&uploadId=a%20b%3Dc%2Bd\n"
      "host:127.0.0.1:4568\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n"
      "x-amz-date:20130524T000000Z\nx-amz-security-token:TOKEN/with+chars=\n"
      "\nhost;x-amz-content-sha256;x-amz-date;x-amz-security-token\n"
      "UNSIGNED-PAYLOAD");
  assert_int_equal(s.nheaders, 4);
  assert_string_equal(s.headers[2], "X-Amz-Security-Token: TOKEN/with+chars=");
  lg_sigv4_signed_free(&s);

  lg_sigv4_param_t up[] = {{"uploads", ""}};
  r.query = up;
  r.nquery = 1;
  c.session_token = NULL;
  assert_int_equal(lg_sigv4_sign(&r, &c, &s), 0);
  assert_string_equal(s.target, "/logs/dt%3D2026-12-07/a%20b.json?uploads=");
  assert_int_equal(s.nheaders, 3);
  lg_sigv4_signed_free(&s);
}

static void test_bad_args(void **st) {
  (void)st;
  lg_sigv4_req_t r;
  suite_req(&r, "GET", "relative");
  lg_sigv4_signed_t s;
  errno = 0;
  assert_int_equal(lg_sigv4_sign(&r, &suite_creds, &s), -1);
  assert_int_equal(errno, EINVAL);
  suite_req(&r, "GET", "/");
  lg_sigv4_creds_t c = {"AKID", "", NULL};
  assert_int_equal(lg_sigv4_sign(&r, &c, &s), -1);
  assert_int_equal(errno, EINVAL);
  r.region = "";
  assert_int_equal(lg_sigv4_sign(&r, &suite_creds, &s), -1);
  lg_sigv4_signed_free(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_get_vanilla),
      cmocka_unit_test(test_post_vanilla),
      cmocka_unit_test(test_get_space),
      cmocka_unit_test(test_query_order_key_case),
      cmocka_unit_test(test_header_key_duplicate),
      cmocka_unit_test(test_iam_list_users),
      cmocka_unit_test(test_s3_get_object),
      cmocka_unit_test(test_s3_put_object),
      cmocka_unit_test(test_canonical_forms),
      cmocka_unit_test(test_bad_args),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
