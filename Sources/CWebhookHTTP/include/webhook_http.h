#ifndef WEBHOOK_HTTP_H
#define WEBHOOK_HTTP_H

#include <stddef.h>

// One webhook POST over libcurl (http and https), the whole exchange inside one C call so
// that the CURL handle, its header list and its callbacks have one owner and one cleanup
// path. The caller runs it on a thread of its own (it blocks for up to `timeout_ms`).

/// A flag another thread sets to abort a running `webhook_http_post` (checked by curl's
/// progress callback, at least once a second).
typedef struct webhook_http_cancel webhook_http_cancel;
webhook_http_cancel *webhook_http_cancel_new(void);
void webhook_http_cancel_set(webhook_http_cancel *flag);
void webhook_http_cancel_free(webhook_http_cancel *flag);

typedef struct {
    const char *url;
    /// "host:port:address" pinning the URL's host to the address the caller checked
    /// (CURLOPT_RESOLVE), or NULL when the host is an address literal.
    const char *resolve;
    /// "name: value" lines, `header_count` of them.
    const char *const *headers;
    size_t header_count;
    const unsigned char *body;
    size_t body_length;
    /// The deadline for everything: connect, TLS, request, status, headers and body.
    long timeout_ms;
    /// PEM file of trusted CAs for https, or NULL for the system's store.
    const char *ca_file;
    webhook_http_cancel *cancel;
} webhook_http_request;

enum {
    WEBHOOK_HTTP_ANSWERED = 0,   // `status` (and `location`) hold the receiver's answer
    WEBHOOK_HTTP_TIMED_OUT = 1,  // no complete answer within the deadline
    WEBHOOK_HTTP_CANCELLED = 2,  // the cancel flag was set
    WEBHOOK_HTTP_FAILED = 3,     // connect, TLS or protocol failure; `error` says which
};

#define WEBHOOK_HTTP_LOCATION_MAX 2048
#define WEBHOOK_HTTP_ERROR_MAX 256

typedef struct {
    long status;
    char location[WEBHOOK_HTTP_LOCATION_MAX];   // "" when none (or too long to keep)
    char error[WEBHOOK_HTTP_ERROR_MAX];
} webhook_http_answer;

/// Most bytes of a response body read (and discarded); beyond them the answer's status stands.
#define WEBHOOK_HTTP_BODY_MAX (64 * 1024)

int webhook_http_post(const webhook_http_request *request, webhook_http_answer *answer);

#endif
