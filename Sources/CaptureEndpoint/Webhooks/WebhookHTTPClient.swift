internal import CWebhookHTTP
import Foundation
import Synchronization

/// The webhook's HTTP client: one POST, http or https, over libcurl, sent to the address
/// `CallbackTargetPolicy` checked (curl's resolve pinning, so no second lookup can answer
/// otherwise, for https as for http), never through a proxy, never following a redirect,
/// with one deadline for the whole exchange (connect, TLS, headers and body).
///
/// Each exchange blocks a thread of its own, started for it: deliveries are few (one per
/// status change of a session), at most `WebhookDispatcher.maxInFlight` at once, and one
/// slow receiver must not wait behind another's (a shared pool of two threads would).
struct WebhookHTTPClient: Sendable {
    /// PEM file of the CAs trusted for https receivers; nil for the system's store.
    var caFile: String?

    struct Request: Sendable {
        var url: String
        /// The addresses `url`'s host was checked at; none when the host is an address itself.
        var pinnedAddresses: [String]
        var host: String
        var port: Int
        var headers: [(name: String, value: String)]
        var body: [UInt8]
        var timeout: Duration
    }

    enum Outcome: Sendable, Equatable {
        case answered(status: Int, location: String?)
        case timedOut
        case failed(String)
    }

    func post(_ request: Request) async -> Outcome {
        let cancel = CancelFlag()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
                let caFile = self.caFile
                let thread = Thread {
                    continuation.resume(returning: Self.exchange(request, caFile: caFile, cancel: cancel))
                }
                thread.name = "webhook-http"
                thread.stackSize = 256 << 10
                thread.start()
            }
        } onCancel: {
            cancel.set()
        }
    }

    /// "host:port:address[,address...]" for curl's resolve list; IPv6 addresses in brackets.
    static func resolveEntry(host: String, port: Int, addresses: [String]) -> String {
        "\(host):\(port):" + addresses.map { $0.contains(":") ? "[\($0)]" : $0 }.joined(separator: ",")
    }

    private static func exchange(_ request: Request, caFile: String?, cancel: CancelFlag) -> Outcome {
        let lines = request.headers.map { "\($0.name): \($0.value)" }
        let resolve = request.pinnedAddresses.isEmpty
            ? nil : resolveEntry(host: request.host, port: request.port, addresses: request.pinnedAddresses)
        var answer = webhook_http_answer()
        let milliseconds = request.timeout.components.seconds * 1000 + request.timeout.components.attoseconds / 1_000_000_000_000_000
        let code = withCStrings(lines) { headerPointers in
            request.body.withUnsafeBufferPointer { body in
                request.url.withCString { url in
                    withOptionalCString(resolve) { resolve in
                        withOptionalCString(caFile) { caFile in
                            headerPointers.withUnsafeBufferPointer { headers in
                                var plain = webhook_http_request(
                                    url: url, resolve: resolve, headers: headers.baseAddress, header_count: headers.count,
                                    body: body.baseAddress, body_length: body.count, timeout_ms: Int(max(milliseconds, 1)),
                                    ca_file: caFile, cancel: cancel.pointer)
                                return webhook_http_post(&plain, &answer)
                            }
                        }
                    }
                }
            }
        }
        switch Int(code) {
        case Int(WEBHOOK_HTTP_ANSWERED):
            let location = withUnsafeBytes(of: &answer.location) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            return .answered(status: answer.status, location: location.isEmpty ? nil : location)
        case Int(WEBHOOK_HTTP_TIMED_OUT), Int(WEBHOOK_HTTP_CANCELLED):
            return .timedOut
        default:
            let error = withUnsafeBytes(of: &answer.error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            return .failed(error.isEmpty ? "the exchange failed" : error)
        }
    }

    /// The C flag curl's progress callback reads, owned here and freed with this.
    private final class CancelFlag: Sendable {
        // Set from the cancelling task, read by the exchange's thread; the C side uses atomics.
        nonisolated(unsafe) let pointer: OpaquePointer
        init() { pointer = webhook_http_cancel_new() }
        func set() { webhook_http_cancel_set(pointer) }
        deinit { webhook_http_cancel_free(pointer) }
    }
}

private func withOptionalCString<R>(_ string: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let string else { return body(nil) }
    return string.withCString { body($0) }
}

/// `strings` as C strings, alive for `body`.
private func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    return body(copies.map { UnsafePointer($0) })
}
