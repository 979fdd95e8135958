#include "webhook_http.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct webhook_http_cancel {
    int value;
};

webhook_http_cancel *webhook_http_cancel_new(void) { return calloc(1, sizeof(webhook_http_cancel)); }
void webhook_http_cancel_set(webhook_http_cancel *flag) { __atomic_store_n(&flag->value, 1, __ATOMIC_RELEASE); }
void webhook_http_cancel_free(webhook_http_cancel *flag) { free(flag); }

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_status = CURLE_FAILED_INIT;
static void global_init(void) { global_status = curl_global_init(CURL_GLOBAL_DEFAULT); }

/// What the callbacks of one exchange share.
typedef struct {
    webhook_http_answer *answer;
    webhook_http_cancel *cancel;
    size_t body_bytes;
    int body_cut;
} exchange;

static size_t on_header(char *line, size_t size, size_t count, void *context) {
    exchange *state = context;
    size_t length = size * count;
    // A new status line (after a 100 Continue, say) starts a new set of headers.
    if (length >= 5 && strncmp(line, "HTTP/", 5) == 0) state->answer->location[0] = 0;
    if (length > 9 && strncasecmp(line, "location:", 9) == 0) {
        const char *value = line + 9;
        size_t value_length = length - 9;
        while (value_length > 0 && (*value == ' ' || *value == '\t')) { value++; value_length--; }
        while (value_length > 0 && (value[value_length - 1] == '\r' || value[value_length - 1] == '\n' ||
                                    value[value_length - 1] == ' ')) value_length--;
        if (value_length < WEBHOOK_HTTP_LOCATION_MAX) {
            memcpy(state->answer->location, value, value_length);
            state->answer->location[value_length] = 0;
        } else {
            state->answer->location[0] = 0;
        }
    }
    return length;
}

static size_t on_body(char *data, size_t size, size_t count, void *context) {
    (void)data;
    exchange *state = context;
    size_t length = size * count;
    state->body_bytes += length;
    if (state->body_bytes > WEBHOOK_HTTP_BODY_MAX) {
        state->body_cut = 1;
        return 0;   // ends the transfer (CURLE_WRITE_ERROR); the status is already known
    }
    return length;
}

static int on_progress(void *context, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d) {
    (void)a; (void)b; (void)c; (void)d;
    exchange *state = context;
    return state->cancel && __atomic_load_n(&state->cancel->value, __ATOMIC_ACQUIRE) ? 1 : 0;
}

int webhook_http_post(const webhook_http_request *request, webhook_http_answer *answer) {
    memset(answer, 0, sizeof(*answer));
    pthread_once(&global_once, global_init);
    if (global_status != CURLE_OK) {
        snprintf(answer->error, sizeof(answer->error), "libcurl: %s", curl_easy_strerror(global_status));
        return WEBHOOK_HTTP_FAILED;
    }
    CURL *curl = curl_easy_init();
    if (!curl) {
        snprintf(answer->error, sizeof(answer->error), "libcurl: no handle");
        return WEBHOOK_HTTP_FAILED;
    }
    exchange state = {.answer = answer, .cancel = request->cancel};
    char curl_error[CURL_ERROR_SIZE] = {0};
    struct curl_slist *headers = NULL, *resolve = NULL;
    int result = WEBHOOK_HTTP_FAILED;
    int ok = 1;
    for (size_t index = 0; ok && index < request->header_count; index++) {
        struct curl_slist *next = curl_slist_append(headers, request->headers[index]);
        if (next) headers = next; else ok = 0;
    }
    // No "Expect: 100-continue" round trip: the body goes with the request.
    if (ok) {
        struct curl_slist *next = curl_slist_append(headers, "Expect:");
        if (next) headers = next; else ok = 0;
    }
    if (ok && request->resolve) {
        resolve = curl_slist_append(NULL, request->resolve);
        if (!resolve) ok = 0;
    }
    if (!ok) {
        snprintf(answer->error, sizeof(answer->error), "out of memory");
        goto done;
    }

    CURLcode set = CURLE_OK;
#define SET(option, value) if (set == CURLE_OK) set = curl_easy_setopt(curl, option, value)
    SET(CURLOPT_URL, request->url);
    // Only the two schemes a callback may have, here and on any (unfollowed) redirect.
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    // Straight to the checked address: no proxy from the environment, no new lookup.
    SET(CURLOPT_PROXY, "");
    SET(CURLOPT_NOSIGNAL, 1L);
    if (resolve) SET(CURLOPT_RESOLVE, resolve);
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDS, (const char *)request->body);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)request->body_length);
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_TIMEOUT_MS, request->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, request->timeout_ms);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (request->ca_file) SET(CURLOPT_CAINFO, request->ca_file);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, &state);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, &state);
    SET(CURLOPT_XFERINFOFUNCTION, on_progress);
    SET(CURLOPT_XFERINFODATA, &state);
    SET(CURLOPT_NOPROGRESS, 0L);
    SET(CURLOPT_ERRORBUFFER, curl_error);
#undef SET
    if (set != CURLE_OK) {
        snprintf(answer->error, sizeof(answer->error), "libcurl option: %s", curl_easy_strerror(set));
        goto done;
    }

    CURLcode code = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (code == CURLE_OK || (code == CURLE_WRITE_ERROR && state.body_cut && status > 0)) {
        answer->status = status;
        result = WEBHOOK_HTTP_ANSWERED;
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
        result = WEBHOOK_HTTP_TIMED_OUT;
    } else if (code == CURLE_ABORTED_BY_CALLBACK) {
        result = WEBHOOK_HTTP_CANCELLED;
    } else {
        snprintf(answer->error, sizeof(answer->error), "%s", curl_error[0] ? curl_error : curl_easy_strerror(code));
    }

done:
    curl_slist_free_all(resolve);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (result != WEBHOOK_HTTP_ANSWERED) answer->location[0] = 0;
    return result;
}
