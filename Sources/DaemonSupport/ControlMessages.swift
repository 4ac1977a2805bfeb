import Foundation

/// One request on the control socket: a JSON object on one line with a `"command"` string, e.g.
/// `{"command": "status"}` or `{"command": "events", "since": 120}`. The daemon defines the commands; this type
/// only carries the name and the whole object, to be decoded into the command's own arguments type.
public struct ControlRequest: Sendable {
    /// The `"command"` field.
    public let command: String
    /// The request line as received (UTF-8 JSON, newline excluded).
    public let json: Data

    /// Parses one request line. Throws a `ControlResponseLine` error body naming what is wrong.
    public init(line: Data) throws(ControlErrorBody) {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: line, options: [.fragmentsAllowed])
        } catch {
            throw ControlErrorBody(code: .badJSON, message: "the request is not JSON: send one JSON object per line, e.g. {\"command\": \"status\"}")
        }
        guard let dictionary = object as? [String: Any] else {
            throw ControlErrorBody(code: .badRequest, message: "the request is not a JSON object: send one object per line, e.g. {\"command\": \"status\"}")
        }
        guard let command = dictionary["command"] as? String, !command.isEmpty else {
            throw ControlErrorBody(code: .badRequest, message: "the request has no \"command\" string: add one, e.g. {\"command\": \"status\"}")
        }
        self.command = command
        json = line
    }

    /// Decodes the request object into the command's arguments type (unknown fields are ignored by `Decodable`).
    /// - Throws: a `ControlErrorBody` with `.badArguments` naming the field that did not fit; answer it with
    ///   `ControlResponseLine(error:)`.
    public func decode<Arguments: Decodable>(_ type: Arguments.Type) throws(ControlErrorBody) -> Arguments {
        do {
            return try JSONDecoder().decode(type, from: json)
        } catch let DecodingError.keyNotFound(key, _) {
            throw ControlErrorBody(code: .badArguments, message: "\(command): the field \"\(key.stringValue)\" is missing")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ControlErrorBody(code: .badArguments, message: "\(command): the field \"\(field)\" has the wrong type: \(context.debugDescription)")
        } catch let DecodingError.dataCorrupted(context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            guard !field.isEmpty else {
                // Foundation names no field for a number that does not fit (1.5 where a whole number goes).
                throw ControlErrorBody(code: .badArguments, message: "\(command): an argument does not fit its type (counts and amounts in fen are whole numbers; docs/control-api.md)")
            }
            throw ControlErrorBody(code: .badArguments, message: "\(command): the field \"\(field)\" is not valid: \(context.debugDescription)")
        } catch {
            throw ControlErrorBody(code: .badArguments, message: "\(command): the arguments do not fit: \(error)")
        }
    }
}

/// One line of an answer: a JSON value (an object, by convention), written followed by a newline.
public struct ControlResponseLine: Sendable, Equatable {
    /// The encoded JSON, without a newline (JSON encoders escape newlines inside strings).
    public let json: Data

    /// Encodes `value` (keys sorted, so answers are stable for tests and diffs; dates in ISO 8601). A value that cannot
    /// be encoded becomes an `internal` error line rather than a crash or a broken line.
    public init(_ value: some Encodable) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        do {
            self.init(json: try encoder.encode(value))
        } catch {
            self.init(error: ControlErrorBody(code: .internalError, message: "the answer could not be encoded as JSON: \(error); report this as a bug"))
        }
    }

    /// `{"error": {"code": ..., "message": ...}}`.
    public init(error: ControlErrorBody) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Two strings always encode.
        self.init(json: (try? encoder.encode(ControlErrorLine(error: error))) ?? Data(#"{"error":{"code":"internal","message":"encoding failed"}}"#.utf8))
    }

    private init(json: Data) { self.json = json }

    /// An error line.
    public static func error(_ code: ControlErrorCode, _ message: String) -> ControlResponseLine {
        ControlResponseLine(error: ControlErrorBody(code: code, message: message))
    }

    /// The error this line carries, if it is an error line.
    public var error: ControlErrorBody? { ControlErrorLine.decode(json)?.error }
}

/// A machine-readable error code on the control socket (`"error": {"code": ...}`). The daemon adds its own with
/// `extension ControlErrorCode { static let cardAbsent = ControlErrorCode(rawValue: "card-absent") }`.
public struct ControlErrorCode: RawRepresentable, Codable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
    public var description: String { rawValue }

    /// The line is not JSON (or not UTF-8).
    public static let badJSON = ControlErrorCode(rawValue: "bad-json")
    /// JSON, but not an object with a `"command"` string.
    public static let badRequest = ControlErrorCode(rawValue: "bad-request")
    /// The command's fields are missing or of the wrong type (`ControlRequest.decode`).
    public static let badArguments = ControlErrorCode(rawValue: "bad-arguments")
    /// No such command (answered by the daemon's handler).
    public static let unknownCommand = ControlErrorCode(rawValue: "unknown-command")
    /// The request line is longer than the server's limit; the connection is closed.
    public static let lineTooLong = ControlErrorCode(rawValue: "line-too-long")
    /// No request within the idle time; the connection is closed.
    public static let idleTimeout = ControlErrorCode(rawValue: "idle-timeout")
    /// Too many clients are connected; the connection is closed.
    public static let busy = ControlErrorCode(rawValue: "busy")
    /// The client did not read its answers and too many piled up; the connection is closed.
    public static let slowClient = ControlErrorCode(rawValue: "slow-client")
    /// A fault of the daemon.
    public static let internalError = ControlErrorCode(rawValue: "internal")
}

/// The body of an error line: what failed and (in `message`, one line) why and what to do.
public struct ControlErrorBody: Error, Codable, Hashable, Sendable, CustomStringConvertible {
    public var code: ControlErrorCode
    public var message: String
    public init(code: ControlErrorCode, message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "\(code.rawValue): \(message)" }
}

/// `{"error": {...}}`, for encoding and for clients that check a line for an error.
struct ControlErrorLine: Codable {
    var error: ControlErrorBody

    static func decode(_ json: Data) -> ControlErrorLine? { try? JSONDecoder().decode(ControlErrorLine.self, from: json) }
}
