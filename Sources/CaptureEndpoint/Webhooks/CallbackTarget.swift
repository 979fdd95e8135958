import Foundation
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Where a webhook may be sent. A `callback_url` is the account holder's word, and the
/// endpoint makes the request from inside its own network: by default a callback that
/// resolves to loopback, link-local (cloud metadata at 169.254.169.254), private,
/// shared, multicast, documentation or otherwise non-public addresses is refused, checked
/// on the addresses the name resolves to at delivery time and again on every redirect
/// (redirects are not followed at all unless allowed). `allowPrivateTargets` lifts the
/// address check for local development (the demo and the tests use it).
struct CallbackTargetPolicy: Sendable {
    var allowPrivateTargets: Bool
    var followRedirects: Bool
    /// Most redirects followed for one delivery (when they are followed at all).
    static let maxRedirects = 3

    /// A callback the policy refuses: the delivery is abandoned (retrying cannot help).
    struct Refused: Error, CustomStringConvertible {
        var description: String
    }

    /// Where one request goes: the URL as given, and the checked address its host is pinned
    /// to for the connection (for http and https alike: the URL, its Host header, the TLS
    /// server name and the certificate check keep the name; no second lookup is made).
    struct Target: Sendable, Equatable {
        var url: String
        var host: String
        var port: Int
        /// The checked addresses the connection may go to (every one the name resolved to).
        var addresses: [String]
        /// Whether the host is a name (pinned to `addresses`) rather than an address literal.
        var isName: Bool
    }

    /// Checks `text` and resolves its host, refusing non-public addresses unless allowed.
    func target(for text: String) async throws -> Target {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty else {
            throw Refused(description: "not an http(s) URL")
        }
        let port = components.port ?? (scheme == "https" ? 443 : 80)
        let bareHost = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        let addresses = try await Self.resolve(bareHost, port: port)
        guard !addresses.isEmpty else { throw Refused(description: "\(bareHost) has no address") }
        if !allowPrivateTargets {
            for address in addresses {
                if let why = Self.nonPublicReason(address) {
                    throw Refused(description: "\(bareHost) resolves to \(Self.text(address)) (\(why)); private targets are refused unless the endpoint runs with --allow-private-webhook-targets")
                }
            }
        }
        return Target(url: text, host: bareHost, port: port, addresses: addresses.map(Self.text),
                      isName: Self.literal(bareHost) == nil)
    }

    /// The next URL of a redirect answer, or nil when it is not followed.
    func redirect(status: Int, location: String?, from base: String) -> String? {
        guard followRedirects, status == 307 || status == 308, let location,
              let resolved = URL(string: location, relativeTo: URL(string: base))?.absoluteString else { return nil }
        return resolved
    }

    // MARK: Addresses

    /// Why `address` (4 or 16 bytes, network order) is not a public unicast address, or nil.
    static func nonPublicReason(_ address: [UInt8]) -> String? {
        if address.count == 4 { return nonPublicReasonV4(address) }
        guard address.count == 16 else { return "not an IP address" }
        let a = address
        if a.allSatisfy({ $0 == 0 }) { return "unspecified" }
        if a[0..<15].allSatisfy({ $0 == 0 }) && a[15] == 1 { return "loopback" }
        // IPv4 inside IPv6: mapped (::ffff:0:0/96), compatible (::/96), NAT64 (64:ff9b::/96)
        // and 6to4 (2002::/16) carry an IPv4 address that decides.
        if a[0..<10].allSatisfy({ $0 == 0 }) && a[10] == 0xff && a[11] == 0xff {
            return nonPublicReasonV4(Array(a[12..<16])).map { "IPv4-mapped, \($0)" }
        }
        if a[0..<12].allSatisfy({ $0 == 0 }) { return "IPv4-compatible" }
        if a[0] == 0x00, a[1] == 0x64, a[2] == 0xff, a[3] == 0x9b, a[4..<12].allSatisfy({ $0 == 0 }) {
            return nonPublicReasonV4(Array(a[12..<16])).map { "NAT64, \($0)" }
        }
        if a[0] == 0x00, a[1] == 0x64, a[2] == 0xff, a[3] == 0x9b, a[4] == 0x00, a[5] == 0x01 {
            return "local-use NAT64 (64:ff9b:1::/48)"
        }
        if a[0] == 0x20, a[1] == 0x02 { return nonPublicReasonV4(Array(a[2..<6])).map { "6to4, \($0)" } }
        if a[0] & 0xfe == 0xfc { return "unique local (fc00::/7)" }
        if a[0] == 0xfe, a[1] & 0xc0 == 0x80 { return "link-local (fe80::/10)" }
        if a[0] == 0xfe, a[1] & 0xc0 == 0xc0 { return "site-local (fec0::/10)" }
        if a[0] == 0xff { return "multicast" }
        if a[0] == 0x20, a[1] == 0x01, a[2] == 0x0d, a[3] == 0xb8 { return "documentation (2001:db8::/32)" }
        if a[0] == 0x20, a[1] == 0x01, a[2] == 0x00, a[3] == 0x00 { return "Teredo (2001::/32)" }
        if a[0] == 0x01, a[1] == 0x00, a[2..<8].allSatisfy({ $0 == 0 }) { return "discard (100::/64)" }
        return nil
    }

    static func nonPublicReasonV4(_ a: [UInt8]) -> String? {
        switch (a[0], a[1], a[2]) {
        case (0, _, _): return "this network (0.0.0.0/8)"
        case (10, _, _): return "private (10.0.0.0/8)"
        case (100, 64...127, _): return "shared address space (100.64.0.0/10)"
        case (127, _, _): return "loopback"
        case (169, 254, _): return "link-local (169.254.0.0/16, cloud metadata)"
        case (172, 16...31, _): return "private (172.16.0.0/12)"
        case (192, 0, 0): return "IETF protocol assignments (192.0.0.0/24)"
        case (192, 0, 2), (198, 51, 100), (203, 0, 113): return "documentation"
        case (192, 88, 99): return "6to4 relay"
        case (192, 168, _): return "private (192.168.0.0/16)"
        case (198, 18...19, _): return "benchmarking (198.18.0.0/15)"
        case (224...239, _, _): return "multicast"
        case (240...255, _, _): return "reserved"
        default: return nil
        }
    }

    static func text(_ address: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = address.count == 4 ? AF_INET : AF_INET6
        let ok = address.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) } != nil
        return ok ? String(cString: buffer) : "?"
    }

    /// Every address `host` resolves to (an IP literal is itself), looked up off the event loops.
    static func resolve(_ host: String, port: Int) async throws -> [[UInt8]] {
        if let literal = literal(host) { return [literal] }
        return try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &list)
            guard status == 0, let list else {
                throw ResolutionFailed(description: "cannot resolve \(host): \(String(cString: gai_strerror(status)))")
            }
            defer { freeaddrinfo(list) }
            var addresses: [[UInt8]] = []
            var entry: UnsafeMutablePointer<addrinfo>? = list
            while let current = entry {
                if let sa = current.pointee.ai_addr {
                    switch Int32(sa.pointee.sa_family) {
                    case AF_INET:
                        sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                            var v4 = $0.pointee.sin_addr
                            addresses.append(withUnsafeBytes(of: &v4) { Array($0) })
                        }
                    case AF_INET6:
                        sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                            var v6 = $0.pointee.sin6_addr
                            addresses.append(withUnsafeBytes(of: &v6) { Array($0) })
                        }
                    default: break
                    }
                }
                entry = current.pointee.ai_next
            }
            return addresses
        }
    }

    /// A lookup that failed (no answer, no network): retried like an unreachable receiver.
    struct ResolutionFailed: Error, CustomStringConvertible {
        var description: String
    }

    /// The bytes of an IPv4 or IPv6 literal, nil for a name.
    static func literal(_ host: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}
