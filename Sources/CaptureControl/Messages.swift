public import CaptureCore
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

/// A request from a client: `{"command": ..., "commandId": ..., "params": {...}}`.
public struct ControlRequest: Sendable, Equatable {
    public var command: String
    /// Echoed in the response. A string (the SDK sends a UUID) or a number;
    /// `.null` when the client sent none.
    public var commandId: JSONValue
    public var params: [String: JSONValue]

    public init(command: String, commandId: JSONValue = .string(UUID().uuidString.lowercased()), params: [String: JSONValue] = [:]) {
        self.command = command
        self.commandId = commandId
        self.params = params
    }

    /// Parses one line (without its newline). On failure the error carries
    /// the commandId when one could be read, so the reply can still be matched.
    public static func parse(line: [UInt8]) -> Result<ControlRequest, ControlRequestError> {
        let prefix = ControlFraming.prefixBytes
        guard line.count >= prefix.count, line[0..<prefix.count].elementsEqual(prefix) else {
            return .failure(ControlRequestError(commandId: .null, error: CaptureError(
                .invalidRequest, "a message line must start with '\(ControlFraming.prefix)' followed by a JSON object")))
        }
        let value: JSONValue
        do throws(StrictJSON.SyntaxError) {
            // Strict RFC 8259 (no trailing commas, no name twice in an object): what the
            // daemon reads is what any other JSON reader would read.
            value = try StrictJSON.parse(line[prefix.count...])
        } catch {
            return .failure(ControlRequestError(commandId: .null, error: CaptureError(
                .invalidRequest, "the message is not valid JSON: \(error)")))
        }
        guard case .object(let object) = value else {
            return .failure(ControlRequestError(commandId: .null, error: CaptureError(
                .invalidRequest, "the message must be a JSON object, not \(value.typeName)")))
        }
        var commandId = JSONValue.null
        switch object["commandId"] {
        case nil, .null?: break
        case .string(let s)? where s.utf8.count <= 256: commandId = .string(s)
        case .integer(let i)?: commandId = .integer(i)
        case let other?:
            return .failure(ControlRequestError(commandId: .null, error: CaptureError(
                .invalidRequest, "commandId must be a string of at most 256 bytes or an integer, not \(other.typeName)")))
        }
        guard case .string(let command)? = object["command"], !command.isEmpty else {
            return .failure(ControlRequestError(commandId: commandId, error: CaptureError(
                .invalidRequest, "the message has no \"command\" string")))
        }
        var params: [String: JSONValue] = [:]
        switch object["params"] {
        case nil, .null?: break
        case .object(let p)?: params = p
        case let other?:
            return .failure(ControlRequestError(commandId: commandId, error: CaptureError(
                .invalidRequest, "params must be an object, not \(other.typeName)")))
        }
        return .success(ControlRequest(command: command, commandId: commandId, params: params))
    }

    /// The framed line for this request.
    public func encodedLine() -> [UInt8] {
        var object: [String: JSONValue] = ["command": .string(command), "commandId": commandId]
        if !params.isEmpty { object["params"] = .object(params) }
        return ControlFraming.frame((try? JSONCoding.encoder.encode(JSONValue.object(object))) ?? Data())
    }
}

/// A request that could not be parsed, with what to answer.
public struct ControlRequestError: Error, Sendable, Equatable {
    public var commandId: JSONValue
    public var error: CaptureError
}

/// The one reply to a request, matched by `commandId`:
///
///     {"type":"response","commandId":"…","status":"success","result":{…}}
///     {"type":"response","commandId":"…","status":"error","result":"<message>","code":"INVALID_REQUEST"}
///
/// The error form is the SDK's (`result` is the message) plus a stable `code`.
public enum ControlResponse: Sendable, Equatable {
    case success(commandId: JSONValue, result: JSONValue)
    case failure(commandId: JSONValue, error: CaptureError)

    public var commandId: JSONValue {
        switch self {
        case .success(let id, _), .failure(let id, _): id
        }
    }

    public var jsonValue: JSONValue {
        switch self {
        case .success(let id, let result):
            .object(["type": "response", "commandId": id, "status": "success", "result": result])
        case .failure(let id, let error):
            .object(["type": "response", "commandId": id, "status": "error",
                     "result": .string(error.message), "code": .string(error.code.rawValue)])
        }
    }

    public func encodedLine() -> [UInt8] {
        ControlFraming.frame((try? JSONCoding.encoder.encode(jsonValue)) ?? Data())
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
}
