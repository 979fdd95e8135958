import CaptureCore
import Foundation
public import Hummingbird
import Logging

/// Stable `error_code` values of the REST API. Part of the contract: never rename one.
public enum APIErrorCode: String, Codable, Sendable, CaseIterable {
    case unauthorized = "UNAUTHORIZED"
    case forbidden = "FORBIDDEN"
    case invalidRequest = "INVALID_REQUEST"
    case notFound = "NOT_FOUND"
    case methodNotAllowed = "METHOD_NOT_ALLOWED"
    case payloadTooLarge = "PAYLOAD_TOO_LARGE"
    case unsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE"
    case invalidState = "INVALID_STATE"
    /// A quota of the account (`EndpointLimits`) is used up.
    case quotaExceeded = "QUOTA_EXCEEDED"
    case internalError = "INTERNAL_ERROR"
}

/// The error body every failing request gets, as VideoDB's API shapes it:
/// `{"success": false, "message": "...", "error_code": "..."}`.
public struct APIErrorBody: Codable, Sendable, Equatable {
    public var success: Bool
    public var message: String
    public var errorCode: APIErrorCode

    enum CodingKeys: String, CodingKey {
        case success, message, errorCode = "error_code"
    }
}

/// A request that failed with a stable code.
public struct APIError: HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var code: APIErrorCode
    public var message: String

    public init(_ status: HTTPResponse.Status, _ code: APIErrorCode, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public static func invalid(_ message: String) -> APIError { APIError(.badRequest, .invalidRequest, message) }
    public static func notFound(_ message: String) -> APIError { APIError(.notFound, .notFound, message) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        APIResponse.json(APIErrorBody(success: false, message: message, errorCode: code), status: status)
    }
}

/// Turns every error a route throws (ours, Hummingbird's 404 and 413, a decoding
/// failure, anything unexpected) into the standard error body, so no request is
/// answered with plain text or a stack trace.
struct ErrorBodyMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return try error.response(from: request, context: context)
        } catch let error as any HTTPResponseError {
            let code: APIErrorCode = switch error.status {
            case .notFound: .notFound
            case .methodNotAllowed: .methodNotAllowed
            case .contentTooLarge: .payloadTooLarge
            case .unauthorized: .unauthorized
            case .unsupportedMediaType: .unsupportedMediaType
            case _ where error.status.code >= 500: .internalError
            default: .invalidRequest
            }
            let message = switch code {
            case .notFound: "no such resource: \(request.method.rawValue) \(request.uri.path.prefix(200))"
            case .payloadTooLarge: "the request body is larger than the endpoint accepts"
            case .internalError: "internal error"
            default: (error as? HTTPError)?.body ?? "the request is not valid"
            }
            return APIResponse.json(APIErrorBody(success: false, message: message, errorCode: code), status: error.status)
        } catch {
            context.logger.error("request failed", metadata: ["route": "\(context.endpointPath ?? "-")", "error": "\(error)"])
            return APIResponse.json(
                APIErrorBody(success: false, message: "internal error", errorCode: .internalError),
                status: .internalServerError)
        }
    }
}

/// Building JSON responses with the endpoint's encoder.
public enum APIResponse {
    /// `{"success": true, "data": ...}`.
    public struct Envelope<T: Encodable>: Encodable {
        public var success = true
        public var data: T
    }

    public static func ok(_ data: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        json(Envelope(data: data), status: status)
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status) -> Response {
        let data = (try? encoder.encode(value)) ?? Data(#"{"success":false,"message":"internal error","error_code":"INTERNAL_ERROR"}"#.utf8)
        return Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()
}

/// Reading a JSON request body, with the errors a client can act on.
enum RequestBodyReader {
    static func decode<T: Decodable>(_ type: T.Type, from request: Request, limit: Int, allowEmpty: Bool = false)
        async throws -> T {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: limit)
        } catch {
            throw APIError(.contentTooLarge, .payloadTooLarge, "the request body is larger than \(limit) bytes")
        }
        var bytes = Data(buffer.readableBytesView)
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }) {
            guard allowEmpty else { throw APIError.invalid("the request needs a JSON object body") }
            bytes = Data("{}".utf8)
        }
        if let type = request.headers[.contentType], !type.lowercased().hasPrefix("application/json") {
            throw APIError(.unsupportedMediaType, .unsupportedMediaType, "send the body as application/json")
        }
        // What two readers could understand differently (a name given twice, trailing commas,
        // a lone surrogate) is refused before Foundation's lenient decoder reads the body: a
        // proxy or validator in front of the endpoint must not see another request than it.
        do throws(StrictJSON.SyntaxError) {
            _ = try StrictJSON.parse(bytes)
        } catch {
            throw APIError.invalid("the body is not valid JSON: \(error)")
        }
        do {
            return try JSONDecoder().decode(T.self, from: bytes)
        } catch let DecodingError.keyNotFound(key, _) {
            throw APIError.invalid("the field '\(key.stringValue)' is required")
        } catch let DecodingError.typeMismatch(_, context) {
            throw APIError.invalid("the field '\(context.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type")
        } catch let DecodingError.valueNotFound(_, context) {
            throw APIError.invalid("the field '\(context.codingPath.map(\.stringValue).joined(separator: "."))' must not be null")
        } catch DecodingError.dataCorrupted {
            // Foundation's decoder calls valid JSON whose number an Int cannot hold (1e300, 1.5,
            // 10^23) "not valid JSON", without a field: the field is found here instead.
            guard let object = (try? JSONSerialization.jsonObject(with: bytes)) as? [String: Any] else {
                throw APIError.invalid("the body is not a valid JSON object")
            }
            let suspects = object.filter { _, value in
                guard let number = value as? NSNumber, !(value is Bool) else { return false }
                let double = number.doubleValue
                return double != double.rounded() || Swift.abs(double) >= 9.2e18
            }.keys.sorted()
            throw APIError.invalid(suspects.isEmpty
                ? "a value in the body does not fit its field"
                : "the field '\(suspects.joined(separator: "', '"))' is not a whole number in range")
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError.invalid("the body is not a valid JSON object")
        }
    }
}
