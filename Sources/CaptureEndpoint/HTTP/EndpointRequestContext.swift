import CaptureCore
public import Hummingbird
public import HummingbirdWebSocket
import Logging
import HTTPTypes
public import NIOCore

/// The request context of every route, REST and WebSocket: Hummingbird's core
/// storage, the WebSocket upgrade slot, and the account the API key named.
public struct EndpointRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<Self>
    /// Set by `APIKeyMiddleware` on the routes behind it.
    public var account: Account?
    /// The connection, so the uplink's watchdog can drop a peer that stopped reading.
    public let channel: any Channel

    public init(source: Source) {
        coreContext = .init(source: source)
        webSocket = .init()
        account = nil
        channel = source.channel
    }

    /// The account, on routes behind `APIKeyMiddleware` (a bug otherwise, answered 500).
    func requireAccount() throws -> Account {
        guard let account else { throw APIError(.internalServerError, .internalError, "route without authentication") }
        return account
    }
}

/// Authenticates REST calls by `x-access-token`: an API key names its account;
/// a client token is refused (it may only upload); anything else is 401.
struct APIKeyMiddleware: RouterMiddleware {
    typealias Context = EndpointRequestContext
    /// API key hash -> account.
    let accounts: [String: Account]
    let store: any EndpointStore

    init(apiKeys: [String], store: any EndpointStore) {
        var accounts: [String: Account] = [:]
        for key in apiKeys { accounts[Secrets.storedHash(of: key)] = Account(apiKey: key) }
        self.accounts = accounts
        self.store = store
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response {
        guard let presented = request.headers[Self.header], !presented.isEmpty else {
            throw APIError(.unauthorized, .unauthorized, "send the API key in the x-access-token header")
        }
        let hash = Secrets.storedHash(of: presented)
        if let account = accounts[hash] {
            var context = context
            context.account = account
            return try await next(request, context)
        }
        if case .unknown = try await store.checkToken(hash: hash, now: EndpointClock.nowMilliseconds()) {
            throw APIError(.unauthorized, .unauthorized, "the x-access-token is not a valid API key")
        }
        throw APIError(.forbidden, .forbidden, "a client token can only upload over the uplink; this call needs the API key")
    }

    static let header = HTTPField.Name("x-access-token")!
}

/// Wall-clock milliseconds, the unit of every stored timestamp.
public enum EndpointClock {
    public static func nowMilliseconds() -> Int64 { WallClock.now() / 1_000_000 }
}
