public import CaptureCore
import CaptureUplink

/// Where an uplink connects, from the endpoint URL the SDK's `init` (`apiUrl`),
/// `capturectl start --endpoint` or the configuration names:
///
///     http://host:8080        -> ws://host:8080/capture/uplink
///     https://api.example/v1  -> wss://api.example:443/v1/capture/uplink
///     ws://host:9/x/capture/uplink (a full uplink URL) -> as given
///
/// http becomes ws and https wss; a path that does not already end in the
/// uplink path gets it appended. wss verifies the endpoint's certificate.
///
/// The hello carries the upload token: plain ws/http is taken only for a host on this
/// machine (localhost, 127.0.0.0/8, ::1) unless `allowInsecure` says otherwise.
public struct UplinkTarget: Sendable, Equatable, CustomStringConvertible {
    public var tls: Bool
    public var host: String
    public var port: Int
    public var path: String

    public init(tls: Bool, host: String, port: Int, path: String) {
        self.tls = tls
        self.host = host
        self.port = port
        self.path = path
    }

    public init(endpoint text: String, allowInsecure: Bool = false) throws(CaptureError) {
        let schemes: [(String, Bool)] = [("ws://", false), ("http://", false), ("wss://", true), ("https://", true)]
        guard let (scheme, tls) = schemes.first(where: { text.lowercased().hasPrefix($0.0) }) else {
            throw CaptureError(.invalidRequest, "the endpoint must be an http://, https://, ws:// or wss:// URL")
        }
        var rest = Substring(text.dropFirst(scheme.count))
        if let query = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) { rest = rest[..<query] }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        var path = String(rest[slash...])
        guard !authority.isEmpty, !authority.contains("@") else {
            throw CaptureError(.invalidRequest, "the endpoint URL needs a host (and no user:password@)")
        }
        var host = String(authority)
        var port = tls ? 443 : 80
        if authority.hasPrefix("[") {
            // [IPv6]:port
            guard let close = authority.firstIndex(of: "]") else {
                throw CaptureError(.invalidRequest, "the endpoint URL has an unterminated [IPv6] host")
            }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { port = try Self.port(after.dropFirst()) }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            port = try Self.port(authority[authority.index(after: colon)...])
        }
        guard !host.isEmpty, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw CaptureError(.invalidRequest, "the endpoint URL's host is empty or not printable ASCII")
        }
        while path.hasSuffix("/") { path.removeLast() }
        if !path.hasSuffix(UplinkProtocol.path) { path += UplinkProtocol.path }
        self.init(tls: tls, host: host, port: port, path: path)
        if !tls && !allowInsecure && !isLoopback {
            throw CaptureError(.invalidRequest, "the endpoint \(self) is not encrypted and not on this machine: the upload token would cross the network in clear; use https:// (wss://), or allow it explicitly (allow_insecure_uplink = true, --allow-insecure-uplink)")
        }
    }

    /// The host is this machine: `localhost`, 127.0.0.0/8 or ::1.
    public var isLoopback: Bool {
        let h = host.lowercased()
        if h == "localhost" || h == "::1" || h == "0:0:0:0:0:0:0:1" { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    private static func port(_ text: Substring) throws(CaptureError) -> Int {
        guard let p = Int(text), (1...65535).contains(p) else {
            throw CaptureError(.invalidRequest, "the endpoint URL's port must be 1-65535")
        }
        return p
    }

    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(tls ? "wss" : "ws")://\(h):\(port)\(path)"
    }
}
